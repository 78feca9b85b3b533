"""The trainers' networks (pysampler.models.nets): shapes, spectral normalisation, bad sizes."""

from __future__ import annotations

import pytest
import torch

from pysampler.models.nets import ConvEnergy, DCGANGenerator, MLPEnergy, mlp


@pytest.mark.parametrize(("size", "channels"), [(32, 3), (28, 1)])
def test_image_networks_shapes(size, channels):
    gen = DCGANGenerator(latent_dim=16, channels=channels, size=size, width=8)
    energy = ConvEnergy(channels=channels, size=size, width=8)
    x = gen(torch.randn(5, 16))
    assert x.shape == (5, channels, size, size)
    assert bool((x.abs() <= 1).all())  # tanh output
    e = energy(x)
    assert e.shape == (5,)
    # the energy's input gradient exists (what the latent samplers differentiate)
    z = torch.randn(5, 16, requires_grad=True)
    (g,) = torch.autograd.grad(energy(gen(z)).sum(), z)
    assert g.shape == z.shape and bool(torch.isfinite(g).all())


def test_conv_energy_is_spectrally_normalised():
    energy = ConvEnergy(channels=1, size=28, width=8)
    layers = [m for m in energy.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 3
    for _ in range(100):  # one power iteration per training-mode forward
        energy(torch.randn(2, 1, 28, 28))
    energy.eval()
    with torch.no_grad():
        for layer in layers:  # .weight is recomputed from the parametrization on each access
            sigma = torch.linalg.matrix_norm(layer.weight.flatten(1), ord=2)
            assert float(sigma) == pytest.approx(1.0, rel=0.01)
    plain = ConvEnergy(channels=1, size=28, width=8, spectral=False)
    assert not any("parametrizations" in name for name, _ in plain.named_modules())


def test_mlps_and_bad_sizes():
    assert MLPEnergy(2, hidden=16)(torch.randn(7, 2)).shape == (7,)
    assert len([m for m in mlp(2, 3, depth=4) if isinstance(m, torch.nn.Linear)]) == 4
    with pytest.raises(ValueError, match="image size must be one of \\[28, 32\\]; got 64"):
        DCGANGenerator(size=64)
    with pytest.raises(ValueError, match="depth must be >= 1"):
        mlp(2, 1, depth=0)
