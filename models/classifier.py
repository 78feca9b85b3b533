"""A small classifier whose penultimate layer gives the feature space of the image metrics
(Fréchet distance, MMD, KALE between generated and held-out images): the FID recipe of Heusel
et al. (2017) with a network trained on the data set itself, since no pretrained weights may be
downloaded. Trained once per data set and cached; its held-out accuracy is reported with the
metrics, so a reader can judge the feature space.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pysampler import checkpoint
from pysampler.models.nets import IMAGE_SIZES

__all__ = ["FeatureClassifier", "TrainedClassifier", "trained_classifier", "cache_dir"]

ARCHITECTURE_VERSION = 1  # bump when the network or its training changes: old cache entries are then ignored


class FeatureClassifier(nn.Module):
    """images (N, C, H, W) -> logits (N, n_classes); ``features`` gives the (N, feature_dim) layer before.

    28×28 / 32×32: two 3×3 conv + ReLU + 2×2 max-pool blocks (32, 64 maps), then a linear layer to
    the features; other sizes: an MLP on the flattened pixels."""

    def __init__(self, shape: tuple[int, int, int], n_classes: int, feature_dim: int = 64):
        super().__init__()
        c, h, w = shape
        if h == w and h in IMAGE_SIZES:
            self.body = nn.Sequential(
                nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(64 * (h // 4) * (w // 4), feature_dim), nn.ReLU(),
            )
        else:
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 256), nn.ReLU(), nn.Linear(256, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@dataclass
class TrainedClassifier:
    """network (eval mode, CPU); test_accuracy on the held-out images; path of the cache entry; cached: loaded, not trained."""

    network: FeatureClassifier
    test_accuracy: float
    path: Path
    cached: bool

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
        """(N, feature_dim) features of images (N, C, H, W) in [-1, 1]."""
        return torch.cat([self.network.features(b.cpu().float()) for b in images.split(batch)])

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
        """(N,) predicted labels of images (N, C, H, W) in [-1, 1]."""
        return torch.cat([self.network(b.cpu().float()).argmax(1) for b in images.split(batch)])


def cache_dir() -> Path:
    """$PYSAMPLER_CACHE, else $XDG_CACHE_HOME/pysampler, else ~/.cache/pysampler."""
    if os.environ.get("PYSAMPLER_CACHE"):
        return Path(os.environ["PYSAMPLER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pysampler"


def _fingerprint(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256(f"v{ARCHITECTURE_VERSION}".encode())
    for t in tensors:
        h.update(str((tuple(t.shape), t.dtype)).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def _accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    predicted = torch.cat([net(b).argmax(1) for b in images.split(500)])
    return float((predicted == labels).double().mean())


def trained_classifier(
    train_images: torch.Tensor, train_labels: torch.Tensor, test_images: torch.Tensor, test_labels: torch.Tensor,
    epochs: int = 8, seed: int = 0, directory: str | Path | None = None,
) -> TrainedClassifier:
    """The classifier for these images: loaded from the cache when the same data (by content hash)
    trained one before, else trained (Adam 1e-3, batch 128, ``epochs`` epochs) and cached atomically."""
    if train_labels is None or test_labels is None:
        raise ValueError("the classifier features need labelled images; this data set has no labels")
    key = _fingerprint(train_images, train_labels, test_images, test_labels) + f"-e{epochs}-s{seed}"
    path = Path(directory or cache_dir()) / "classifiers" / f"{key}.pt"
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FeatureClassifier(tuple(train_images.shape[1:]), n_classes)
    if path.is_file():
        saved = checkpoint.load(path)
        net.load_state_dict(saved["network"])
        return TrainedClassifier(net.eval(), float(saved["test_accuracy"]), path, True)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(train_images), generator=g).split(128):
            loss = nn.functional.cross_entropy(net(train_images[idx]), train_labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    accuracy = _accuracy(net, test_images, test_labels)
    checkpoint.save({"network": net.state_dict(), "test_accuracy": accuracy}, path)
    return TrainedClassifier(net, accuracy, path, False)
