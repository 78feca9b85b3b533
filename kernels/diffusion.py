"""Diffusion kernels: forward noising q(x_t | x_0) and DDGAN's posterior step q(x_{t−1} | x_t, x_0).

Each sample n has its own step t_n: the kernels gather the schedule coefficients from the (T,)
tables by ``t_index[n]`` in registers, so a batch with mixed steps is one pass with no host-side
gather. Noise: normal i at counter offset + i. References: :func:`pysampler.ops.q_sample` and
:func:`pysampler.ops.posterior_sample` (formulas in :mod:`pysampler.diffusion`, eq. 2.46, 2.50-2.51).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from .common import check_rng, check_state, contiguous, elementwise_grid, flat_index, launch, load_rng, normal, to_compute

__all__ = ["q_sample", "posterior_sample"]


@triton.jit
def _posterior_kernel(
    x0_ptr, xt_ptr, t_ptr, c0_ptr, ct_ptr, std_ptr, rng_ptr, out_ptr, numel, D,
    POSTERIOR: tl.constexpr, F64: tl.constexpr, BLOCK: tl.constexpr, WIDE: tl.constexpr,
):
    """POSTERIOR: out = (c0·x0 + ct·xt) + std·ξ; else (q_sample): out = c0·x0 + std·ξ."""
    idx = flat_index(BLOCK, WIDE)
    mask = idx < numel
    t = tl.load(t_ptr + idx // D, mask=mask, other=0)
    x0 = to_compute(tl.load(x0_ptr + idx, mask=mask), F64)
    mean = to_compute(tl.load(c0_ptr + t, mask=mask, other=0.0), F64) * x0
    if POSTERIOR:
        xt = to_compute(tl.load(xt_ptr + idx, mask=mask), F64)
        mean = mean + to_compute(tl.load(ct_ptr + t, mask=mask, other=0.0), F64) * xt
    std = to_compute(tl.load(std_ptr + t, mask=mask, other=0.0), F64)
    seed, offset = load_rng(rng_ptr)
    out = mean + std * normal(seed, offset, idx).to(mean.dtype)
    tl.store(out_ptr + idx, out.to(out_ptr.dtype.element_ty), mask=mask)


def _check_tables(op: str, x0: torch.Tensor, t_index: torch.Tensor, **tables: torch.Tensor) -> None:
    n = x0.shape[0]
    if t_index.shape != (n,) or t_index.dtype != torch.int64 or t_index.device != x0.device:
        raise ValueError(
            f"{op}: t_index must be an int64 ({n},) tensor of 0-based steps on {x0.device}; "
            f"got shape {tuple(t_index.shape)}, {t_index.dtype}, {t_index.device}"
        )
    for name, t in tables.items():
        if t.ndim != 1 or not t.is_floating_point() or t.device != x0.device:
            raise ValueError(
                f"{op}: {name} must be a floating (T,) schedule table on {x0.device}; "
                f"got shape {tuple(t.shape)}, {t.dtype}, {t.device}"
            )


def _launch(x0, xt, t_index, c0, ct, std, rng, posterior: bool) -> torch.Tensor:
    out = torch.empty_like(x0)
    numel = x0.numel()
    grid, meta = elementwise_grid(numel, x0.dtype)
    launch(
        _posterior_kernel, grid, x0.device,
        x0, xt, t_index, c0, ct, std, rng, out, numel, numel // x0.shape[0],
        POSTERIOR=posterior, F64=x0.dtype == torch.float64, **meta,
    )
    return out


@triton_op("pysampler::triton_q_sample", mutates_args=())
def q_sample(
    x0: torch.Tensor, t_index: torch.Tensor, sqrt_ab: torch.Tensor, sqrt_1mab: torch.Tensor, rng: torch.Tensor
) -> torch.Tensor:
    """x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ξ per sample, one pass; reference :func:`pysampler.ops.q_sample`.

    x0: (N, *event); t_index: (N,) int64, t − 1; sqrt_ab, sqrt_1mab: (T,) tables.
    """
    check_state("q_sample", x0)
    _check_tables("q_sample", x0, t_index, sqrt_ab=sqrt_ab, sqrt_1mab=sqrt_1mab)
    check_rng("q_sample", rng, x0)
    x0, t_index, sqrt_ab, sqrt_1mab = (contiguous(t) for t in (x0, t_index, sqrt_ab, sqrt_1mab))
    # xt and ct are not read (POSTERIOR=False): x0 and sqrt_ab stand in for them.
    return _launch(x0, x0, t_index, sqrt_ab, sqrt_ab, sqrt_1mab, rng, posterior=False)


@triton_op("pysampler::triton_posterior_sample", mutates_args=())
def posterior_sample(
    x0: torch.Tensor, xt: torch.Tensor, t_index: torch.Tensor,
    coef_x0: torch.Tensor, coef_xt: torch.Tensor, std: torch.Tensor, rng: torch.Tensor,
) -> torch.Tensor:
    """x_{t−1} = c0·x0 + ct·xt + σ̃·ξ per sample, one pass; reference :func:`pysampler.ops.posterior_sample`.

    x0, xt: (N, *event); t_index: (N,) int64, t − 1; coef_x0, coef_xt, std: (T,) tables.
    """
    check_state("posterior_sample", x0, xt=xt)
    _check_tables("posterior_sample", x0, t_index, coef_x0=coef_x0, coef_xt=coef_xt, std=std)
    check_rng("posterior_sample", rng, x0)
    x0, xt, t_index, coef_x0, coef_xt, std = (contiguous(t) for t in (x0, xt, t_index, coef_x0, coef_xt, std))
    return _launch(x0, xt, t_index, coef_x0, coef_xt, std, rng, posterior=True)
