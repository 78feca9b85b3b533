"""What every Triton kernel family shares: launch shapes, compute dtypes, the MH test, checks.

Layout of every kernel: a state x (N, *event) is a contiguous (N, D) matrix, D = prod(event).

* Elementwise kernels (a step's update) walk the flat index i in blocks of ``BLOCK``; element i
  belongs to chain ``i // D`` (per-chain step sizes are gathered from an (N,) tensor) and takes
  its normal from the Philox stream at counter ``offset + i``, exactly as the reference
  (:mod:`pysampler.ops`).
* Per-chain kernels (a Metropolis-Hastings test) give each program ``BLOCK_N`` chains and walk
  their rows in ``BLOCK_D`` columns: one pass reduces (log-density ratio, kinetic energy), the MH
  test runs on the (BLOCK_N,) results, and a second pass copies the accepted or kept rows.

The random key and counter are read from the state's ``rng`` tensor (int64 (2,) = seed, offset)
inside the kernel, so a step launches without a host sync and can be replayed in a CUDA graph.

Arithmetic runs in float32 for float16 / bfloat16 / float32 storage and in float64 for float64
(``F64``); results are stored in the storage dtype.

Interpreter: with ``TRITON_INTERPRET=1`` (read when ``@triton.jit`` runs, i.e. when this package is
imported) the kernels run on CPU tensors through Triton's interpreter, which costs per program:
launches there use one large block per program.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

__all__ = [
    "INTERPRETED",
    "launch",
    "split_scalar",
    "elementwise_grid",
    "row_tiles",
    "check_state",
    "check_per_chain",
    "check_rng",
    "contiguous",
    "accept_outputs",
    "accept_and_select",
]


@triton.jit
def _probe():
    pass


#: True when the kernels were compiled for Triton's CPU interpreter (TRITON_INTERPRET=1 at import).
INTERPRETED: bool = type(_probe).__name__ == "InterpretedFunction"

# Launch shapes. On a GPU: 1024-element blocks over 4 warps for the elementwise steps (8 elements
# per thread: enough independent Philox work in flight to cover memory latency; 512 in float64,
# whose registers are twice as wide), and row tiles of at most 1024 elements and 64 chains for the
# per-chain kernels (ptxas for sm_90 with Triton 3.6: 64x32 float64 tiles spill, 64x16 use 209
# registers and do not, 1x1024 rows use 56 (float32) to 90 (float64); taller tiles also starve the
# grid at small D). These are untuned defaults (bench/test_step_kernels.py measures them). In the interpreter every
# program costs ~1 ms of Python overhead, so one program takes as much as fits in 64k elements.
_GPU_BLOCK = 1024
_GPU_TILE = 1024
_GPU_TILE_ROWS = 64
_GPU_WARPS = 4
_INTERPRETER_BLOCK = 1 << 16


def _pow2_at_least(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def elementwise_grid(numel: int, dtype: torch.dtype = torch.float32) -> tuple[tuple[int], dict]:
    """(grid, launch meta) for an elementwise kernel over ``numel`` elements of ``dtype``.

    Plain integer arithmetic (no Triton helpers): this runs on every step, where a few
    microseconds of host time matter at small sizes.
    """
    if INTERPRETED:
        block = min(_INTERPRETER_BLOCK, _pow2_at_least(numel))
        meta = {"BLOCK": block}
    else:
        block = _GPU_BLOCK // 2 if dtype == torch.float64 else _GPU_BLOCK
        meta = {"BLOCK": block, "num_warps": _GPU_WARPS}
    # WIDE: 64-bit flat indices only when 32 bits could overflow (int64 division is slow on GPUs).
    # A constexpr must be concrete: under torch.compile's dynamic shapes bool() guards on the size.
    meta["WIDE"] = bool(numel + block >= 2**31)
    return ((numel + block - 1) // block,), meta


def row_tiles(n_rows: int, row_len: int) -> tuple[tuple[int], dict]:
    """(grid, launch meta) for a per-chain kernel: BLOCK_N rows of BLOCK_D columns per program.

    The tile depends on the row length only (a constexpr, so ``int`` guards on it under
    torch.compile); the number of chains stays symbolic in the grid.
    """
    row_len = int(row_len)
    if INTERPRETED:
        block_d = min(_pow2_at_least(row_len), _INTERPRETER_BLOCK)
        block_n = max(1, min(_pow2_at_least(int(n_rows)), _INTERPRETER_BLOCK // block_d))
        meta = {"BLOCK_N": block_n, "BLOCK_D": block_d}
    else:
        block_d = min(_pow2_at_least(row_len), _GPU_TILE)
        block_n = max(1, min(_GPU_TILE_ROWS, _GPU_TILE // block_d))
        meta = {"BLOCK_N": block_n, "BLOCK_D": block_d, "num_warps": _GPU_WARPS}
    return ((n_rows + block_n - 1) // block_n,), meta


def launch(kernel, grid: tuple, device: torch.device, *args, **meta) -> None:
    """Launch ``kernel`` on ``device`` (Triton launches on the *current* CUDA device, which a
    custom op's implementation does not set), through ``wrap_triton`` so torch.compile and fake
    tracing see it."""
    guard = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with guard:
        wrap_triton(kernel)[grid](*args, **meta)


def split_scalar(value: float) -> tuple[float, float]:
    """A Python float as (hi, lo) float32 parts, hi + lo = value to ~2^-48 relative.

    Triton passes Python floats to compiled kernels as float32; a float64 kernel rebuilds the
    value with :func:`join_scalar` so its arithmetic sees the double (the interpreter keeps
    float64 either way).
    """
    hi = float(np.float32(value))
    return hi, float(value - hi)


# ------------------------------------------------------------------------------ device helpers


@triton.jit
def flat_index(BLOCK: tl.constexpr, WIDE: tl.constexpr):
    """This program's block of flat element indices (int64 when WIDE, else int32)."""
    if WIDE:
        return tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    else:
        return tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)


