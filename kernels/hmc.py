"""HMC kernels: fresh momentum, fused leapfrog kick-drift, closing kick, and the MH accept.

One HMC step is: momentum (one pass writing p₀ ~ N(0, I) from the Philox stream), L fused
kick-drift passes around the L gradient evaluations (p ← p − k∇U, x ← x + h·p in one read of
x, p, ∇U), and one accept kernel that applies the closing half kick on the fly, reduces both
kinetic energies per chain, rejects non-finite trajectories, and restores position, energy and
gradient of rejected chains. (``kick`` alone serves the public ``leapfrog`` helper.)
References: :mod:`pysampler.ops` (momentum, leapfrog_kick_drift, kick, hmc_accept).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from .common import (
    accept_and_select,
    accept_outputs,
    check_per_chain,
    check_rng,
    check_state,
    contiguous,
    elementwise_grid,
    flat_index,
    launch,
    load_rng,
    normal,
    row_tiles,
    to_compute,
)

__all__ = ["momentum", "leapfrog_kick_drift", "kick", "hmc_accept"]


@triton.jit
def _momentum_kernel(rng_ptr, out_ptr, numel, BLOCK: tl.constexpr, WIDE: tl.constexpr):
    idx = flat_index(BLOCK, WIDE)
    seed, offset = load_rng(rng_ptr)
    tl.store(out_ptr + idx, normal(seed, offset, idx).to(out_ptr.dtype.element_ty), mask=idx < numel)


@triton_op("pysampler::triton_momentum", mutates_args=())
def momentum(rng: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Standard normals shaped like ``like`` (normal i at counter offset + i); reference :func:`pysampler.ops.momentum`."""
    check_state("momentum", like)
    check_rng("momentum", rng, like)
    out = torch.empty(like.shape, dtype=like.dtype, device=like.device)
    numel = out.numel()
    grid, meta = elementwise_grid(numel, out.dtype)
    launch(_momentum_kernel, grid, out.device, rng, out, numel, **meta)
    return out


@triton.jit
def _kick_drift_kernel(
    x_ptr, p_ptr, g_ptr, k_ptr, h_ptr, x_out, p_out, numel, D,
    DRIFT: tl.constexpr, F64: tl.constexpr, BLOCK: tl.constexpr, WIDE: tl.constexpr,
):
    idx = flat_index(BLOCK, WIDE)
    mask = idx < numel
    chain = idx // D
    p = to_compute(tl.load(p_ptr + idx, mask=mask), F64)
    g = to_compute(tl.load(g_ptr + idx, mask=mask), F64)
    k = to_compute(tl.load(k_ptr + chain, mask=mask, other=0.0), F64)
    p = p - k * g
    tl.store(p_out + idx, p.to(p_out.dtype.element_ty), mask=mask)
    if DRIFT:
        x = to_compute(tl.load(x_ptr + idx, mask=mask), F64)
        h = to_compute(tl.load(h_ptr + chain, mask=mask, other=0.0), F64)
        tl.store(x_out + idx, (x + h * p).to(x_out.dtype.element_ty), mask=mask)


