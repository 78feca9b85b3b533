"""Langevin step kernels: ULA (and its noise-free flow), MALA's accept/reject, kinetic Langevin OBABO.

Each kernel is the whole elementwise work of its step given the energy gradient, with the noise
drawn in registers from the Philox stream (``tl.randn`` at counter offset + flat index), so
backend="triton" reproduces the reference ops of :mod:`pysampler.ops` on the same (seed, offset).
Memory traffic per element: ULA reads x and ∇U and writes x' (12 bytes in float32, against ~28 for
the eager PyTorch step); OBABO is two kernels around the one gradient evaluation.

Ops are registered as ``torch.ops.pysampler.triton_*`` (``torch.library.triton_op``: torch.compile
sees through them to the kernels; the launcher itself is the fake implementation).
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
    join_scalar,
    launch,
    load_rng,
    normal,
    ou_coefficients,
    row_tiles,
    split_scalar,
    to_compute,
)

__all__ = ["ula_step", "mala_accept", "kinetic_oba", "kinetic_bo"]


# ----------------------------------------------------------------------------------------- ULA


@triton.jit
def _ula_kernel(
    x_ptr, g_ptr, h_ptr, rng_ptr, out_ptr, numel, D, noise_hi, noise_lo, prior_hi, prior_lo,
    NOISE: tl.constexpr, PRIOR: tl.constexpr, F64: tl.constexpr, BLOCK: tl.constexpr, WIDE: tl.constexpr,
):
    idx = flat_index(BLOCK, WIDE)
    mask = idx < numel
    x = to_compute(tl.load(x_ptr + idx, mask=mask), F64)
    g = to_compute(tl.load(g_ptr + idx, mask=mask), F64)
    h = to_compute(tl.load(h_ptr + idx // D, mask=mask, other=1.0), F64)
    if PRIOR:  # ∇(w·½|x|²) = w·x, the standard-normal prior of a latent target, without a second pass
        g = g + join_scalar(prior_hi, prior_lo, F64) * x
    out = x - h * g
    if NOISE:
        seed, offset = load_rng(rng_ptr)
        out = out + tl.sqrt(2.0 * h) * join_scalar(noise_hi, noise_lo, F64) * normal(seed, offset, idx).to(out.dtype)
    tl.store(out_ptr + idx, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton_op("pysampler::triton_ula_step", mutates_args=())
def ula_step(
    x: torch.Tensor, grad: torch.Tensor, step_size: torch.Tensor, noise_scale: float, rng: torch.Tensor,
    prior_weight: float = 0.0,
) -> torch.Tensor:
    """x' = x − h(∇U + w·x) + √(2h)·noise_scale·ξ in one pass; reference :func:`pysampler.ops.ula_step`.

    x, grad: (N, *event); step_size: (N,); rng: int64 (2,) (seed, offset); normal i at offset + i.
    """
    check_state("ula_step", x, grad=grad)
    check_per_chain("ula_step", x, step_size=step_size)
    check_rng("ula_step", rng, x)
    x, grad, step_size = contiguous(x), contiguous(grad), contiguous(step_size)
    noise_scale, prior_weight = float(noise_scale), float(prior_weight)  # concrete before they pick constexprs
    out = torch.empty_like(x)
    numel = x.numel()
    grid, meta = elementwise_grid(numel, x.dtype)
    launch(
        _ula_kernel, grid, x.device,
        x, grad, step_size, rng, out, numel, numel // x.shape[0], *split_scalar(noise_scale), *split_scalar(prior_weight),
        NOISE=noise_scale != 0.0, PRIOR=prior_weight != 0.0, F64=x.dtype == torch.float64, **meta,
    )
    return out


# ---------------------------------------------------------------------------------------- MALA


@triton.jit
def _mala_accept_kernel(
    x_ptr, e_ptr, g_ptr, y_ptr, ey_ptr, gy_ptr, h_ptr, rng_ptr,
    x_out, e_out, g_out, prob_out, acc_out, N, D,
    F64: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    h = to_compute(tl.load(h_ptr + rows, mask=row_mask, other=1.0), F64)
    # Pass 1: |y − x + h∇U(x)|² and |x − y + h∇U(y)|², the proposal densities q(y|x) and q(x|y).
    fwd = tl.zeros([BLOCK_N], dtype=h.dtype)
    bwd = tl.zeros([BLOCK_N], dtype=h.dtype)
    base = rows * D
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        mask = row_mask[:, None] & (cols < D)[None, :]
        offs = base[:, None] + cols[None, :]
        x = to_compute(tl.load(x_ptr + offs, mask=mask, other=0.0), F64)
        y = to_compute(tl.load(y_ptr + offs, mask=mask, other=0.0), F64)
        gx = to_compute(tl.load(g_ptr + offs, mask=mask, other=0.0), F64)
        gy = to_compute(tl.load(gy_ptr + offs, mask=mask, other=0.0), F64)
        diff = y - x
        a = diff + h[:, None] * gx
        b = h[:, None] * gy - diff
        fwd += tl.sum(a * a, axis=1)
        bwd += tl.sum(b * b, axis=1)
    e = tl.load(e_ptr + rows, mask=row_mask, other=0.0)
    ey = tl.load(ey_ptr + rows, mask=row_mask, other=0.0)
    # log α = U(x) − U(y) + log q(x|y) − log q(y|x), q(b|a) = N(b; a − h∇U(a), 2h I).
    log_alpha = to_compute(e, F64) - to_compute(ey, F64) - (bwd - fwd) / (4.0 * h)
    # MH test; pass 2: accepted chains take (y, ∇U(y)), the others keep (x, ∇U(x)).
    accept_and_select(
        log_alpha, e, ey, rows, row_mask, D, rng_ptr,
        x_ptr, y_ptr, g_ptr, gy_ptr, x_out, e_out, g_out, prob_out, acc_out, BLOCK_D,
    )


@triton_op("pysampler::triton_mala_accept", mutates_args=())
def mala_accept(
    x: torch.Tensor, energy: torch.Tensor, grad: torch.Tensor,
    y: torch.Tensor, energy_y: torch.Tensor, grad_y: torch.Tensor,
    step_size: torch.Tensor, rng: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MALA accept/reject of y from x, one reduction per chain; reference :func:`pysampler.ops.mala_accept`.

    Returns (x, energy, grad, accept_prob, accepted) with rejected chains keeping x, U(x), ∇U(x).
    """
    check_state("mala_accept", x, grad=grad, y=y, grad_y=grad_y)
    check_per_chain("mala_accept", x, energy=energy, energy_y=energy_y, step_size=step_size)
    check_rng("mala_accept", rng, x)
    x, grad, y, grad_y = contiguous(x), contiguous(grad), contiguous(y), contiguous(grad_y)
    energy, energy_y, step_size = contiguous(energy), contiguous(energy_y.to(energy.dtype)), contiguous(step_size)
    x_out, e_out, g_out, prob, accepted = accept_outputs(x, energy, grad)
    n = x.shape[0]
    grid, meta = row_tiles(n, x.numel() // n)
    launch(
        _mala_accept_kernel, grid, x.device,
        x, energy, grad, y, energy_y, grad_y, step_size, rng, x_out, e_out, g_out, prob, accepted,
        n, x.numel() // n, F64=x.dtype == torch.float64, **meta,
    )
    return x_out, e_out, g_out, prob, accepted


# ---------------------------------------------------------------------------- kinetic Langevin


@triton.jit
def _kinetic_oba_kernel(
    x_ptr, v_ptr, g_ptr, h_ptr, gamma_ptr, rng_ptr, x_out, v_out, numel, D,
    F64: tl.constexpr, BLOCK: tl.constexpr, WIDE: tl.constexpr,
):
    idx = flat_index(BLOCK, WIDE)
    mask = idx < numel
    chain = idx // D
    x = to_compute(tl.load(x_ptr + idx, mask=mask), F64)
    v = to_compute(tl.load(v_ptr + idx, mask=mask), F64)
    g = to_compute(tl.load(g_ptr + idx, mask=mask), F64)
    h = to_compute(tl.load(h_ptr + chain, mask=mask, other=1.0), F64)
    gamma = to_compute(tl.load(gamma_ptr + chain, mask=mask, other=1.0), F64)
    decay, noise_std = ou_coefficients(h, gamma)
    seed, offset = load_rng(rng_ptr)
    v = decay * v + noise_std * normal(seed, offset, idx).to(v.dtype)  # O(h/2)
    v = v - 0.5 * h * g  # B(h/2)
    x = x + h * v  # A(h)
    tl.store(x_out + idx, x.to(x_out.dtype.element_ty), mask=mask)
    tl.store(v_out + idx, v.to(v_out.dtype.element_ty), mask=mask)


@triton.jit
def _kinetic_bo_kernel(
    v_ptr, g_ptr, h_ptr, gamma_ptr, rng_ptr, v_out, numel, D,
    F64: tl.constexpr, BLOCK: tl.constexpr, WIDE: tl.constexpr,
):
    idx = flat_index(BLOCK, WIDE)
    mask = idx < numel
    chain = idx // D
    v = to_compute(tl.load(v_ptr + idx, mask=mask), F64)
    g = to_compute(tl.load(g_ptr + idx, mask=mask), F64)
    h = to_compute(tl.load(h_ptr + chain, mask=mask, other=1.0), F64)
    gamma = to_compute(tl.load(gamma_ptr + chain, mask=mask, other=1.0), F64)
    decay, noise_std = ou_coefficients(h, gamma)
    seed, offset = load_rng(rng_ptr)
    v = v - 0.5 * h * g  # B(h/2)
    v = decay * v + noise_std * normal(seed, offset, idx).to(v.dtype)  # O(h/2)
    tl.store(v_out + idx, v.to(v_out.dtype.element_ty), mask=mask)


@triton_op("pysampler::triton_kinetic_oba", mutates_args=())
def kinetic_oba(
    x: torch.Tensor, v: torch.Tensor, grad: torch.Tensor,
    step_size: torch.Tensor, friction: torch.Tensor, rng: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """First half of an OBABO step, O(h/2) B(h/2) A(h), in one pass; reference :func:`pysampler.ops.kinetic_oba`."""
    check_state("kinetic_oba", x, v=v, grad=grad)
    check_per_chain("kinetic_oba", x, step_size=step_size, friction=friction)
    check_rng("kinetic_oba", rng, x)
    x, v, grad = contiguous(x), contiguous(v), contiguous(grad)
    step_size, friction = contiguous(step_size), contiguous(friction)
    x_out, v_out = torch.empty_like(x), torch.empty_like(v)
    numel = x.numel()
    grid, meta = elementwise_grid(numel, x.dtype)
    launch(
        _kinetic_oba_kernel, grid, x.device,
        x, v, grad, step_size, friction, rng, x_out, v_out, numel, numel // x.shape[0],
        F64=x.dtype == torch.float64, **meta,
    )
    return x_out, v_out


@triton_op("pysampler::triton_kinetic_bo", mutates_args=())
def kinetic_bo(
    v: torch.Tensor, grad: torch.Tensor, step_size: torch.Tensor, friction: torch.Tensor, rng: torch.Tensor
) -> torch.Tensor:
    """Second half of an OBABO step, B(h/2) O(h/2), in one pass; reference :func:`pysampler.ops.kinetic_bo`."""
    check_state("kinetic_bo", v, grad=grad)
    check_per_chain("kinetic_bo", v, step_size=step_size, friction=friction)
    check_rng("kinetic_bo", rng, v)
    v, grad, step_size, friction = contiguous(v), contiguous(grad), contiguous(step_size), contiguous(friction)
    v_out = torch.empty_like(v)
    numel = v.numel()
    grid, meta = elementwise_grid(numel, v.dtype)
    launch(
        _kinetic_bo_kernel, grid, v.device,
        v, grad, step_size, friction, rng, v_out, numel, numel // v.shape[0], F64=v.dtype == torch.float64, **meta,
    )
    return v_out
