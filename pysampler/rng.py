"""The one random stream: Philox4x32-10 in plain tensor ops.

Every backend draws its noise from this stream, so the same seed gives the same
chains on the reference backend, the C++ ops, Triton and CUDA.

Definition (Triton's ``tl.randint4x`` / ``tl.rand`` / ``tl.randn``; Salmon et al.,
"Parallel random numbers: as easy as 1, 2, 3", SC 2011):

* key ``(k0, k1) = (seed & 0xffffffff, seed >> 32)``;
* counter ``(c0, c1, c2, c3) = (offset & 0xffffffff, offset >> 32, 0, 0)`` for a
  64-bit ``offset``; each offset is one draw;
* ``uniform(o)``: the first output word ``w0`` read as int32, ``v = w0`` if
  non-negative else ``~w0``, times ``4.6566127342e-10`` in float32 (in [0, 1));
* ``normal(o)``: Box-Muller cosine branch of the first two uniforms,
  ``sqrt(-2 log max(u0, 1e-7)) * cos(2*pi*u1)`` in float32.

Noise is always produced in float32 and cast to the chain's dtype, exactly as a
Triton kernel calling ``tl.randn`` would do. A draw of ``n`` numbers at offset
``o`` uses the counters ``o, o+1, ..., o+n-1``; each sampler documents how many
counters a step consumes and advances its state's offset by that amount.

Arithmetic is carried in int64 tensors holding uint32 values (see ``_mul_hi_lo`` for the
32x32 -> 64-bit products).
"""

from __future__ import annotations

import torch

__all__ = ["philox4x32", "uniform", "normal", "MASK32"]

MASK32 = 0xFFFFFFFF
_KEY_A = 0x9E3779B9  # golden ratio, the key bump of Philox4x32
_KEY_B = 0xBB67AE85  # sqrt(3) - 1
_ROUND_A = 0xD2511F53  # multiplier of word 0
_ROUND_B = 0xCD9E8D57  # multiplier of word 2
_N_ROUNDS = 10
_UNIFORM_SCALE = 4.6566127342e-10  # ~2**-31, Triton's uint_to_uniform_float
_TWO_PI = 6.283185307179586


def _mul_hi_lo(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of ``a * m`` for uint32 ``a`` (int64 tensor) and constant ``m``.

    The 64-bit product may exceed int64's range; PyTorch's int64 multiply wraps modulo 2**64
    (two's complement, on CPU and CUDA), which leaves all 64 bits of the unsigned product
    intact, so masking recovers both words exactly. The known-answer test guards this.
    """
    p = a * m
    return (p >> 32) & MASK32, p & MASK32


def philox4x32(
    c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor, k0: int | torch.Tensor, k1: int | torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Philox4x32-10 on int64 tensors holding uint32 words; returns the four output words.

    The key words are ints or int64 0-d tensors (uint32 values).
    """
    for k0_r, k1_r in zip(_key_schedule(k0, _KEY_A), _key_schedule(k1, _KEY_B), strict=True):
        hi_b, lo_b = _mul_hi_lo(c2, _ROUND_B)
        hi_a, lo_a = _mul_hi_lo(c0, _ROUND_A)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0_r, lo_b, hi_a ^ c3 ^ k1_r, lo_a
    return c0, c1, c2, c3


def _key_schedule(k: int | torch.Tensor, bump: int) -> list:
    """The key word of each round, (k + r·bump) mod 2**32 for r = 0 .. 9 (the same as bumping it
    once per round). For a device tensor key this is one op, not two per round."""
    if isinstance(k, torch.Tensor):
        rounds = torch.arange(_N_ROUNDS, dtype=torch.int64, device=k.device)
        return list(((k + bump * rounds) & MASK32).unbind(0))
    return [(k + bump * r) & MASK32 for r in range(_N_ROUNDS)]


def _check_seed_offset(seed: int, offset: int) -> None:
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64); got {seed}")
    if not 0 <= offset < 2**63:
        raise ValueError(f"offset must be an integer in [0, 2**63); got {offset}")


Key = int | torch.Tensor


def _words(seed: Key, offset: Key, n: int, device: torch.device | str | None) -> tuple[torch.Tensor, ...]:
    """The four Philox words of counters offset .. offset+n-1 under key ``seed``.

    ``seed`` and ``offset`` are ints, or int64 0-d tensors on ``device`` (a state's ``rng[0]``,
    ``rng[1]``): those are read on the device, so no host sync happens and the draw can be
    captured in a CUDA graph and replayed at whatever offset the tensor then holds. An int64
    seed tensor holds the key's 64 bits two's-complement (seeds >= 2**63 are negative there);
    the masks below recover both 32-bit key words either way.
    """
    if not isinstance(seed, torch.Tensor):
        seed = int(seed)
    if not isinstance(offset, torch.Tensor):
        offset = int(offset)
    if isinstance(seed, int) and isinstance(offset, int):
        _check_seed_offset(seed, offset)
    counter = torch.arange(n, dtype=torch.int64, device=device) + offset
    c0 = counter & MASK32
    c1 = counter >> 32
    zero = torch.zeros_like(c0)
    return philox4x32(c0, c1, zero, zero, seed & MASK32, (seed >> 32) & MASK32)


def _to_uniform(word: torch.Tensor) -> torch.Tensor:
    # int32 view of the word; negative values map to ~x = 2**32 - 1 - x (as uint32).
    v = torch.where(word >= 2**31, MASK32 - word, word)
    return v.to(torch.float32) * torch.tensor(_UNIFORM_SCALE, dtype=torch.float32)


def uniform(seed: Key, offset: Key, n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``n`` float32 uniforms in [0, 1) at counters ``offset .. offset+n-1``; shape (n,).

    ``seed`` / ``offset``: ints, or int64 0-d tensors on ``device`` (read there, without a host sync).
    """
    w0, _, _, _ = _words(seed, offset, n, device)
    return _to_uniform(w0)


def normal(
    seed: Key,
    offset: Key,
    shape: tuple[int, ...] | torch.Size | int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Standard normals of ``shape`` at counters ``offset .. offset+numel-1`` (row-major order).

    Computed in float32 (Box-Muller, cosine branch) and cast to ``dtype``. ``seed`` / ``offset``:
    ints, or int64 0-d tensors on ``device`` (read there, without a host sync).
    """
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    n = 1
    for s in shape:
        n *= s
    w0, w1, _, _ = _words(seed, offset, n, device)
    u0 = torch.clamp_min(_to_uniform(w0), 1.0e-7)
    u1 = _to_uniform(w1)
    z = torch.sqrt(-2.0 * torch.log(u0)) * torch.cos(_TWO_PI * u1)
    return z.reshape(shape).to(dtype)
