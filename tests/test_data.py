"""Trainer data (pysampler.models.data): toy sets, the bundled image sets, user datasets on disk
(made here by the tests: an image folder, .npz / .npy arrays, CIFAR-10 python batches)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from pysampler.models import data


def test_gaussians25_is_what_it_says():
    x = data.toy("gaussians25", 50_000, torch.Generator().manual_seed(0))
    modes = data.gaussians25_modes()
    assert x.shape == (50_000, 2) and x.dtype == torch.float32 and modes.shape == (25, 2)
    nearest = torch.cdist(x, modes).argmin(1)
    offsets = x - modes[nearest]
    counts = torch.bincount(nearest, minlength=25).double()
    # equal weights: each count ~ Binomial(n, 1/25), sd ≈ 44; std 0.1 per coordinate
    assert float((counts - 2000).abs().max()) < 5 * (50_000 * (1 / 25) * (24 / 25)) ** 0.5
    assert float(offsets.std(0).sub(data.GAUSSIANS25_STD).abs().max()) < 0.005


@pytest.mark.parametrize("name", data.TOY_SETS)
def test_toy_sets_are_seeded_and_bounded(name):
    a = data.toy(name, 4000, torch.Generator().manual_seed(3))
    b = data.toy(name, 4000, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (4000, 2)
    assert float(a.abs().max()) < 5.0 and float(a.std()) > 1.0


def test_rings_and_checkerboard_geometry():
    g = torch.Generator().manual_seed(1)
    radius = data.toy("rings", 20_000, g).norm(dim=1)
    assert float((radius - radius.round()).abs().max()) < 0.5  # near the circles of radius 1..4
    counts = torch.bincount(radius.round().long().clamp(1, 4), minlength=5)[1:]
    assert float(counts.min()) > 0.2 * 20_000
    x = data.toy("checkerboard", 20_000, g)
    colour = (torch.floor((x[:, 0] + 4) / 2) + torch.floor((x[:, 1] + 4) / 2)) % 2
    assert bool((colour == 0).all())  # only one colour's squares


def test_unknown_toy_set_and_bad_n():
    with pytest.raises(ValueError, match="unknown toy set 'moons'; expected one of gaussians25"):
        data.toy("moons", 10)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        data.toy("rings", 0)


def test_bundled_digits_and_mnist():
    d = data.digits()
    assert d.images.shape == (1797, 1, 8, 8) and d.shape == (1, 8, 8) and len(d) == 1797
    assert float(d.images.min()) == -1.0 and float(d.images.max()) == 1.0
    assert d.labels.shape == (1797,) and set(d.labels.tolist()) == set(range(10))
    m = data.mnist()
    assert m.images.shape == (5000, 1, 28, 28) and m.images.dtype == torch.float32
    assert float(m.images.min()) == -1.0 and float(m.images.max()) == 1.0
    assert set(m.labels.tolist()) == set(range(10)) and "mnist_5k" in m.source


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(3, 6, 5, 3), dtype=np.uint8)
    (tmp_path / "sub").mkdir()
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(tmp_path / ("sub" if i == 2 else ".") / f"img{i}.png")
    d = data.from_path(tmp_path)
    assert d.images.shape == (3, 3, 6, 5) and d.labels is None
    expected = torch.from_numpy(pixels.transpose(0, 3, 1, 2).astype(np.float32)) / 127.5 - 1
    torch.testing.assert_close(d.images, expected)  # sorted paths: img0, img1, sub/img2
    # grey images stay one channel
    grey = tmp_path / "grey"
    grey.mkdir()
    for i in range(2):
        Image.fromarray(pixels[i, :, :, 0]).save(grey / f"g{i}.png")
    assert data.from_path(grey).images.shape == (2, 1, 6, 5)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(grey / "odd.png")
    with pytest.raises(ValueError, match="images of different sizes"):
        data.from_path(grey)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no images"):
        data.from_path(empty)


def test_array_files(tmp_path):
    x = np.random.default_rng(1).random((4, 8, 8, 3)).astype(np.float32)  # NHWC in [0, 1]
    np.savez(tmp_path / "set.npz", images=x, labels=np.arange(4))
    d = data.from_path(tmp_path / "set.npz")
    assert d.images.shape == (4, 3, 8, 8) and d.labels.tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(d.images, torch.from_numpy(x.transpose(0, 3, 1, 2)) * 2 - 1)
    np.save(tmp_path / "signed.npy", 2 * x[:, :, :, 0] - 1)  # (N, H, W) in [-1, 1] stays as is
    torch.testing.assert_close(data.from_path(tmp_path / "signed.npy").images[:, 0], torch.from_numpy(2 * x[:, :, :, 0] - 1))
    np.save(tmp_path / "bad.npy", np.full((2, 4, 4), 7.0, np.float32))
    with pytest.raises(ValueError, match=r"floating pixels must lie in \[0, 1\] or \[-1, 1\]; got \[7, 7\]"):
        data.from_path(tmp_path / "bad.npy")
    np.save(tmp_path / "shape.npy", np.zeros((2, 5, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        data.from_path(tmp_path / "shape.npy")
    np.savez(tmp_path / "labels.npz", x=x, y=np.arange(3))
    with pytest.raises(ValueError, match="3 labels for 4 images"):
        data.from_path(tmp_path / "labels.npz")
    with pytest.raises(FileNotFoundError, match="no dataset at"):
        data.from_path(tmp_path / "missing")


def test_cifar10_batches(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    raw = []
    for i in (1, 2):
        pixels = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
        raw.append(pixels)
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": pixels, b"labels": [i, i, i]}, f)
    d = data.from_path(folder)
    assert d.images.shape == (6, 3, 32, 32) and d.labels.tolist() == [1, 1, 1, 2, 2, 2]
    expected = torch.from_numpy(np.concatenate(raw).reshape(-1, 3, 32, 32).astype(np.float32)) / 127.5 - 1
    torch.testing.assert_close(d.images, expected)
    assert data.from_path(folder / "data_batch_2").images.shape == (3, 3, 32, 32)