@triton.jit
def to_compute(v, F64: tl.constexpr):
    """Cast a loaded block to the arithmetic dtype: float64 when F64, else float32."""
    if F64:
        return v.to(tl.float64)
    else:
        return v.to(tl.float32)


@triton.jit
def join_scalar(hi, lo, F64: tl.constexpr):
    """The scalar passed as :func:`split_scalar` parts, in the compute dtype."""
    if F64:
        return tl.cast(hi, tl.float64) + tl.cast(lo, tl.float64)
    else:
        return tl.cast(hi, tl.float32)


@triton.jit
def load_rng(rng_ptr):
    """(seed, offset) from the state's int64 rng tensor; the seed's 64 bits are the Philox key."""
    return tl.load(rng_ptr), tl.load(rng_ptr + 1)


@triton.jit
def normal(seed, offset, idx):
    """The reference stream's normal for flat element ``idx``: counter ``offset + idx``."""
    return tl.randn(seed, offset + idx.to(tl.int64))


@triton.jit
def expm1(x):
    """exp(x) − 1 without cancellation for small |x| (Kahan's trick: (u − 1)·x / log u, u = eˣ)."""
    u = tl.exp(x)
    um1 = u - 1.0
    return tl.where(u == 1.0, x, tl.where(um1 == -1.0, -1.0, um1 * x / tl.log(u)))


@triton.jit
def ou_coefficients(h, gamma):
    """Exact Ornstein-Uhlenbeck half step v ← a·v + b·ξ for friction γ and step h: a = e^{−γh/2}, b = √(1 − e^{−γh})."""
    gh = gamma * h
    return tl.exp(-0.5 * gh), tl.sqrt(-expm1(-gh))


@triton.jit
def mh_test(log_alpha, seed, offset, rows):
    """Metropolis-Hastings on (BLOCK_N,) log α: accept where u < min(1, α), u = uniform at counter offset + row.

    A non-finite log α (NaN or ±inf from a blown-up proposal) is a rejection. Returns (accept_prob, accepted).
    """
    finite = (log_alpha == log_alpha) & (tl.abs(log_alpha) < float("inf"))
    log_alpha = tl.where(finite, log_alpha, -float("inf"))
    accept_prob = tl.exp(tl.minimum(log_alpha, 0.0))
    u = tl.rand(seed, offset + rows.to(tl.int64)).to(accept_prob.dtype)
    return accept_prob, u < accept_prob


