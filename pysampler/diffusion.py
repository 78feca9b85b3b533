r"""Discrete diffusion (DDPM / denoising diffusion GAN): schedule, forward noising, posterior sampling.

Forward process (dissertation 004, eq. 2.44-2.46; Ho et al. 2020)::

    q(x_t | x_{t-1}) = N(x_t; sqrt(1 - beta_t) x_{t-1}, beta_t I)                      (2.44)
    q(x_t | x_0)     = N(x_t; sqrt(abar_t) x_0, (1 - abar_t) I),  abar_t = prod_{s<=t} alpha_s,
                       alpha_t = 1 - beta_t                                               (2.46)

Posterior of one reverse step given the clean sample (eq. 2.49-2.51)::

    q(x_{t-1} | x_t, x_0) = N(x_{t-1}; c0_t x_0 + ct_t x_t, btilde_t I)                   (2.50)
    c0_t     = sqrt(abar_{t-1}) beta_t / (1 - abar_t)
    ct_t     = sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t)
    btilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)                                     (2.51)

with ``abar_0 = 1``, so at ``t = 1`` the posterior is the point mass at ``x_0`` (``c0 = 1``,
``ct = 0``, ``btilde = 0``).

Schedule: the discretised variance-preserving SDE used by denoising diffusion GANs (eq. 6.14-6.15;
Song et al. 2021), with normalised time ``t' = t / T``::

    sigma^2(t') = 1 - exp(-beta_min t' - 0.5 (beta_max - beta_min) t'^2)                  (6.14)
    beta_t      = 1 - exp(-beta_min / T - 0.5 (beta_max - beta_min) (2t - 1) / T^2)       (6.15)

so that ``abar_t = 1 - sigma^2(t / T)`` in closed form, whatever the number of steps ``T``.

Sampling a reverse step of a denoising diffusion GAN (eq. 6.12, Algorithm 2) is
``x_{t-1} ~ q(x_{t-1} | x_t, x_0 = G(x_t, z, t))``: :func:`posterior_sample` is that draw
(``sample_posterior`` in the DDGAN code).

Noise comes from the one Philox stream (:mod:`pysampler.rng`): a draw for ``x`` of shape
``(N, *event)`` at ``offset`` uses counters ``offset .. offset + x.numel() - 1`` in row-major order,
so row ``i`` of the batch uses ``offset + i * prod(event) ..``. Callers advance their offset by
``x.numel()`` per call. The elementwise cores :func:`q_sample_reference` and
:func:`posterior_sample_reference` are what the Triton / C++ / CUDA kernels are tested against.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import graphs
from . import rng as ps_rng
from .backends import resolve
from .ops import compute_dtype as _compute_dtype
from .ops import posterior_sample_reference, q_sample_reference
from .samplers.base import advance

__all__ = [
    "VPSchedule",
    "ReverseResult",
    "reverse_sample",
    "counters_per_batch",
    "posterior_sample",
    "posterior_sample_reference",
    "q_sample_reference",
]

class VPSchedule:
    """Discretised VP-SDE noise schedule with ``T = n_steps`` steps (eq. 6.14-6.15).

    All attributes are ``(T,)`` tensors with step ``t = 1..T`` at index ``t - 1``; they are
    computed in float64 and then cast to ``dtype`` / moved to ``device``.

    Attributes
    ----------
    betas : beta_t (eq. 6.15).
    alphas : alpha_t = 1 - beta_t.
    alphas_cumprod : abar_t = 1 - sigma^2(t / T) (closed form of prod_{s<=t} alpha_s).
    alphas_cumprod_prev : abar_{t-1}, with abar_0 = 1.
    sqrt_alphas, sqrt_betas : coefficients of one forward step q(x_t | x_{t-1}) (eq. 2.44).
    sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod : coefficients of q(x_t | x_0).
    sqrt_alphas_cumprod_prev, sqrt_one_minus_alphas_cumprod_prev : those of q(x_{t-1} | x_0) (1 and 0 at t = 1).
    posterior_mean_coef_x0, posterior_mean_coef_xt, posterior_variance, posterior_std :
        coefficients of q(x_{t-1} | x_t, x_0) (eq. 2.51); the variance is exactly 0 at t = 1.
    """

    def __init__(
        self,
        n_steps: int,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps must be an int >= 1; got {n_steps!r}")
        beta_min = float(beta_min)
        beta_max = float(beta_max)
        if not (math.isfinite(beta_min) and beta_min > 0.0):
            raise ValueError(f"beta_min must be a finite number > 0; got {beta_min}")
        if not (math.isfinite(beta_max) and beta_max >= beta_min):
            raise ValueError(f"beta_max must be finite and >= beta_min ({beta_min}); got {beta_max}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating torch.dtype; got {dtype!r}")
        self._n_steps = n_steps
        self.beta_min = beta_min
        self.beta_max = beta_max
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")

        T = n_steps
        t = torch.arange(1, T + 1, dtype=torch.float64)
        slope = beta_max - beta_min
        # Exponents of eq. 6.15 (per-step) and eq. 6.14 (cumulative). At t = 1 both are the same
        # floating-point expression, so beta_1 == 1 - abar_1 bit for bit and the posterior mean
        # coefficient of x_0 at t = 1 is exactly 1.
        exp_step = beta_min * (1.0 / T) + 0.5 * slope * ((2.0 * t - 1.0) / (T * T))
        exp_cum = beta_min * (t / T) + 0.5 * slope * ((t * t) / (T * T))
        betas = -torch.expm1(-exp_step)
        one_minus_ab = -torch.expm1(-exp_cum)  # sigma^2(t/T), accurate for small t
        alphas = torch.exp(-exp_step)
        ab = torch.exp(-exp_cum)
        ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        one_minus_ab_prev = torch.cat([torch.zeros(1, dtype=torch.float64), one_minus_ab[:-1]])

        var = betas * one_minus_ab_prev / one_minus_ab
        values = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": ab,
            "alphas_cumprod_prev": ab_prev,
            "sqrt_alphas": torch.sqrt(alphas),
            "sqrt_betas": torch.sqrt(betas),
            "sqrt_alphas_cumprod": torch.sqrt(ab),
            "sqrt_one_minus_alphas_cumprod": torch.sqrt(one_minus_ab),
            "sqrt_alphas_cumprod_prev": torch.sqrt(ab_prev),
            "sqrt_one_minus_alphas_cumprod_prev": torch.sqrt(one_minus_ab_prev),
            "posterior_mean_coef_x0": torch.sqrt(ab_prev) * betas / one_minus_ab,
            "posterior_mean_coef_xt": torch.sqrt(alphas) * one_minus_ab_prev / one_minus_ab,
            "posterior_variance": var,
            "posterior_std": torch.sqrt(var),
        }
        for name, value in values.items():
            setattr(self, name, value.to(device=self.device, dtype=dtype))

    @property
    def n_steps(self) -> int:
        """Number of diffusion steps ``T``."""
        return self._n_steps

    def __repr__(self) -> str:
        return (
            f"VPSchedule(n_steps={self._n_steps}, beta_min={self.beta_min}, beta_max={self.beta_max}, "
            f"dtype={self.dtype}, device={self.device})"
        )

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> VPSchedule:
        """A new schedule on ``device`` with ``dtype`` (recomputed in float64, then cast)."""
        return VPSchedule(
            self._n_steps,
            self.beta_min,
            self.beta_max,
            dtype=self.dtype if dtype is None else dtype,
            device=self.device if device is None else device,
        )

    def q_sample(
        self,
        x0: torch.Tensor,
        t: torch.Tensor | int,
        noise: torch.Tensor | None = None,
        *,
        seed: int = 0,
        offset: int = 0,
        rng: torch.Tensor | None = None,
        backend: str = "auto",
    ) -> torch.Tensor:
        """Draw ``x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)`` (eq. 2.46).

        Parameters
        ----------
        x0 : (N, *event) floating tensor.
        t : (N,) integer tensor with values in 1..T, or a Python int / 0-d integer tensor used
            for every sample.
        noise : optional (N, *event) standard-normal noise; by default
            ``rng.normal(seed, offset, x0.shape)`` (``x0.numel()`` counters from ``offset``).
        rng : instead of ``seed`` and ``offset``, a (2,) int64 tensor (seed, offset) on x0's device,
            read there without a host sync (what a CUDA graph replays); not advanced.
        backend : where the fused noising runs when ``noise`` is None ("auto": the fastest for
            x0's device; see ``pysampler.available_backends``).

        Returns
        -------
        x_t : (N, *event), dtype and device of ``x0``.
        """
        _check_x(x0, "x0")
        t_idx = _check_t(t, x0, self._n_steps)
        if noise is None:
            return _affine_noise(x0, t_idx, self.sqrt_alphas_cumprod, self.sqrt_one_minus_alphas_cumprod,
                                 _stream(seed, offset, rng, x0), backend)
        if rng is not None:
            raise ValueError("give either noise or rng, not both")
        if not isinstance(noise, torch.Tensor):
            raise TypeError(f"noise must be a torch.Tensor shaped like x0; got {type(noise).__name__}")
        if noise.shape != x0.shape:
            raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}; got {tuple(noise.shape)}")
        if not noise.dtype.is_floating_point:
            raise ValueError(f"noise must be a floating tensor; got {noise.dtype}")
        if noise.device != x0.device:
            raise ValueError(f"noise must be on x0's device {x0.device}; got {noise.device}")
        sqrt_ab = _gather(self.sqrt_alphas_cumprod, t_idx, x0)
        sqrt_1mab = _gather(self.sqrt_one_minus_alphas_cumprod, t_idx, x0)
        return q_sample_reference(x0, sqrt_ab, sqrt_1mab, noise)

    def q_sample_pair(
        self,
        x0: torch.Tensor,
        t: torch.Tensor | int,
        *,
        seed: int = 0,
        offset: int = 0,
        rng: torch.Tensor | None = None,
        backend: str = "auto",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw the pair ``(x_{t-1}, x_t)`` of the forward process from data ``x0``: the real pair a
        denoising diffusion GAN's discriminator sees (Algorithm 1, step 2; eq. 6.4).

        ``x_{t-1} ~ q(x_{t-1} | x_0)`` (eq. 2.46; exactly ``x0`` where ``t = 1``) from the counters
        ``offset .. offset + n - 1``, then ``x_t ~ q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I)``
        (eq. 2.44) from ``offset + n .. offset + 2n - 1``, with ``n = x0.numel()``: the pair consumes
        ``2 * x0.numel()`` counters. Arguments as :meth:`q_sample`; returns two (N, *event) tensors.
        """
        _check_x(x0, "x0")
        t_idx = _check_t(t, x0, self._n_steps)
        stream = _stream(seed, offset, rng, x0)
        x_prev = _affine_noise(x0, t_idx, self.sqrt_alphas_cumprod_prev, self.sqrt_one_minus_alphas_cumprod_prev,
                               stream, backend)
        x_t = _affine_noise(x_prev, t_idx, self.sqrt_alphas, self.sqrt_betas, advance(stream, x0.numel()), backend)
        return x_prev, x_t


def _affine_noise(x: torch.Tensor, t_idx: torch.Tensor, scale: torch.Tensor, noise_scale: torch.Tensor,
                  stream: torch.Tensor, backend: str) -> torch.Tensor:
    """``scale[t] * x + noise_scale[t] * ξ`` per sample in one fused pass: the q_sample kernel, whose
    tables are those of q(x_t | x_0), of q(x_{t-1} | x_0) or of one forward step."""
    kernel = resolve(backend, x.device, dtype=x.dtype).q_sample
    scale, noise_scale = _table(scale, x), _table(noise_scale, x)
    return _LinearInNoise.apply(lambda a: kernel(a, t_idx, scale, noise_scale, stream), t_idx, (scale,), x)


class _LinearInNoise(torch.autograd.Function):
    """Autograd for the fused diffusion draws on every backend: ``out = sum_i c_i[t] * input_i + s[t] * ξ``
    with noise independent of the inputs, so ``d out / d input_i = c_i[t]`` per sample. The forward is
    the backend's fused kernel (which has no autograd of its own); this is what lets a DDGAN
    generator train through :func:`posterior_sample` (Algorithm 1, step 6)."""

    @staticmethod
    def forward(ctx, kernel, t_idx, coefs, *inputs):
        ctx.save_for_backward(t_idx, *coefs)
        return kernel(*inputs)

    @staticmethod
    def backward(ctx, grad):
        t_idx, *coefs = ctx.saved_tensors
        per_sample = (grad.shape[0],) + (1,) * (grad.dim() - 1)
        grads = [
            (grad * c[t_idx].view(per_sample).to(grad.dtype)) if needed else None
            for c, needed in zip(coefs, ctx.needs_input_grad[3:], strict=True)
        ]
        return (None, None, None, *grads)


def _check_x(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, *event); got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating tensor (float16/bfloat16/float32/float64); got {x.dtype}")
    if x.dim() < 1:
        raise ValueError(f"{name} must have shape (N, *event) with at least one dimension; got a 0-d tensor")


def _check_t(t: torch.Tensor | int, x0: torch.Tensor, n_steps: int) -> torch.Tensor:
    """Validate ``t`` and return 0-based step indices, an int64 (N,) tensor on x0's device."""
    n = x0.shape[0]
    if isinstance(t, bool):
        raise TypeError(f"t must be an integer step in 1..{n_steps}; got a bool")
    if isinstance(t, int):
        if not 1 <= t <= n_steps:
            raise ValueError(f"t must be in 1..{n_steps}; got {t}")
        return torch.full((n,), t - 1, dtype=torch.int64, device=x0.device)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t must be an int or an integer tensor of shape ({n},); got {type(t).__name__}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise ValueError(f"t must have an integer dtype; got {t.dtype}")
    if t.device != x0.device:
        raise ValueError(f"t must be on x0's device {x0.device}; got {t.device}")
    if t.dim() == 0:
        t = t.expand(n)
    elif t.shape != (n,):
        raise ValueError(f"t must have shape ({n},) (one step per sample) or be a scalar; got {tuple(t.shape)}")
    if n > 0:
        lo, hi = int(t.min()), int(t.max())
        if lo < 1 or hi > n_steps:
            bad = int(((t < 1) | (t > n_steps)).sum())
            raise ValueError(f"t must be in 1..{n_steps}; {bad} entries are outside (min {lo}, max {hi})")
    return t.to(torch.int64) - 1


def _gather(coef: torch.Tensor, t_idx: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Per-sample (N,) coefficient in x0's compute dtype on x0's device."""
    return coef.to(device=x0.device)[t_idx].to(_compute_dtype(x0.dtype))


def _table(coef: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """A (T,) schedule table in x0's compute dtype on x0's device (the kernels gather from it)."""
    return coef.to(device=x0.device, dtype=_compute_dtype(x0.dtype))


def _check_seed_offset(seed: int, offset: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an int in [0, 2**64); got {seed!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < 2**63:
        raise ValueError(f"offset must be an int in [0, 2**63); got {offset!r}")


def _stream(seed: int, offset: int, rng: torch.Tensor | None, x0: torch.Tensor) -> torch.Tensor:
    """The (2,) int64 (seed, offset) tensor on x0's device the kernels read: ``rng`` itself, or one
    made from the ints ``seed`` and ``offset``."""
    if rng is not None:
        if not isinstance(rng, torch.Tensor) or rng.dtype != torch.int64 or rng.shape != (2,):
            got = f"{rng.dtype} {tuple(rng.shape)}" if isinstance(rng, torch.Tensor) else type(rng).__name__
            raise ValueError(f"rng must be an int64 tensor of shape (2,) holding (seed, offset); got {got}")
        if rng.device != x0.device:
            raise ValueError(f"rng must be on x0's device {x0.device}; got {rng.device}")
        if seed != 0 or offset != 0:
            raise ValueError("give either rng or seed / offset, not both")
        return rng
    _check_seed_offset(seed, offset)
    # int64 holds the seed's bit pattern (two's complement); every backend reads it as 64 bits.
    return torch.tensor([seed - 2**64 if seed >= 2**63 else seed, offset], dtype=torch.int64, device=x0.device)


def posterior_sample(
    sched: VPSchedule,
    x0: torch.Tensor,
    xt: torch.Tensor,
    t: torch.Tensor | int,
    seed: int = 0,
    offset: int = 0,
    *,
    rng: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Draw ``x_{t-1} ~ q(x_{t-1} | x_t, x_0)`` (eq. 2.50-2.51); DDGAN's ``sample_posterior``.

    Parameters
    ----------
    sched : the schedule giving the posterior coefficients.
    x0 : (N, *event) floating tensor, the (predicted) clean sample.
    xt : (N, *event), same shape, dtype and device as ``x0``.
    t : (N,) integer tensor with values in 1..T (per-sample step), or a Python int / 0-d
        integer tensor used for every sample.
    seed, offset : Philox key and first counter; the noise is
        ``rng.normal(seed, offset, x0.shape)`` (float32, cast to float64 for float64 inputs) and
        consumes ``x0.numel()`` counters.
    rng : instead of ``seed`` and ``offset``, a (2,) int64 tensor (seed, offset) on x0's device,
        read there without a host sync (what a CUDA graph replays); not advanced.
    backend : where the fused step runs ("auto": the fastest for x0's device).

    Returns
    -------
    x_{t-1} : (N, *event), dtype and device of ``x0``. Rows with ``t = 1`` have zero posterior
    variance and equal ``x0`` exactly.

    Raises
    ------
    ValueError : shape, dtype or device mismatch between ``x0``, ``xt`` and ``t``; ``t`` not
        integer, not (N,) or scalar, or outside 1..T. TypeError : an argument of the wrong type.
    """
    if not isinstance(sched, VPSchedule):
        raise TypeError(f"sched must be a VPSchedule; got {type(sched).__name__}")
    _check_x(x0, "x0")
    _check_x(xt, "xt")
    if xt.shape != x0.shape:
        raise ValueError(f"xt must have the shape of x0 {tuple(x0.shape)}; got {tuple(xt.shape)}")
    if xt.dtype != x0.dtype:
        raise ValueError(f"xt must have x0's dtype {x0.dtype}; got {xt.dtype}")
    if xt.device != x0.device:
        raise ValueError(f"xt must be on x0's device {x0.device}; got {xt.device}")
    t_idx = _check_t(t, x0, sched.n_steps)
    kernel = resolve(backend, x0.device, dtype=x0.dtype).posterior_sample
    c0, ct, std = (_table(c, x0) for c in (sched.posterior_mean_coef_x0, sched.posterior_mean_coef_xt, sched.posterior_std))
    stream = _stream(seed, offset, rng, x0)
    return _LinearInNoise.apply(lambda a, b: kernel(a, b, t_idx, c0, ct, std, stream), t_idx, (c0, ct), x0, xt)


# --------------------------------------------------------------------------- reverse chain

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ReverseResult:
    """What :func:`reverse_sample` returns.

    x: (n, *event) samples x_0; chain: (T + 1, n, *event) the states x_T, ..., x_0 (with
    ``keep_chain``, else None); cuda_graph: whether the batches were replayed from a captured CUDA
    graph; cuda_graph_reason: why not, in one line (None when they were).
    """

    x: torch.Tensor
    chain: torch.Tensor | None = None
    cuda_graph: bool = False
    cuda_graph_reason: str | None = None


def counters_per_batch(sched: VPSchedule, batch: int, event_shape: tuple[int, ...], latent_dim: int) -> int:
    """Philox counters one batch of :func:`reverse_sample` consumes: ``x_T``, then per step a latent
    draw and the posterior's noise: ``B·E·(T + 1) + B·L·T`` (E = prod(event), L = latent_dim)."""
    event = math.prod(event_shape)
    return batch * event * (sched.n_steps + 1) + batch * latent_dim * sched.n_steps


def _reverse_batch(denoiser: Denoiser, sched: VPSchedule, rng: torch.Tensor, out: torch.Tensor, latent_dim: int,
                   chain: torch.Tensor | None, backend: str) -> None:
    """One batch of Algorithm 2 from the stream ``rng`` ((2,) int64, advanced on the device), written
    into ``out`` (B, *event) (and ``chain`` (T + 1, B, *event)). No host sync: it is what a CUDA graph
    captures, and what runs as is without one."""
    b = out.shape[0]
    x = ps_rng.normal(rng[0], rng[1], out.shape, dtype=out.dtype, device=out.device)
    rng[1] += x.numel()
    if chain is not None:
        chain[0].copy_(x)
    for j, t in enumerate(range(sched.n_steps, 0, -1)):
        z = ps_rng.normal(rng[0], rng[1], (b, latent_dim), dtype=out.dtype, device=out.device)
        rng[1] += z.numel()
        steps = torch.full((b,), t, dtype=torch.int64, device=out.device)
        x0 = denoiser(x, z, steps)
        if x0.shape != x.shape or x0.dtype != x.dtype:
            raise ValueError(f"the denoiser must return x_0 shaped like x_t {tuple(x.shape)} ({x.dtype}); "
                             f"got {tuple(x0.shape)} ({x0.dtype})")
        x = posterior_sample(sched, x0, x, t, rng=rng, backend=backend)
        rng[1] += x.numel()
        if chain is not None:
            chain[j + 1].copy_(x)
    out.copy_(x)


class _GraphedReverse:
    """A captured batch of :func:`_reverse_batch` with static buffers: set the stream, replay, read ``out``."""

    def __init__(self, denoiser, sched, batch, event_shape, latent_dim, dtype, device, keep_chain, backend):
        self.rng = torch.zeros(2, dtype=torch.int64, device=device)
        self.out = torch.empty((batch, *event_shape), dtype=dtype, device=device)
        self.chain = torch.empty((sched.n_steps + 1, batch, *event_shape), dtype=dtype, device=device) if keep_chain else None

        def body() -> None:
            _reverse_batch(denoiser, sched, self.rng, self.out, latent_dim, self.chain, backend)

        # The graph holds the denoiser's kernels, not the Python object: the cache below is weak on it.
        graphs.warm_up(device, body)
        self.graph = graphs.capture(device, body)

    def run(self, start: torch.Tensor) -> None:
        self.rng.copy_(start)
        self.graph.replay()


def _graphed(denoiser, sched, batch, event_shape, latent_dim, dtype, device, keep_chain, backend) -> _GraphedReverse | str:
    """The captured batch for these settings, cached per denoiser object (:func:`pysampler.graphs.cached`)."""
    key = ("reverse_sample", sched.n_steps, sched.beta_min, sched.beta_max, batch, tuple(event_shape), latent_dim, dtype,
           device, keep_chain, backend)
    build = lambda: _GraphedReverse(denoiser, sched, batch, event_shape, latent_dim, dtype, device, keep_chain, backend)  # noqa: E731
    return graphs.cached(denoiser, key, build, "the reverse chain", "the reverse chain")


@torch.no_grad()
def reverse_sample(
    denoiser: Denoiser,
    sched: VPSchedule,
    n: int,
    event_shape: tuple[int, ...],
    latent_dim: int,
    seed: int = 0,
    *,
    batch_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    backend: str = "auto",
    cuda_graph: bool | str = "auto",
    keep_chain: bool = False,
) -> ReverseResult:
    """Sample a denoising diffusion GAN (dissertation 004, Algorithm 2; eq. 6.12).

    ``x_T ~ N(0, I)``; for ``t = T, ..., 1``: ``z ~ N(0, I_L)``, ``x_0' = denoiser(x_t, z, t)``,
    ``x_{t-1} ~ q(x_{t-1} | x_t, x_0')`` (:func:`posterior_sample`, the fused kernel). The final
    step has zero posterior variance, so ``x_0 = x_0'`` of the last call.

    Parameters
    ----------
    denoiser : ``(x_t (B, *event), z (B, L), t (B,) int64 steps in 1..T) -> x_0 (B, *event)``, called
        under ``torch.no_grad()`` (put a module in eval mode first).
    sched : the schedule it was trained with (its T steps are the chain's).
    n : number of samples; event_shape : one sample's shape; latent_dim : L.
    seed : Philox key. Batch ``b`` (rows ``b·B ..``) draws from the counters starting at
        ``b · counters_per_batch(...)``: ``x_T``, then per step ``z`` and the posterior noise, each
        row-major. Every batch has ``batch_size`` rows (the last is cut to ``n``), so the loop keeps
        one shape and one captured graph serves every batch.
    batch_size : rows per batch (default ``min(n, 1000)``).
    dtype, device : of the samples (default: the denoiser's parameters' device, else CPU).
    backend : where the posterior draws run (see ``pysampler.available_backends``).
    cuda_graph : True, False or "auto" (capture one batch on CUDA and replay it; falls back to the
        plain loop, with the reason in ``cuda_graph_reason``, on CPU or when capture fails). The
        graph is cached per denoiser object and settings, so repeated calls capture once; it reads
        the parameters in place, so optimizer updates are seen, but a denoiser's Python-side
        settings are baked in (:func:`pysampler.graphs.clear_cache` forgets the graphs).
    keep_chain : also return the states ``x_T, ..., x_0`` (memory ``(T + 1) · n · E``).
    """
    if not isinstance(sched, VPSchedule):
        raise TypeError(f"sched must be a VPSchedule; got {type(sched).__name__}")
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable (x_t, z, t) -> x_0; got {type(denoiser).__name__}")
    for name, value, low in (("n", n, 1), ("latent_dim", latent_dim, 0), ("batch_size", batch_size, 1)):
        if value is None and name == "batch_size":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
    event_shape = tuple(event_shape)
    if not all(isinstance(s, int) and s >= 1 for s in event_shape):
        raise ValueError(f"event_shape must be a tuple of positive ints; got {event_shape!r}")
    if cuda_graph not in (True, False, "auto"):
        raise ValueError(f"cuda_graph must be True, False or 'auto'; got {cuda_graph!r}")
    if device is None:
        first = next(iter(denoiser.parameters()), None) if isinstance(denoiser, torch.nn.Module) else None
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    _check_seed_offset(seed, 0)
    batch = min(n, 1000) if batch_size is None else batch_size
    if sched.device != device or sched.dtype != _compute_dtype(dtype):
        sched = sched.to(device=device, dtype=_compute_dtype(dtype))  # tables where the kernels read them
    per_batch = counters_per_batch(sched, batch, event_shape, latent_dim)

    graphed: _GraphedReverse | None = None
    reason: str | None = None
    if cuda_graph is False:
        reason = "cuda_graph=False"
    elif device.type != "cuda":
        reason = "CUDA graphs need a CUDA device"
    else:
        found = _graphed(denoiser, sched, batch, event_shape, latent_dim, dtype, device, keep_chain, backend)
        graphed, reason = (found, None) if isinstance(found, _GraphedReverse) else (None, found)
    if graphed is None and cuda_graph is True and device.type == "cuda":
        warnings.warn(f"pysampler: cuda_graph=True, running the plain loop: {reason}", RuntimeWarning, stacklevel=2)

    out = torch.empty((n, *event_shape), dtype=dtype, device=device)
    chain = torch.empty((sched.n_steps + 1, n, *event_shape), dtype=dtype, device=device) if keep_chain else None
    if graphed is not None:  # the batch buffers: the graph's static ones, or one set for the plain loop
        x_b, chain_b = graphed.out, graphed.chain
    else:
        x_b = torch.empty((batch, *event_shape), dtype=dtype, device=device)
        chain_b = torch.empty((sched.n_steps + 1, batch, *event_shape), dtype=dtype, device=device) if keep_chain else None
    for b, start in enumerate(range(0, n, batch)):
        rows = min(batch, n - start)
        stream = _stream(seed, b * per_batch, None, out)
        if graphed is not None:
            graphed.run(stream)
        else:
            _reverse_batch(denoiser, sched, stream, x_b, latent_dim, chain_b, backend)
        out[start:start + rows] = x_b[:rows]
        if chain is not None:
            chain[:, start:start + rows] = chain_b[:, :rows]
    return ReverseResult(out, chain, graphed is not None, reason)
