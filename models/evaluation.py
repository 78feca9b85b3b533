"""What the trainers report, in one place: samples compared with the held-out data by the same
metrics for every model (GEBM, DDGAN), and the pictures.

* 2-D data: MMD² with its permutation p-value, the KALE divergence, and for gaussians25 the modes
  covered and the fraction of high-quality samples (within 3σ of a mode);
* images: the same in the feature space of a classifier trained on the data set
  (:mod:`pysampler.models.classifier`), plus the Fréchet distance there;
* StackedMNIST: the modes covered (of 1,000) and the KL divergence of the mode histogram to the
  uniform one, each channel classified by the MNIST classifier (``pysampler.metrics.stacked_modes``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pysampler import metrics
from pysampler.models import data as datasets

__all__ = ["Reference", "classifier_for", "classifier_report", "sample_metrics", "plot_samples", "plot_chain", "pyplot"]


def classifier_for(dataset: datasets.Dataset):
    """The cached feature classifier of an image data set (for StackedMNIST: of its single digits)."""
    from pysampler.models.classifier import trained_classifier

    if dataset.kind != "image":
        return None
    digits = dataset.digits if isinstance(dataset, datasets.StackedDataset) else dataset
    return trained_classifier(digits.train, digits.train_labels, digits.held_out, digits.held_out_labels)


def classifier_report(classifier) -> dict[str, Any]:
    """What metrics.json says of the classifier behind the image metrics."""
    return {"test_accuracy": classifier.test_accuracy, "cached": classifier.cached,
            "feature_dim": classifier.network.head.in_features, "path": str(classifier.path)}


@dataclass
class Reference:
    """The held-out data as the metrics see it, prepared once for several samples: ``points``
    (n, d) (the classifier's features for images), ``bandwidth`` (their median distance)."""

    points: torch.Tensor
    bandwidth: float
    classifier: Any = None

    @classmethod
    def of(cls, dataset: datasets.Dataset, classifier=None) -> Reference:
        held = dataset.held_out
        if dataset.kind == "image":
            if classifier is None:
                raise ValueError("image metrics need the feature classifier (see pysampler.models.classifier)")
            if isinstance(dataset, datasets.StackedDataset):  # mode counts only: no feature space
                return cls(held, float("nan"), classifier)
            held = classifier.features(held)
        half = held.shape[0] // 2
        return cls(held, metrics.median_bandwidth(held[:half], held[half:]), classifier)


def sample_metrics(x: torch.Tensor, dataset: datasets.Dataset, classifier=None, seed: int = 0,
                   reference: Reference | None = None) -> dict[str, float]:
    """Metrics of samples x (n, *data) against the held-out data: mmd2 and mmd_pvalue (Gaussian kernel,
    bandwidth the held-out data's median distance, 200 permutations), kale (KALE over an RKHS ball,
    ``metrics.kale_divergence``); for gaussians25 modes_covered (of 25) and high_quality_frac (within
    3σ of a mode); for images all of these in the classifier's feature space, plus fd_classifier; for
    StackedMNIST modes_covered (of 1,000) and kl_modes only.
    ``reference``: :meth:`Reference.of` (dataset, classifier), when several samples share it."""
    ref = reference if reference is not None else Reference.of(dataset, classifier)
    x = x.detach().cpu().float()
    if isinstance(dataset, datasets.StackedDataset):
        hist = metrics.stacked_modes(x, ref.classifier.predict)
        return {"modes_covered": hist.n_covered, "kl_modes": hist.kl}
    if dataset.kind == "image":
        x = ref.classifier.features(x)
    test = metrics.mmd_test(x, ref.points, bandwidth=ref.bandwidth, generator=torch.Generator().manual_seed(seed))
    out = {"mmd2": test.mmd2, "mmd_pvalue": test.p_value,
           "kale": metrics.kale_divergence(ref.points, x, generator=torch.Generator().manual_seed(seed))}
    if dataset.name == "gaussians25":
        cov = metrics.mode_coverage(x, datasets.gaussians25_modes(), datasets.GAUSSIANS25_STD, radius=3.0)
        out.update(modes_covered=cov.n_covered, high_quality_frac=cov.fraction_near)
    if dataset.kind == "image":
        out["fd_classifier"] = metrics.frechet_distance(x, ref.points)
    return out


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(images: torch.Tensor, columns: int) -> torch.Tensor:
    """Images (k, C, H, W) in [-1, 1] tiled row-major into one (C, rows·(H+1), columns·(W+1)) picture in [0, 1]."""
    k, c, h, w = images.shape
    rows = math.ceil(k / columns)
    grid = torch.ones(c, rows * (h + 1), columns * (w + 1))
    for i in range(k):
        r, q = divmod(i, columns)
        grid[:, r * (h + 1): r * (h + 1) + h, q * (w + 1): q * (w + 1) + w] = (images[i] + 1) / 2
    return grid


def _show(ax, grid: torch.Tensor) -> None:
    ax.imshow(grid.permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy(), cmap="gray" if grid.shape[0] == 1 else None)
    ax.axis("off")


def plot_samples(x: torch.Tensor, path: str | Path, title: str, reference: torch.Tensor | None = None) -> None:
    """2-D samples (n, 2): a scatter (over the ``reference`` data in grey, when given);
    images (n, C, H, W): a grid of the first 64."""
    plt = pyplot()
    x = x.detach().cpu().float()
    if x.ndim == 2:
        fig, ax = plt.subplots(figsize=(5, 5))
        if reference is not None:
            ax.scatter(reference[:, 0], reference[:, 1], s=2, c="0.8", label="held-out data", rasterized=True)
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5, label="samples", rasterized=True)
        ax.set(xlim=(-6, 6), ylim=(-6, 6), aspect="equal", title=title)
        ax.legend(loc="upper right", markerscale=4, fontsize=8)
    else:
        k = min(64, x.shape[0])
        fig, ax = plt.subplots(figsize=(6, 6))
        _show(ax, _grid(x[:k], math.ceil(math.sqrt(k))))
        ax.set(title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_chain(chain: torch.Tensor, path: str | Path, title: str) -> None:
    """A denoising chain (T + 1, k, C, H, W), x_T first: one row per sample, one column per step."""
    plt = pyplot()
    chain = chain.detach().cpu().float()
    steps, k = chain.shape[:2]
    rows = chain.transpose(0, 1).reshape(steps * k, *chain.shape[2:]).clamp(-1, 1)
    fig, ax = plt.subplots(figsize=(1.2 * steps + 0.5, 1.2 * k + 0.6))
    _show(ax, _grid(rows, steps))
    ax.set(title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
