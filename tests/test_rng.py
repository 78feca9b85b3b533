"""The one random stream: known-answer vectors, Triton parity, counter layout, distribution."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from pysampler import rng


def _words(seed: int, counter: tuple[int, int, int, int]) -> list[int]:
    c = [torch.tensor([v], dtype=torch.int64) for v in counter]
    return [int(w) for w in rng.philox4x32(*c, seed & 0xFFFFFFFF, seed >> 32)]


def test_known_answer_zero():
    # Random123 kat_vectors, philox4x32_10 with zero key and counter.
    assert _words(0, (0, 0, 0, 0)) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


def test_known_answer_ones_and_pi():
    # Random123 kat_vectors: all-ones counter and key; the pi-digits counter and key.
    assert _words(0xFFFFFFFFFFFFFFFF, (0xFFFFFFFF,) * 4) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    key = 0xA4093822 | (0x299F31D0 << 32)
    assert _words(key, (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344)) == [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


def test_counter_layout_and_offsets():
    # Drawing n at offset o equals the tail of drawing o + n at offset 0; 64-bit offsets work.
    full = rng.normal(7, 0, 100)
    torch.testing.assert_close(rng.normal(7, 40, 60), full[40:], atol=0, rtol=0)
    torch.testing.assert_close(rng.normal(7, 0, (10, 10)), full.reshape(10, 10), atol=0, rtol=0)
    big = rng.uniform(7, 2**32 - 3, 6)
    torch.testing.assert_close(big[3:], rng.uniform(7, 2**32, 3), atol=0, rtol=0)
    assert not torch.equal(rng.uniform(7, 0, 8), rng.uniform(8, 0, 8))
    assert not torch.equal(rng.uniform(2**32 + 7, 0, 8), rng.uniform(7, 0, 8))


def test_dtypes_and_ranges():
    u = rng.uniform(3, 0, 100_000)
    assert u.dtype == torch.float32 and float(u.min()) >= 0.0 and float(u.max()) < 1.0
    z64 = rng.normal(3, 0, 1000, dtype=torch.float64)
    assert z64.dtype == torch.float64
    torch.testing.assert_close(z64, rng.normal(3, 0, 1000).double(), atol=0, rtol=0)
    with pytest.raises(ValueError, match="seed"):
        rng.uniform(-1, 0, 3)
    with pytest.raises(ValueError, match="offset"):
        rng.uniform(0, -5, 3)


def test_normal_distribution_moments():
    # 10^6 draws: mean, variance, skew and kurtosis within 5 standard errors of N(0, 1)'s.
    n = 1_000_000
    z = rng.normal(123, 0, n, dtype=torch.float64)
    se = 1.0 / n**0.5
    assert abs(float(z.mean())) < 5 * se
    assert abs(float(z.var()) - 1.0) < 5 * (2.0**0.5) * se
    assert abs(float((z**3).mean())) < 5 * (6.0**0.5) * se
    assert abs(float((z**4).mean()) - 3.0) < 5 * (96.0**0.5) * se
    u = rng.uniform(321, 0, n).double()
    assert abs(float(u.mean()) - 0.5) < 5 * (1 / 12) ** 0.5 * se


_TRITON_SCRIPT = textwrap.dedent(
    """
    import torch, triton, triton.language as tl
    from pysampler import rng

    @triton.jit
    def draw(out_n, out_u, seed, offset, N: tl.constexpr):
        idx = tl.arange(0, N)
        o = offset + idx.to(tl.int64)
        tl.store(out_n + idx, tl.randn(seed, o))
        tl.store(out_u + idx, tl.rand(seed, o))

    for seed, offset in [(0, 0), (12345, 2**32 - 100), (2**40 + 7, 5)]:
        n, u = torch.empty(256), torch.empty(256)
        draw[(1,)](n, u, seed, offset, N=256)
        torch.testing.assert_close(u, rng.uniform(seed, offset, 256), atol=0, rtol=0)
        torch.testing.assert_close(n, rng.normal(seed, offset, 256), atol=2e-6, rtol=2e-6)
    print("ok")
    """
)


def test_matches_triton_randn():
    # The definition of the stream is Triton's tl.rand / tl.randn (int64 offsets). Run in a
    # subprocess because TRITON_INTERPRET is read when @triton.jit runs.
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", _TRITON_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
