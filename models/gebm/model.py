"""The GEBM: a base generator B(z), z ~ N(0, I), an energy E(x) and a log-partition scalar c,
with the KALE losses that train them (Arbel, Zhou & Gretton, Generalized Energy-Based Models,
ICLR 2021; ../shared/seeds/001 and 002).

The model's density relative to the base Q = B#N(0, I) is exp(−E(x)) / Z, Z = E_Q[exp(−E)].
Energy and c maximise the KALE lower bound of the generalised log-likelihood

    F(P, Q; E + c) = 1 − E_P[E + c] − E_Q[exp(−E − c)]          (tight at c = log Z),

and the generator minimises the same F(P, Q_θ) as a function of θ (the "Training the base
measure" slide): ∇_θ F = E_z[exp(−E(B_θ(z)) − c) ∇_x E(B_θ(z)) ∇_θ B_θ(z)].
Samples come from the latent posterior π(z) ∝ N(z; 0, I) exp(−E(B(z))) (``ps.LatentTarget``).
"""

from __future__ import annotations

import torch
from torch import nn

import pysampler as ps
from pysampler.models.nets import IMAGE_SIZES, ConvEnergy, DCGANGenerator, MLPEnergy, mlp

__all__ = ["GEBM", "Critic", "build_networks", "energy_loss", "generator_loss", "gradient_penalty", "interpolate"]


class Critic(nn.Module):
    """The energy E and the log-partition scalar c, in one module so that one optimiser (and
    one DDP wrapper) trains both. forward(x) (N, *data) -> E(x) + c, (N,)."""

    def __init__(self, energy: nn.Module):
        super().__init__()
        self.energy = energy
        self.log_partition = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.energy(x) + self.log_partition


class GEBM(nn.Module):
    """generator: z (N, latent_dim) -> x (N, *data); critic: E and c (:class:`Critic`)."""

    def __init__(self, generator: nn.Module, energy: nn.Module, latent_dim: int):
        super().__init__()
        self.generator = generator
        self.critic = Critic(energy)
        self.latent_dim = latent_dim

    @property
    def energy(self) -> nn.Module:
        return self.critic.energy

    @property
    def log_partition(self) -> nn.Parameter:
        return self.critic.log_partition

    def latent_target(self, temperature: float = 1.0) -> ps.LatentTarget:
        """``ps.LatentTarget(generator, energy, temperature)``: the posterior π(z) ∝ N(z; 0, I) exp(−T·E(B(z)))."""
        return ps.LatentTarget(self.generator, self.energy, temperature)


class _FlatImages(nn.Module):
    """An MLP on flattened images: z -> tanh(MLP(z)) reshaped to (N, C, H, W) (generator), or x ->
    MLP(x.flatten) (energy). For image sizes the convolutional networks do not take (8×8 digits)."""

    def __init__(self, net: nn.Module, shape: tuple[int, ...] | None):
        super().__init__()
        self.net, self.shape = net, shape

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if self.shape is None:  # energy
            return self.net(t.flatten(1)).squeeze(-1)
        return torch.tanh(self.net(t)).view(t.shape[0], *self.shape)


def build_networks(data_shape: tuple[int, ...], latent_dim: int, width: int, spectral: bool = True) -> GEBM:
    """The default networks for data of shape ``data_shape`` (one sample):

    * (d,) vectors (toy data): MLP generator latent -> width -> width -> d, MLP energy d -> width -> width -> 1 (SiLU);
    * (C, 28, 28) / (C, 32, 32) images: :class:`DCGANGenerator` and the spectrally normalised :class:`ConvEnergy`
      (``width`` feature maps in the first layer);
    * other image sizes (8×8 digits): MLPs on the flattened pixels, the generator ending in tanh.
    """
    if len(data_shape) == 1:
        return GEBM(mlp(latent_dim, data_shape[0], width, 3), MLPEnergy(data_shape[0], width, 3), latent_dim)
    if len(data_shape) != 3:
        raise ValueError(f"data_shape must be (d,) or (C, H, W); got {data_shape}")
    c, h, w = data_shape
    if h == w and h in IMAGE_SIZES:
        return GEBM(DCGANGenerator(latent_dim, c, h, width), ConvEnergy(c, h, width, spectral), latent_dim)
    d = c * h * w
    generator = _FlatImages(mlp(latent_dim, d, 4 * width, 3), tuple(data_shape))
    energy = _FlatImages(mlp(d, 1, 4 * width, 3, nn.LeakyReLU), None)
    return GEBM(generator, energy, latent_dim)


def energy_loss(critic_data: torch.Tensor, critic_base: torch.Tensor) -> torch.Tensor:
    """−F(P, Q; E + c) = E_P[E + c] + E_Q[exp(−E − c)] − 1, minimised over the energy and c.

    critic_data: (n,) E(x) + c at data samples; critic_base: (m,) at base samples B(z)."""
    return critic_data.mean() + torch.exp(-critic_base).mean() - 1.0


def generator_loss(critic_base: torch.Tensor) -> torch.Tensor:
    """The part of F(P, Q_θ; E + c) that depends on θ: −E_z[exp(−E(B_θ(z)) − c)] (c held fixed).

    critic_base: (m,) E(B_θ(z)) + c with gradients flowing into the generator. Its gradient is the
    slides' ∇_θ K(θ) = E_z[exp(−E − c) ∇_x E ∇_θ B_θ(z)] (with c = log Z at the optimum), so
    descending it moves the base towards the data the energy favours."""
    return -torch.exp(-critic_base).mean()


def gradient_penalty(energy_at: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """E[|∇_x E(x̂)|²] over points x̂ (N, *data) at which ``energy_at`` (N,) was computed (with
    ``points.requires_grad``). Keeps the energy smooth: without it the KALE bound is unbounded
    above wherever data and base do not overlap (E → −∞ on the data)."""
    (grad,) = torch.autograd.grad(energy_at.sum(), points, create_graph=True)
    return grad.flatten(1).square().sum(1).mean()


def interpolate(data: torch.Tensor, base: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random points on the segments between paired data and base samples (N, *data), as in WGAN-GP."""
    t = torch.rand(data.shape[0], *([1] * (data.ndim - 1)), generator=generator).to(data)
    return (t * data + (1.0 - t) * base).detach()