@triton_op("pysampler::triton_leapfrog_kick_drift", mutates_args=())
def leapfrog_kick_drift(
    x: torch.Tensor, p: torch.Tensor, grad: torch.Tensor, kick_size: torch.Tensor, step_size: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """p ← p − k∇U(x); x ← x + h·p in one pass. Returns (x, p); reference :func:`pysampler.ops.leapfrog_kick_drift`."""
    check_state("leapfrog_kick_drift", x, p=p, grad=grad)
    check_per_chain("leapfrog_kick_drift", x, kick_size=kick_size, step_size=step_size)
    x, p, grad, kick_size, step_size = (contiguous(t) for t in (x, p, grad, kick_size, step_size))
    x_out, p_out = torch.empty_like(x), torch.empty_like(p)
    numel = x.numel()
    grid, meta = elementwise_grid(numel, x.dtype)
    launch(
        _kick_drift_kernel, grid, x.device,
        x, p, grad, kick_size, step_size, x_out, p_out, numel, numel // x.shape[0],
        DRIFT=True, F64=x.dtype == torch.float64, **meta,
    )
    return x_out, p_out


@triton_op("pysampler::triton_kick", mutates_args=())
def kick(p: torch.Tensor, grad: torch.Tensor, kick_size: torch.Tensor) -> torch.Tensor:
    """p ← p − k∇U(x), the closing half kick; reference :func:`pysampler.ops.kick`."""
    check_state("kick", p, grad=grad)
    check_per_chain("kick", p, kick_size=kick_size)
    p, grad, kick_size = contiguous(p), contiguous(grad), contiguous(kick_size)
    p_out = torch.empty_like(p)
    numel = p.numel()
    grid, meta = elementwise_grid(numel, p.dtype)
    # DRIFT=False: the x pointers are never read or written (p stands in for them).
    launch(
        _kick_drift_kernel, grid, p.device,
        p, p, grad, kick_size, kick_size, p, p_out, numel, numel // p.shape[0],
        DRIFT=False, F64=p.dtype == torch.float64, **meta,
    )
    return p_out


@triton.jit
def _hmc_accept_kernel(
    x_ptr, e_ptr, g_ptr, p0_ptr, y_ptr, ey_ptr, gy_ptr, p_ptr, k_ptr, rng_ptr,
    x_out, e_out, g_out, prob_out, acc_out, N, D,
    F64: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    e = tl.load(e_ptr + rows, mask=row_mask, other=0.0)
    ey = tl.load(ey_ptr + rows, mask=row_mask, other=0.0)
    k = to_compute(tl.load(k_ptr + rows, mask=row_mask, other=0.0), F64)
    # Pass 1: both kinetic energies, the final one after the closing half kick p − k∇U(y) (applied
    # here and never stored: HMC redraws the momentum), and whether the end point y is finite (an
    # energy can stay finite at an infinite position; ∇U(y) enters H through the kick).
    ke0 = tl.zeros([BLOCK_N], dtype=to_compute(e, F64).dtype)
    ke1 = tl.zeros([BLOCK_N], dtype=ke0.dtype)
    n_bad = tl.zeros([BLOCK_N], dtype=tl.int32)
    base = rows * D
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        mask = row_mask[:, None] & (cols < D)[None, :]
        offs = base[:, None] + cols[None, :]
        p0 = to_compute(tl.load(p0_ptr + offs, mask=mask, other=0.0), F64)
        gy = to_compute(tl.load(gy_ptr + offs, mask=mask, other=0.0), F64)
        p = to_compute(tl.load(p_ptr + offs, mask=mask, other=0.0), F64) - k[:, None] * gy
        y = to_compute(tl.load(y_ptr + offs, mask=mask, other=0.0), F64)
        ke0 += tl.sum(p0 * p0, axis=1)
        ke1 += tl.sum(p * p, axis=1)
        finite = (y == y) & (tl.abs(y) < float("inf"))
        n_bad += tl.sum(tl.where(finite, 0, 1), axis=1)
    # H = U + ½|p|²; log α = H(x, p₀) − H(y, p); a non-finite y is a rejection.
    h0 = to_compute(e, F64) + 0.5 * ke0
    h1 = to_compute(ey, F64) + 0.5 * ke1
    log_alpha = tl.where(n_bad == 0, h0 - h1, -float("inf"))
    # MH test; pass 2: rejected chains get back their position, energy and cached gradient.
    accept_and_select(
        log_alpha, e, ey, rows, row_mask, D, rng_ptr,
        x_ptr, y_ptr, g_ptr, gy_ptr, x_out, e_out, g_out, prob_out, acc_out, BLOCK_D,
    )


@triton_op("pysampler::triton_hmc_accept", mutates_args=())
def hmc_accept(
    x: torch.Tensor, energy: torch.Tensor, grad: torch.Tensor, p0: torch.Tensor,
    y: torch.Tensor, energy_y: torch.Tensor, grad_y: torch.Tensor, p: torch.Tensor,
    kick_size: torch.Tensor, rng: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """HMC accept/reject on H = U + ½|p|² with the closing half kick folded in, one reduction per chain.

    ``p``: momentum at y before the closing kick p − k∇U(y). Reference :func:`pysampler.ops.hmc_accept`.
    Returns (x, energy, grad, accept_prob, accepted).
    """
    check_state("hmc_accept", x, grad=grad, p0=p0, y=y, grad_y=grad_y, p=p)
    check_per_chain("hmc_accept", x, energy=energy, energy_y=energy_y, kick_size=kick_size)
    check_rng("hmc_accept", rng, x)
    x, grad, p0, y, grad_y, p = (contiguous(t) for t in (x, grad, p0, y, grad_y, p))
    energy, energy_y, kick_size = contiguous(energy), contiguous(energy_y.to(energy.dtype)), contiguous(kick_size)
    x_out, e_out, g_out, prob, accepted = accept_outputs(x, energy, grad)
    n = x.shape[0]
    grid, meta = row_tiles(n, x.numel() // n)
    launch(
        _hmc_accept_kernel, grid, x.device,
        x, energy, grad, p0, y, energy_y, grad_y, p, kick_size, rng, x_out, e_out, g_out, prob, accepted,
        n, x.numel() // n, F64=x.dtype == torch.float64, **meta,
    )
    return x_out, e_out, g_out, prob, accepted
