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

import torch

from .backends import resolve
from .ops import compute_dtype as _compute_dtype
from .ops import posterior_sample_reference, q_sample_reference

__all__ = [
    "VPSchedule",
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
    sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod : coefficients of q(x_t | x_0).
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
            "sqrt_alphas_cumprod": torch.sqrt(ab),
            "sqrt_one_minus_alphas_cumprod": torch.sqrt(one_minus_ab),
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
        backend : where the fused noising runs when ``noise`` is None ("auto": the fastest for
            x0's device; see ``pysampler.available_backends``).

        Returns
        -------
        x_t : (N, *event), dtype and device of ``x0``.
        """
        _check_x(x0, "x0")
        t_idx = _check_t(t, x0, self._n_steps)
        if noise is None:
            return resolve(backend, x0.device, dtype=x0.dtype).q_sample(
                x0, t_idx, _table(self.sqrt_alphas_cumprod, x0), _table(self.sqrt_one_minus_alphas_cumprod, x0),
                _rng_tensor(seed, offset, x0),
            )
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


def _rng_tensor(seed: int, offset: int, x0: torch.Tensor) -> torch.Tensor:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an int in [0, 2**64); got {seed!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < 2**63:
        raise ValueError(f"offset must be an int in [0, 2**63); got {offset!r}")
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
    return resolve(backend, x0.device, dtype=x0.dtype).posterior_sample(
        x0, xt, t_idx,
        _table(sched.posterior_mean_coef_x0, x0), _table(sched.posterior_mean_coef_xt, x0), _table(sched.posterior_std, x0),
        _rng_tensor(seed, offset, x0),
    )
