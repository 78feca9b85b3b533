"""A denoising diffusion GAN (Xiao, Kreis & Vahdat, ICLR 2022; dissertation 004, chapter 6).

A T-step (T small, default 4) diffusion whose reverse steps are conditional GANs:

    p_θ(x_{t-1} | x_t) = ∫ p(z) q(x_{t-1} | x_t, x_0 = G_θ(x_t, z, t)) dz,   z ~ N(0, I)      (6.12)

The generator predicts x_0; x_{t-1} is drawn from the Gaussian posterior q(x_{t-1} | x_t, x_0)
(eq. 2.50) by ``ps.diffusion.posterior_sample``, the fused kernel, which carries the gradient back
to G. The discriminator D_φ(x_{t-1}, x_t, t) tells real pairs of the forward process
(``VPSchedule.q_sample_pair``) from generated ones, with the non-saturating losses (eq. 6.3, 6.5)

    L_D = E[softplus(-D(x_{t-1}, x_t, t))] + E[softplus(D(x'_{t-1}, x_t, t))] + (γ/2) E|∇_{x_{t-1}} D|²   (R1, 6.16)
    L_G = E[softplus(-D(x'_{t-1}, x_t, t))]

(softplus(-d) = -log sigmoid(d)). Samples use an exponential moving average of the generator.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

import pysampler as ps
from pysampler.diffusion import VPSchedule
from pysampler.models.ddgan.nets import build_networks

__all__ = ["DDGAN", "discriminator_loss", "generator_loss", "r1_penalty", "build_model"]


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss of the discriminator (eq. 6.3): E[-log σ(D_real)] + E[-log(1 - σ(D_fake))]."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating loss of the generator (eq. 6.5): E[-log σ(D(x'_{t-1}, x_t, t))]."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, x_real: torch.Tensor) -> torch.Tensor:
    """E|∇_x D(x)|² over real inputs x (N, ...) that require grad (Mescheder et al. 2018; eq. 6.16
    without its γ/2). Built with create_graph, so the discriminator trains through it."""
    (grad,) = torch.autograd.grad(real_logits.sum(), x_real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


class DDGAN(nn.Module):
    """Generator G(x_t, z, t) -> x_0, discriminator D(x_{t-1}, x_t, t) -> logit, the EMA copy of G,
    and the VP schedule of T steps (eq. 6.14-6.15).

    shape: one sample's shape, (dim,) or (C, H, W); latent_dim: of z.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, shape: tuple[int, ...], latent_dim: int,
                 n_steps: int, beta_min: float = 0.1, beta_max: float = 20.0):
        super().__init__()
        self.generator, self.discriminator = generator, discriminator
        self.ema = copy.deepcopy(generator).requires_grad_(False).eval()
        self.shape, self.latent_dim = tuple(shape), latent_dim
        self.schedule = VPSchedule(n_steps, beta_min, beta_max, dtype=torch.float32)

    @property
    def n_steps(self) -> int:
        return self.schedule.n_steps

    def to(self, *args, **kwargs) -> DDGAN:
        out = super().to(*args, **kwargs)
        device = next(self.parameters()).device
        out.schedule = self.schedule.to(device=device)
        return out

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        """ema ← decay·ema + (1 - decay)·G, parameter by parameter (buffers copied)."""
        torch._foreach_lerp_(list(self.ema.parameters()), list(self.generator.parameters()), 1.0 - decay)
        for e, b in zip(self.ema.buffers(), self.generator.buffers(), strict=True):
            e.copy_(b)

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor, rng: torch.Tensor,
                generator: nn.Module | None = None, backend: str = "auto") -> torch.Tensor:
        """One reverse step (Algorithm 1, steps 3-4): x'_{t-1} ~ q(x_{t-1} | x_t, x_0 = G(x_t, z, t)).

        x_t (N, *shape); t (N,) int64 in 1..T; z (N, latent); rng (2,) int64 (seed, offset) on the
        device, not advanced (the draw uses x_t.numel() counters). Differentiable in G's parameters.
        """
        g = self.generator if generator is None else generator
        return ps.diffusion.posterior_sample(self.schedule, g(x_t, z, t), x_t, t, rng=rng, backend=backend)

    def sample(self, n: int, seed: int = 0, *, ema: bool = True, keep_chain: bool = False, batch_size: int | None = None,
               backend: str = "auto", cuda_graph: bool | str = "auto") -> ps.diffusion.ReverseResult:
        """n samples by Algorithm 2 (``ps.diffusion.reverse_sample``) with the EMA generator (or the raw one)."""
        g = self.ema if ema else self.generator
        was_training = g.training
        g.eval()
        try:
            return ps.diffusion.reverse_sample(g, self.schedule, n, self.shape, self.latent_dim, seed, batch_size=batch_size,
                                               backend=backend, cuda_graph=cuda_graph, keep_chain=keep_chain)
        finally:
            g.train(was_training)


def build_model(shape: tuple[int, ...], latent_dim: int, n_steps: int, width: int, beta_min: float = 0.1,
                beta_max: float = 20.0) -> DDGAN:
    """A DDGAN with the networks for ``shape`` (:func:`pysampler.models.ddgan.nets.build_networks`)."""
    generator, discriminator = build_networks(shape, latent_dim, n_steps, width)
    return DDGAN(generator, discriminator, shape, latent_dim, n_steps, beta_min, beta_max)
