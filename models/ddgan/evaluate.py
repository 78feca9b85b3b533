"""Sampling a trained DDGAN (Algorithm 2, through ``ps.diffusion.reverse_sample``) and its report.

The report compares samples of the EMA generator with the held-out data by the metrics every
trainer shares (:mod:`pysampler.models.evaluation`); for StackedMNIST it also measures real stacks of
held-out digits the same way, the floor that a finite sample's mode histogram sets.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from pysampler.models import data as datasets
from pysampler.models.ddgan.model import DDGAN
from pysampler.models.evaluation import Reference, classifier_for, classifier_report, plot_chain, plot_samples, sample_metrics

__all__ = ["evaluate", "CHAIN_SAMPLES"]

#: samples whose denoising chain x_T -> x_0 is drawn in chain.png (images)
CHAIN_SAMPLES = 8


def evaluate(model: DDGAN, dataset: datasets.Dataset, n: int = 2000, seed: int = 0, out: str | Path | None = None,
             name: str = "ddgan", backend: str = "auto", reference: Reference | None = None) -> dict[str, Any]:
    """{"metrics": ..., "sampling": {...}} for n samples of ``model``'s EMA generator (and "real_data" for
    StackedMNIST, "classifier" for images); with ``out``, the pictures NAME.png (2-D: over the
    held-out data) and, for images, NAME_chain.png. ``reference``: ``Reference.of(dataset, classifier)``
    when several models are evaluated against the same data (prepared once)."""
    start = time.perf_counter()
    result = model.sample(n, seed, backend=backend)
    sample_seconds = time.perf_counter() - start
    if reference is None:
        reference = Reference.of(dataset, classifier_for(dataset))
    classifier = reference.classifier
    report: dict[str, Any] = {
        "metrics": sample_metrics(result.x, dataset, seed=seed, reference=reference),
        "sampling": {"n": n, "T": model.n_steps, "seconds": sample_seconds, "cuda_graph": result.cuda_graph,
                     "cuda_graph_reason": result.cuda_graph_reason},
    }
    if classifier is not None:
        report["classifier"] = classifier_report(classifier)
    if isinstance(dataset, datasets.StackedDataset):
        real = dataset.held_out_sample(n, torch.Generator().manual_seed(seed))
        report["real_data"] = sample_metrics(real, dataset, reference=reference)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        title = f"{name.upper()} (T = {model.n_steps})"
        if dataset.kind == "toy":
            plot_samples(result.x, out / f"{name}.png", title, dataset.held_out)
        else:
            plot_samples(result.x, out / f"{name}.png", title)
            chain = model.sample(CHAIN_SAMPLES, seed, keep_chain=True, backend=backend).chain
            plot_chain(chain, out / f"{name}_chain.png", f"{title}: x_T → x_0, one sample per row")
    return report
