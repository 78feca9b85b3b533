"""Networks for the trainers: MLPs for 2-D toy data, a DCGAN-style generator and a spectrally
normalised convolutional energy for 28×28 and 32×32 images.

The image networks follow DCGAN (Radford, Metz & Chintala, ICLR 2016): transposed convolutions
with stride 2 doubling the resolution, batch norm and ReLU in the generator, strided
convolutions and leaky ReLU in the energy. The energy's layers are spectrally normalised
(Miyato et al., ICLR 2018), as the GEBM experiments do for the critic (Arbel, Zhou & Gretton,
ICLR 2021, ../shared/seeds/001), which keeps E Lipschitz and the latent Langevin chains stable.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["mlp", "MLPEnergy", "DCGANGenerator", "ConvEnergy", "IMAGE_SIZES"]

#: image sizes the convolutional networks support: the start resolution that two or three
#: doublings take to it
IMAGE_SIZES = {28: (7, 2), 32: (4, 3)}


def mlp(in_dim: int, out_dim: int, hidden: int = 128, depth: int = 3, activation: type[nn.Module] = nn.SiLU) -> nn.Sequential:
    """An MLP in_dim -> hidden (×depth-1 hidden layers) -> out_dim; ``depth`` linear layers in all."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1; got {depth}")
    widths = [in_dim] + [hidden] * (depth - 1) + [out_dim]
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < depth - 1:
            layers.append(activation())
    return nn.Sequential(*layers)


class MLPEnergy(nn.Module):
    """E(x) = MLP(x) for x (N, dim) -> (N,): the toy-data energy."""

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3):
        super().__init__()
        self.net = mlp(dim, 1, hidden, depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def _check_size(size: int) -> tuple[int, int]:
    if size not in IMAGE_SIZES:
        raise ValueError(f"image size must be one of {sorted(IMAGE_SIZES)}; got {size}")
    return IMAGE_SIZES[size]


class DCGANGenerator(nn.Module):
    """z (N, latent_dim) -> images (N, channels, size, size) in [-1, 1] (tanh).

    A linear layer to ``width·2^(k-1)`` maps at the start resolution, then k transposed
    convolutions (kernel 4, stride 2) halving the width and doubling the resolution; batch norm
    and ReLU between them. width 64 at 32×32 is the DCGAN size (about 1.2M parameters with
    latent 128).
    """

    def __init__(self, latent_dim: int = 128, channels: int = 3, size: int = 32, width: int = 64):
        super().__init__()
        start, doublings = _check_size(size)
        self.latent_dim, self.start = latent_dim, start
        self.channels0 = c = width * 2 ** (doublings - 1)  # maps at the start resolution
        self.project = nn.Sequential(nn.Linear(latent_dim, c * start * start), nn.BatchNorm1d(c * start * start), nn.ReLU())
        layers: list[nn.Module] = []
        for i in range(doublings):
            last = i == doublings - 1
            out = channels if last else c // 2
            layers.append(nn.ConvTranspose2d(c, out, 4, stride=2, padding=1, bias=last))
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(out), nn.ReLU()]
            c = out
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z.flatten(1)).view(z.shape[0], self.channels0, self.start, self.start)
        return self.net(h)


class ConvEnergy(nn.Module):
    """images (N, channels, size, size) -> E (N,): a spectrally normalised DCGAN discriminator.

    Strided convolutions (kernel 4, stride 2) doubling the width as the resolution halves, leaky
    ReLU (0.2), then a linear layer to one value. ``spectral=False`` leaves the layers plain.
    """

    def __init__(self, channels: int = 3, size: int = 32, width: int = 64, spectral: bool = True):
        super().__init__()
        start, doublings = _check_size(size)
        norm = spectral_norm if spectral else (lambda m: m)
        layers: list[nn.Module] = []
        c_in, c = channels, width
        for _ in range(doublings):
            layers += [norm(nn.Conv2d(c_in, c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            c_in, c = c, c * 2
        self.features = nn.Sequential(*layers)
        self.head = norm(nn.Linear(c_in * start * start, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1)).squeeze(-1)