@triton.jit
def select_rows(accepted, rows, row_mask, D, x_ptr, y_ptr, out_ptr, BLOCK_D: tl.constexpr):
    """out[r] = y[r] where accepted[r] else x[r], for the BLOCK_N rows ``rows``: one read per element."""
    base = rows.to(tl.int64) * D
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        mask = row_mask[:, None] & (cols < D)[None, :]
        offs = base[:, None] + cols[None, :]
        take_y = accepted[:, None]
        # Two loads masked to complement each other: each element is read once, from x or from y.
        y = tl.load(y_ptr + offs, mask=mask & take_y)
        x = tl.load(x_ptr + offs, mask=mask & ~take_y)
        tl.store(out_ptr + offs, tl.where(take_y, y, x), mask=mask)


def accept_outputs(x: torch.Tensor, energy: torch.Tensor, grad: torch.Tensor):
    """Empty (x, energy, grad, accept_prob, accepted) outputs of an MH accept kernel."""
    n = x.shape[0]
    prob_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return (
        torch.empty_like(x), torch.empty_like(energy), torch.empty_like(grad),
        torch.empty(n, dtype=prob_dtype, device=x.device), torch.empty(n, dtype=torch.bool, device=x.device),
    )


@triton.jit
def accept_and_select(
    log_alpha, e, ey, rows, row_mask, D, rng_ptr,
    x_ptr, y_ptr, g_ptr, gy_ptr, x_out, e_out, g_out, prob_out, acc_out, BLOCK_D: tl.constexpr,
):
    """The end of every MH accept kernel: test each chain, store (accept_prob, accepted, energy), then
    copy each chain's accepted (y, ∇U(y)) or kept (x, ∇U(x)) row."""
    seed, offset = load_rng(rng_ptr)
    accept_prob, accepted = mh_test(log_alpha, seed, offset, rows)
    tl.store(prob_out + rows, accept_prob, mask=row_mask)
    tl.store(acc_out + rows, accepted, mask=row_mask)
    tl.store(e_out + rows, tl.where(accepted, ey, e), mask=row_mask)
    select_rows(accepted, rows, row_mask, D, x_ptr, y_ptr, x_out, BLOCK_D)
    select_rows(accepted, rows, row_mask, D, g_ptr, gy_ptr, g_out, BLOCK_D)


# -------------------------------------------------------------------------------- host checks
# The launchers are reached through the samplers, which validate user input; these checks make a
# direct call with mismatched tensors fail with a clear message instead of reading out of bounds.

_STORAGE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def contiguous(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a contiguous tensor (kernels index rows as N·D flat memory; strided inputs are copied)."""
    return t.contiguous()


def check_state(op: str, x: torch.Tensor, **others: torch.Tensor) -> None:
    """x: (N, *event) floating, on a device the kernels run on; ``others`` shaped and typed like x."""
    if x.dtype not in _STORAGE_DTYPES:
        raise TypeError(f"{op}: x must be float16, bfloat16, float32 or float64; got {x.dtype}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"{op}: x must have shape (N, *event) with N >= 1; got {tuple(x.shape)}")
    if x.device.type != "cuda" and not (INTERPRETED and x.device.type == "cpu"):
        raise ValueError(
            f"{op}: the Triton kernels run on CUDA tensors (or CPU ones with TRITON_INTERPRET=1); x is on {x.device}"
        )
    for name, t in others.items():
        if t.shape != x.shape or t.dtype != x.dtype or t.device != x.device:
            raise ValueError(
                f"{op}: {name} must match x (shape {tuple(x.shape)}, {x.dtype}, {x.device}); "
                f"got shape {tuple(t.shape)}, {t.dtype}, {t.device}"
            )


def check_per_chain(op: str, x: torch.Tensor, **params: torch.Tensor) -> None:
    """Per-chain parameters: floating (N,) tensors on x's device."""
    n = x.shape[0]
    for name, t in params.items():
        if t.shape != (n,) or not t.is_floating_point() or t.device != x.device:
            raise ValueError(
                f"{op}: {name} must be a floating ({n},) tensor on {x.device} (one value per chain); "
                f"got shape {tuple(t.shape)}, {t.dtype}, {t.device}"
            )


def check_rng(op: str, rng: torch.Tensor, x: torch.Tensor) -> None:
    if rng.shape != (2,) or rng.dtype != torch.int64 or rng.device != x.device:
        raise ValueError(
            f"{op}: rng must be an int64 (2,) tensor (seed, offset) on {x.device}; "
            f"got shape {tuple(rng.shape)}, {rng.dtype}, {rng.device}"
        )
