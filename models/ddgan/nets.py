"""Networks of a denoising diffusion GAN (dissertation 004, section 6.3.2 and 6.4.7).

* 2-D data (the toy setting of 6.4.7): generator and discriminator are MLPs with 3 hidden layers of
  512 units and LeakyReLU(0.2); conditioning on ``x_t`` and ``t`` by concatenation with the input.
* Images: a small U-Net generator ``G(x_t, z, t) -> x_0`` in the style of DDPM / NCSN++ (ResNet
  blocks, Swish, skip connections rescaled by 1/sqrt(2), sinusoidal time embedding added in every
  block), whose group normalisations are *adaptive* (AdaGN, eq. 6.13): a mapping network turns z
  into w, and one linear layer per AdaGN turns w into the per-channel scale and shift. The
  discriminator ``D(x_{t-1}, x_t, t)`` is a ResNet on the channel-concatenated pair with LeakyReLU(0.2),
  the same time embedding, a minibatch standard-deviation layer, global sum pooling and a linear
  output (Table 6.7, scaled down).

Steps ``t`` are the integer steps 1..T of the state ``x_t`` the generator denoises (int64 (N,)).
Networks return logits (D) and x_0 (G, through tanh for images in [-1, 1]).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn
from torch.nn import functional as F

from pysampler.models.nets import mlp

__all__ = ["ToyGenerator", "ToyDiscriminator", "UNetGenerator", "ResNetDiscriminator", "AdaptiveGroupNorm",
           "timestep_embedding", "build_networks"]

_leaky = functools.partial(nn.LeakyReLU, 0.2)
_SKIP_SCALE = 1.0 / math.sqrt(2.0)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (Vaswani et al. 2017; DDPM) of integer steps t (N,) -> (N, dim) float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], 1)
    return F.pad(emb, (0, dim % 2))


def _time_input(t: torch.Tensor, n_steps: int, like: torch.Tensor) -> torch.Tensor:
    """t / T as one input column (N, 1) in like's dtype: the toy networks' concatenated step."""
    return (t.to(like.dtype) / n_steps)[:, None]


class ToyGenerator(nn.Module):
    """x_0 = MLP([x_t, z, t/T]) for 2-D data: (N, dim), (N, latent), (N,) -> (N, dim)."""

    def __init__(self, dim: int, latent_dim: int, n_steps: int, width: int = 512):
        super().__init__()
        self.dim, self.latent_dim, self.n_steps = dim, latent_dim, n_steps
        self.net = mlp(dim + latent_dim + 1, dim, hidden=width, depth=4, activation=_leaky)

    def forward(self, x_t: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x_t, z, _time_input(t, self.n_steps, x_t)], 1))


class ToyDiscriminator(nn.Module):
    """Logit D([x_{t-1}, x_t, t/T]) for 2-D data: (N, dim), (N, dim), (N,) -> (N,)."""

    def __init__(self, dim: int, n_steps: int, width: int = 512):
        super().__init__()
        self.n_steps = n_steps
        self.net = mlp(2 * dim + 1, 1, hidden=width, depth=4, activation=_leaky)

    def forward(self, x_prev: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x_prev, x_t, _time_input(t, self.n_steps, x_t)], 1)).squeeze(1)


def _groups(channels: int) -> int:
    """Group count of a group norm: 32 channels per group at most 8 groups, as many as divide."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class AdaptiveGroupNorm(nn.Module):
    """AdaGN (eq. 6.13): ``(1 + scale(w)) * GN(h) + shift(w)``, the per-channel affine map of a
    group norm produced from the mapped latent w (N, w_dim) by one linear layer; h (N, C, H, W)."""

    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels, affine=False)
        self.affine = nn.Linear(w_dim, 2 * channels)
        nn.init.zeros_(self.affine.weight)  # starts as a plain group norm
        nn.init.zeros_(self.affine.bias)

    def forward(self, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        scale, shift = self.affine(w)[:, :, None, None].chunk(2, 1)
        return (1 + scale) * self.norm(h) + shift


class _GenBlock(nn.Module):
    """BigGAN / DDPM residual block: AdaGN, Swish, 3x3 conv, + time embedding, AdaGN, Swish, 3x3 conv;
    the sum with the (1x1-projected) input rescaled by 1/sqrt(2)."""

    def __init__(self, c_in: int, c_out: int, t_dim: int, w_dim: int):
        super().__init__()
        self.norm1, self.norm2 = AdaptiveGroupNorm(c_in, w_dim), AdaptiveGroupNorm(c_out, w_dim)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.time = nn.Linear(t_dim, c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: torch.Tensor, temb: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.silu(self.norm1(h, w)))
        out = out + self.time(temb)[:, :, None, None]
        out = self.conv2(F.silu(self.norm2(out, w)))
        return (self.skip(h) + out) * _SKIP_SCALE


class UNetGenerator(nn.Module):
    """G(x_t, z, t) -> x_0 for images (N, C, H, W), H and W divisible by 2**(levels - 1).

    One residual block per resolution on the way down (channels ``width * mult``), a middle block,
    and one per resolution on the way up on the concatenation with the matching down features;
    stride-2 convolutions down, nearest-neighbour upsampling and a 3x3 convolution up. z (N, latent)
    enters only through the mapping network (``mapping_layers`` linear layers with LeakyReLU(0.2))
    and the AdaGN layers; t through a sinusoidal embedding of dimension ``4 * width`` and an MLP.
    """

    def __init__(self, shape: tuple[int, int, int], latent_dim: int, width: int = 32, mult: tuple[int, ...] = (1, 2, 2),
                 w_dim: int = 128, mapping_layers: int = 3):
        super().__init__()
        c, h, w = shape
        levels = len(mult)
        if h % 2 ** (levels - 1) or w % 2 ** (levels - 1):
            raise ValueError(f"image size {h}x{w} must be divisible by {2 ** (levels - 1)} for {levels} resolutions")
        self.shape, self.latent_dim, self.width = tuple(shape), latent_dim, width
        t_dim = 4 * width
        self.time = nn.Sequential(nn.Linear(t_dim, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.mapping = mlp(latent_dim, w_dim, hidden=w_dim, depth=mapping_layers, activation=_leaky)
        chans = [width * m for m in mult]
        self.conv_in = nn.Conv2d(c, chans[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        prev = chans[0]
        for i, ch in enumerate(chans):
            self.down.append(_GenBlock(prev, ch, t_dim, w_dim))
            prev = ch
            if i < levels - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.middle = _GenBlock(prev, prev, t_dim, w_dim)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(levels)):
            self.up.append(_GenBlock(prev + chans[i], chans[i], t_dim, w_dim))
            prev = chans[i]
            if i > 0:
                self.upsample.append(nn.Conv2d(chans[i], chans[i], 3, padding=1))
        self.norm_out = AdaptiveGroupNorm(prev, w_dim)
        self.conv_out = nn.Conv2d(prev, c, 3, padding=1)

    def forward(self, x_t: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time(timestep_embedding(t, 4 * self.width).to(x_t.dtype))
        w = self.mapping(z)
        h = self.conv_in(x_t)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, temb, w)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.middle(h, temb, w)
        for i, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], 1), temb, w)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return torch.tanh(self.conv_out(F.silu(self.norm_out(h, w))))


class _DiscBlock(nn.Module):
    """Residual block of the discriminator: LeakyReLU(0.2), 3x3 conv, + time embedding, LeakyReLU,
    3x3 conv, 2x average-pool down; the (1x1, pooled) skip; sum rescaled by 1/sqrt(2)."""

    def __init__(self, c_in: int, c_out: int, t_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.time = nn.Linear(t_dim, c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.leaky_relu(h, 0.2))
        out = out + self.time(temb)[:, :, None, None]
        out = F.avg_pool2d(self.conv2(F.leaky_relu(out, 0.2)), 2)
        return (F.avg_pool2d(self.skip(h), 2) + out) * _SKIP_SCALE


def minibatch_std(h: torch.Tensor, group: int = 4) -> torch.Tensor:
    """StyleGAN's minibatch standard-deviation layer: append, per group of ``group`` samples (the
    largest divisor of N up to it), the mean over features of their standard deviation as one channel."""
    n, c, hh, ww = h.shape
    g = next(k for k in range(min(group, n), 0, -1) if n % k == 0)
    std = h.view(g, n // g, c, hh, ww).var(0, unbiased=False).add(1e-8).sqrt().mean((1, 2, 3))  # (n // g,)
    return torch.cat([h, std.repeat(g)[:, None, None, None].expand(n, 1, hh, ww)], 1)


class ResNetDiscriminator(nn.Module):
    """Logit D(x_{t-1}, x_t, t) for images (N, C, H, W) each -> (N,): 1x1 conv on the concatenated
    pair, ``len(mult)`` down-sampling residual blocks, minibatch std, 3x3 conv, global sum pooling, linear."""

    def __init__(self, shape: tuple[int, int, int], width: int = 32, mult: tuple[int, ...] = (1, 2)):
        super().__init__()
        c, h, w = shape
        if h % 2 ** len(mult) or w % 2 ** len(mult):
            raise ValueError(f"image size {h}x{w} must be divisible by {2 ** len(mult)} for {len(mult)} down-samplings")
        self.width = width
        t_dim = 4 * width
        self.time = nn.Sequential(nn.Linear(t_dim, t_dim), nn.LeakyReLU(0.2), nn.Linear(t_dim, t_dim))
        self.conv_in = nn.Conv2d(2 * c, width, 1)
        blocks, prev = [], width
        for m in mult:
            blocks.append(_DiscBlock(prev, width * m, t_dim))
            prev = width * m
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = nn.Conv2d(prev + 1, prev, 3, padding=1)
        self.linear = nn.Linear(prev, 1)

    def forward(self, x_prev: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time(timestep_embedding(t, 4 * self.width).to(x_t.dtype))
        h = self.conv_in(torch.cat([x_prev, x_t], 1))
        for block in self.blocks:
            h = block(h, temb)
        h = F.leaky_relu(self.conv_out(minibatch_std(h)), 0.2)
        return self.linear(h.sum((2, 3))).squeeze(1)


def build_networks(shape: tuple[int, ...], latent_dim: int, n_steps: int, width: int) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator) for one sample's ``shape``: the toy MLPs for (dim,), the U-Net and the
    ResNet discriminator for (C, H, W) with H, W divisible by 4 (28x28: 28, 14, 7)."""
    if len(shape) == 1:
        return ToyGenerator(shape[0], latent_dim, n_steps, width), ToyDiscriminator(shape[0], n_steps, width)
    if len(shape) != 3:
        raise ValueError(f"a sample must be a vector (dim,) or an image (C, H, W); got shape {tuple(shape)}")
    return UNetGenerator(tuple(shape), latent_dim, width), ResNetDiscriminator(tuple(shape), width)
