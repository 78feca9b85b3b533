"""The native extension (pysampler/_C.so): Philox stream, ula_step numerics, opcheck, bad inputs.

Every native op is compared with the plain-PyTorch definition on the same inputs and the same
random stream (pysampler.rng). Skipped as a whole when the extension was not built.

Tolerances. The Philox *words* are integers and must match bit for bit. The normals are float32
Box-Muller values; the native kernel uses libm's logf/cosf while torch's reference uses its own
vectorised (SLEEF) log/cos, and the two differ by at most an ulp or two in the float32 result.
So a float64 step agrees with the reference only up to float32 ulps of the noise term
(times sqrt(2h) * noise_scale), and the table below is set accordingly; without noise
(noise_scale=0) the arithmetic is the same and float64 is compared at float64 precision.
The tables are in conftest.py.
"""

from __future__ import annotations

import pytest
import torch

from conftest import TOLERANCES, TOLERANCES_NO_NOISE, assert_close
from pysampler import ops, rng
from pysampler.backends import native

pytestmark = pytest.mark.skipif(
    not native.available(), reason=f"native extension pysampler._C not built: {native.load_error()}"
)

KNOWN_ANSWER = (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)  # seed 0, offset 0

# (seed, offset): small, 32-bit boundary in the key, offsets whose n draws cross 2**32.
SEED_OFFSETS = [
    (0, 0),
    (1, 7),
    (12345, 2**32 - 3),
    (2**32 - 1, 2**32 - 100),
    (2**32, 5),
    (2**40 + 17, 2**33 - 1),
    (2**63 - 1, 2**62),
]

SHAPES = [(1, 1), (7, 3), (1023, 2), (1025, 5), (6, 2, 3, 4, 5)]  # last: a 4-D event shape


def _rng(seed: int, offset: int) -> torch.Tensor:
    return torch.tensor([seed, offset], dtype=torch.int64)


def _reference(x, grad, step_size, noise_scale, seed, offset):
    """out[i] = x[i] - h*grad[i] + sqrt(2h) * noise_scale * normal(seed, offset + i), in x's dtype."""
    h = step_size.reshape(-1, *([1] * (x.dim() - 1)))
    z = rng.normal(seed, offset, x.shape, dtype=x.dtype)
    return x - h * grad + torch.sqrt(2.0 * h) * noise_scale * z


def _inputs(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype)
    grad = torch.randn(shape, generator=g, dtype=dtype)
    step_size = torch.rand(shape[0], generator=g, dtype=dtype) * 0.2 + 1e-3
    return x, grad, step_size


# --- the Philox stream ------------------------------------------------------------------------


def test_loaded():
    assert native.available()
    assert native.load_error() is None
    assert native.library_path() is not None
    assert hasattr(torch.ops.pysampler, "ula_step")


def test_philox_known_answer():
    words = torch.ops.pysampler.philox_words(0, 0, 1)
    assert words.dtype == torch.int64 and words.shape == (1, 4)
    assert tuple(words[0].tolist()) == KNOWN_ANSWER


@pytest.mark.parametrize("seed, offset", SEED_OFFSETS)
def test_philox_words_match_reference_stream(seed, offset):
    n = 64
    native_words = torch.ops.pysampler.philox_words(seed, offset, n)
    counter = torch.arange(n, dtype=torch.int64) + offset
    zero = torch.zeros_like(counter)
    expected = rng.philox4x32(
        counter & rng.MASK32, counter >> 32, zero, zero, seed & rng.MASK32, (seed >> 32) & rng.MASK32
    )
    for k in range(4):
        assert torch.equal(native_words[:, k], expected[k]), f"word {k} differs at seed={seed}, offset={offset}"


@pytest.mark.parametrize("seed, offset", SEED_OFFSETS)
def test_ula_step_noise_is_the_reference_normal_stream(seed, offset):
    # h = 0.5 and noise_scale = 1 make sqrt(2h) * noise_scale exactly 1: out = 0 - 0 + z.
    shape = (37, 5)
    x = torch.zeros(shape)
    h = torch.full((shape[0],), 0.5)
    out = torch.ops.pysampler.ula_step(x, x, h, 1.0, _rng(seed, offset))
    expected = rng.normal(seed, offset, shape)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
    # float64 chains get the float32 normal cast to double, not a float64 normal.
    out64 = torch.ops.pysampler.ula_step(x.double(), x.double(), h.double(), 1.0, _rng(seed, offset))
    assert torch.equal(out64, out64.float().double())
    torch.testing.assert_close(out64, expected.double(), atol=1e-6, rtol=1e-6)


def test_normals_look_standard():
    x = torch.zeros(1000, 200)
    z = torch.ops.pysampler.ula_step(x, x, torch.full((1000,), 0.5), 1.0, _rng(2024, 0))
    n = z.numel()
    # Mean and variance within 5 standard errors (false-failure rate ~1e-6 each).
    assert abs(z.mean().item()) < 5 / n**0.5
    assert abs(z.var().item() - 1.0) < 5 * (2 / n) ** 0.5
    assert torch.isfinite(z).all()


# --- ula_step numerics ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_ula_step_matches_formula(shape, dtype):
    x, grad, step_size = _inputs(shape, dtype)
    seed, offset = 2**33 + 5, 2**32 - 1000  # counters cross 2**32 inside the larger shapes
    x0, g0, h0 = x.clone(), grad.clone(), step_size.clone()
    out = native.ula_step(x, grad, step_size, 0.7, _rng(seed, offset))
    assert out.shape == x.shape and out.dtype == dtype and out.is_contiguous()
    assert_close(out, _reference(x, grad, step_size, 0.7, seed, offset))
    # inputs untouched
    assert torch.equal(x, x0) and torch.equal(grad, g0) and torch.equal(step_size, h0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_ula_step_without_noise_is_gradient_descent(shape, dtype):
    x, grad, step_size = _inputs(shape, dtype, seed=1)
    out = native.ula_step(x, grad, step_size, 0.0, _rng(3, 4))
    h = step_size.reshape(-1, *([1] * (x.dim() - 1)))
    assert_close(out, x - h * grad, TOLERANCES_NO_NOISE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_ula_step_matches_pysampler_ops_reference(dtype):
    x, grad, step_size = _inputs((33, 4, 3), dtype, seed=2)
    r = _rng(99, 2**32 - 7)
    assert_close(native.ula_step(x, grad, step_size, 1.3, r), ops.ula_step(x, grad, step_size, 1.3, r))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_ula_step_non_contiguous_inputs(dtype):
    g = torch.Generator().manual_seed(3)
    base_x = torch.randn(64, 40, generator=g, dtype=dtype)
    base_g = torch.randn(40, 64, generator=g, dtype=dtype)
    base_h = torch.rand(128, generator=g, dtype=dtype) * 0.1
    x = base_x[:, ::2]  # (64, 20), strided rows
    grad = base_g.t()[:, 1::2]  # (64, 20), transposed and strided
    step_size = base_h[::2]  # (64,), stride 2
    rng_t = torch.tensor([11, -1, 2**32 - 30, -1], dtype=torch.int64)[::2]  # (2,), stride 2
    assert not (x.is_contiguous() or grad.is_contiguous() or step_size.is_contiguous() or rng_t.is_contiguous())
    out = native.ula_step(x, grad, step_size, 0.9, rng_t)
    assert_close(out, _reference(x, grad, step_size, 0.9, 11, 2**32 - 30))
    contiguous = native.ula_step(x.contiguous(), grad.contiguous(), step_size.contiguous(), 0.9, _rng(11, 2**32 - 30))
    assert torch.equal(out, contiguous)


def test_ula_step_channels_last_event():
    x, grad, step_size = _inputs((4, 3, 5, 6), torch.float32, seed=4)
    x_cl = x.to(memory_format=torch.channels_last)
    out = native.ula_step(x_cl, grad, step_size, 1.0, _rng(5, 6))
    assert_close(out, _reference(x, grad, step_size, 1.0, 5, 6))


def test_ula_step_independent_of_thread_count():
    x, grad, step_size = _inputs((1025, 37), torch.float32, seed=5)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native.ula_step(x, grad, step_size, 1.0, _rng(8, 9))
        torch.set_num_threads(max(2, before))
        many = native.ula_step(x, grad, step_size, 1.0, _rng(8, 9))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, many)


def test_ula_step_offset_shifts_the_stream():
    # Element i draws counter offset + i: a step at offset o+k equals the previous one shifted by k.
    x = torch.zeros(10, 3)
    h = torch.full((10,), 0.5)
    a = native.ula_step(x, x, h, 1.0, _rng(7, 100)).flatten()
    b = native.ula_step(x, x, h, 1.0, _rng(7, 103)).flatten()
    assert torch.equal(a[3:], b[:-3])


def test_ula_step_empty():
    x = torch.zeros(0, 3)
    out = native.ula_step(x, x, torch.zeros(0), 1.0, _rng(0, 0))
    assert out.shape == (0, 3)


# --- ula_step with a prior weight: parity with pysampler.ops.ula_step ----------------------------

# (N, *event) with 1, 7, 1023 and 1025 elements per chain: chains shorter than, straddling and
# longer than the kernel's 256-element blocks and its 8-wide vectors, with remainders; the largest
# (17 * 1025 elements) is split over threads in the middle of a chain.
PRIOR_SHAPES = [(1, 1), (5, 1), (3, 7), (33, 7), (2, 1023), (9, 1023), (1, 1025), (17, 1025), (3, 5, 205)]
PRIOR_WEIGHTS = [0.0, 1.0, 0.5]


@pytest.mark.parametrize("noise_scale", [0.0, 1.0])
@pytest.mark.parametrize("prior_weight", PRIOR_WEIGHTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", PRIOR_SHAPES, ids=str)
def test_ula_step_prior_weight_matches_reference(shape, dtype, prior_weight, noise_scale):
    x, grad, step_size = _inputs(shape, dtype, seed=7)  # per-chain step sizes in [1e-3, 0.2]
    r = _rng(2**33 + 1, 2**32 - 3000)  # the counters cross 2**32 inside the larger shapes
    x0, g0, h0, r0 = x.clone(), grad.clone(), step_size.clone(), r.clone()
    out = native.ula_step(x, grad, step_size, noise_scale, r, prior_weight=prior_weight)
    assert out.shape == x.shape and out.dtype == dtype and out.is_contiguous()
    expected = ops.ula_step(x, grad, step_size, noise_scale, r, prior_weight=prior_weight)
    # Without noise both compute (x - h*(grad + w*x)) in the same order: float64 to float64 precision.
    assert_close(out, expected, TOLERANCES if noise_scale else TOLERANCES_NO_NOISE)
    assert torch.equal(x, x0) and torch.equal(grad, g0) and torch.equal(step_size, h0) and torch.equal(r, r0)


@pytest.mark.parametrize("prior_weight", [1.0, 0.5, 0.3, -2.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_ula_step_prior_weight_is_grad_plus_weight_times_x(dtype, prior_weight):
    # The kernel forms grad + w*x in x's dtype (w rounded to it, as torch does for a Python float)
    # before the step, so passing w equals passing that sum as the gradient, bit for bit.
    x, grad, step_size = _inputs((17, 1025), dtype, seed=8)
    for noise_scale in (0.0, 1.0):
        with_prior = native.ula_step(x, grad, step_size, noise_scale, _rng(4, 5), prior_weight=prior_weight)
        summed = native.ula_step(x, grad + prior_weight * x, step_size, noise_scale, _rng(4, 5))
        assert torch.equal(with_prior, summed)


def test_ula_step_prior_weight_default_is_zero():
    x, grad, step_size = _inputs((9, 1023), torch.float32, seed=9)
    default = native.ula_step(x, grad, step_size, 1.0, _rng(6, 7))
    assert torch.equal(default, native.ula_step(x, grad, step_size, 1.0, _rng(6, 7), prior_weight=0.0))
    assert torch.equal(default, torch.ops.pysampler.ula_step(x, grad, step_size, 1.0, _rng(6, 7)))
    assert not torch.equal(default, native.ula_step(x, grad, step_size, 1.0, _rng(6, 7), prior_weight=0.5))


@pytest.mark.parametrize("prior_weight", PRIOR_WEIGHTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_ula_step_prior_weight_infinite_x_matches_reference(dtype, prior_weight):
    # w == 0 skips the prior term, so an infinite x stays infinite (no 0*inf NaN); with w != 0 the
    # step is inf - inf = NaN there, in the reference and the kernel alike. Both paths of the kernel
    # (one chain per block and chains inside a block) and the scalar tails see infinities.
    for shape in [(3, 1025), (40, 7)]:
        x, grad, step_size = _inputs(shape, dtype, seed=10)
        flat = x.view(-1)
        flat[::97] = torch.inf
        flat[5::131] = -torch.inf
        r = _rng(11, 12)
        out = native.ula_step(x, grad, step_size, 1.0, r, prior_weight=prior_weight)
        expected = ops.ula_step(x, grad, step_size, 1.0, r, prior_weight=prior_weight)
        atol, rtol = TOLERANCES[dtype]
        torch.testing.assert_close(out, expected, atol=atol, rtol=rtol, equal_nan=True)
        if prior_weight == 0.0:
            assert not out.isnan().any()
            assert torch.equal(out[x.isinf()], x[x.isinf()])
        else:
            assert out[x.isinf()].isnan().all()


def test_ula_step_prior_weight_independent_of_thread_count():
    x, grad, step_size = _inputs((1025, 37), torch.float32, seed=11)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native.ula_step(x, grad, step_size, 1.0, _rng(8, 9), prior_weight=0.5)
        torch.set_num_threads(max(2, before))
        many = native.ula_step(x, grad, step_size, 1.0, _rng(8, 9), prior_weight=0.5)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, many)


# --- torch.library integration ----------------------------------------------------------------


@pytest.mark.parametrize("prior_weight", [None, 0.0, 0.5])  # None: the schema's default
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_opcheck_ula_step(dtype, prior_weight):
    x, grad, step_size = _inputs((9, 4, 3), dtype, seed=6)
    args = (x, grad, step_size, 0.8, _rng(1, 2))
    op = torch.ops.pysampler.ula_step.default
    if prior_weight is None:
        torch.library.opcheck(op, args)
    else:
        torch.library.opcheck(op, (*args, prior_weight))
        torch.library.opcheck(op, args, {"prior_weight": prior_weight})


def test_meta_kernel_shapes():
    x = torch.empty(5, 3, 2, device="meta")
    out = torch.ops.pysampler.ula_step(x, x, torch.empty(5, device="meta"), 1.0, _rng(0, 0))
    assert out.shape == (5, 3, 2) and out.device.type == "meta"
    out = torch.ops.pysampler.ula_step(x, x, torch.empty(5, device="meta"), 1.0, _rng(0, 0), prior_weight=0.5)
    assert out.shape == (5, 3, 2) and out.device.type == "meta"
    with pytest.raises((RuntimeError, ValueError), match="step_size"):
        torch.ops.pysampler.ula_step(x, x, torch.empty(4, device="meta"), 1.0, _rng(0, 0))


# --- bad inputs -------------------------------------------------------------------------------


def _bad_cases():
    x = torch.zeros(4, 3)
    h = torch.full((4,), 0.1)
    r = _rng(0, 0)
    return [
        ("grad", (x, torch.zeros(4, 2), h, 1.0, r)),  # shape mismatch
        ("grad", (x, torch.zeros(4, 3, dtype=torch.float64), h, 1.0, r)),  # dtype mismatch
        ("x", (torch.zeros(4, 3, dtype=torch.int32), torch.zeros(4, 3, dtype=torch.int32), h, 1.0, r)),
        ("x", (torch.zeros(4, 3, dtype=torch.float16), torch.zeros(4, 3, dtype=torch.float16), h, 1.0, r)),
        ("x", (torch.tensor(1.0), torch.tensor(1.0), h, 1.0, r)),  # 0-d
        ("step_size", (x, x, torch.full((3,), 0.1), 1.0, r)),  # wrong N
        ("step_size", (x, x, torch.full((4, 1), 0.1), 1.0, r)),  # wrong rank
        ("step_size", (x, x, h.double(), 1.0, r)),  # wrong dtype
        ("rng", (x, x, h, 1.0, torch.tensor([0, 0], dtype=torch.int32))),
        ("rng", (x, x, h, 1.0, torch.tensor([0, 0, 0]))),
        (r"rng\[1\] \(offset\)", (x, x, h, 1.0, torch.tensor([0, -5]))),
    ]


@pytest.mark.parametrize("name, args", _bad_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_bad_inputs_name_the_argument(name, args):
    # The message starts with the op and names the argument: "pysampler::ula_step: grad must ...".
    with pytest.raises((RuntimeError, ValueError), match=rf"ula_step.*: {name} must"):
        torch.ops.pysampler.ula_step(*args)


def test_philox_words_bad_inputs():
    with pytest.raises((RuntimeError, ValueError), match="seed"):
        torch.ops.pysampler.philox_words(-1, 0, 1)
    with pytest.raises((RuntimeError, ValueError), match="n must"):
        torch.ops.pysampler.philox_words(0, 0, -1)


# Every CPU op on fixed inputs (a float32 and a float64 case), run in a fresh process: the kernel
# build (csrc/cpu/ops.h) is chosen when the library loads, so each build needs its own process.
_EVERY_OP_SCRIPT = """
import sys, torch
import pysampler as ps
from pysampler.backends import native
ops = torch.ops.pysampler
out = {"capability": ops.cpu_capability()}
for dtype in (torch.float32, torch.float64):
    n, d = 1025, 7
    # inputs from integer arithmetic and one division: the same bits in every process (torch's own
    # vectorised sin, say, may round differently from process to process with the data's alignment)
    x = ((torch.arange(n * d).reshape(n, d) * 7919) % 2001 - 1000).to(dtype) / 500
    g, p, y = x.flip(0), x.roll(1, 0), x + 0.01 * x.flip(1)
    h = torch.linspace(1e-3, 0.2, n, dtype=dtype)
    e, ey = x.square().sum(1), y.square().sum(1)
    rng = torch.tensor([2**35 + 3, 2**32 - 2000])
    t_index = torch.arange(n) % 10
    table = torch.linspace(0.1, 0.9, 10, dtype=dtype)
    results = {
        "ula_step": ops.ula_step(x, g, h, 1.0, rng, 0.5),
        "kinetic_oba": ops.kinetic_oba(x, p, g, h, h * 5, rng),
        "kinetic_bo": ops.kinetic_bo(p, g, h, h * 5, rng),
        "momentum": ops.momentum(rng, x),
        "leapfrog_kick_drift": ops.leapfrog_kick_drift(x, p, g, h / 2, h),
        "kick": ops.kick(p, g, h / 2),
        "mala_accept": ops.mala_accept(x, e, g, y, ey, y.flip(0), h, rng),
        "hmc_accept": ops.hmc_accept(x, e, g, p, y, ey, y.flip(0), p.flip(1), h / 2, rng),
        "q_sample": ops.q_sample(x, t_index, table, table.flip(0), rng),
        "posterior_sample": ops.posterior_sample(x, y, t_index, table, table.flip(0), table / 2, rng),
    }
    # The whole-chain kernel (csrc/cpu/fused.cpp) on an MLP and a Gaussian; U and grad U at x are
    # stand-ins (the kernel takes them as given), so no BLAS result enters the inputs.
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(d, 16), torch.nn.SiLU(), torch.nn.Linear(16, 16), torch.nn.Tanh(),
                              torch.nn.Linear(16, 1)).to(dtype)
    targets = {"mlp": ps.MLPEnergy(mlp, prior_weight=0.5), "gauss": ps.Gaussian(x[0] / 4, 1 + x[1].abs())}
    frozen = torch.zeros(n, dtype=torch.bool)
    for sampler, target in (("ula", "mlp"), ("mala", "mlp"), ("mala", "gauss"), ("hmc", "gauss")):
        kind, params = ps.fused.fused_target(targets[target], dtype)
        results[f"fused_chain-{sampler}-{target}"] = ops.fused_chain(
            sampler, x, e, g, None, h / 4, None, frozen, rng, 4, 0, 2, 2, 1.0, kind, params)[:4]
    for name, value in results.items():
        out[f"{name}-{dtype}"] = value
torch.save(out, sys.argv[1])
"""


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def test_capability_builds_agree(tmp_path):
    # The CPU kernels are built three times on x86-64 (csrc/cpu/ops.h): AVX512 (16-lane at::vec),
    # AVX2 (8-lane at::vec) — each with Philox on as many lanes and SLEEF's vector logf / cosf — and
    # DEFAULT (any CPU: scalar Philox, libm). The library serves the best one the CPU has;
    # PYSAMPLER_NO_AVX512=1 stops at AVX2, PYSAMPLER_NO_AVX2=1 forces DEFAULT. Philox words are
    # integers (bit-identical, see the known-answer test) and the arithmetic is not contracted into
    # FMAs, so the builds differ only by the transcendental functions' ulp: every op agrees to
    # the float tolerance of every backend.
    import os
    import platform
    import subprocess
    import sys

    flags = _cpu_flags()
    x86 = platform.machine() in ("x86_64", "AMD64")
    avx2 = x86 and {"avx2", "fma"} <= flags
    avx512 = avx2 and {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags
    settings = {
        "best": ({}, "AVX512" if avx512 else ("AVX2" if avx2 else "DEFAULT")),
        "no_avx512": ({"PYSAMPLER_NO_AVX512": "1"}, "AVX2" if avx2 else "DEFAULT"),
        "no_avx2": ({"PYSAMPLER_NO_AVX2": "1"}, "DEFAULT"),
    }
    runs = {}
    for name, (extra, expected) in settings.items():
        path = tmp_path / f"{name}.pt"
        env = {k: v for k, v in os.environ.items() if k not in ("PYSAMPLER_NO_AVX2", "PYSAMPLER_NO_AVX512")}
        subprocess.run([sys.executable, "-c", _EVERY_OP_SCRIPT, str(path)], env={**env, **extra}, check=True)
        runs[name] = torch.load(path)
        assert runs[name].pop("capability") == expected, name
    reference = runs.pop("no_avx2")
    for name, run in runs.items():
        assert run.keys() == reference.keys()
        for key, fast in run.items():
            slow = reference[key]
            pairs = zip(fast, slow, strict=True) if isinstance(fast, tuple | list) else [(fast, slow)]
            for a, b in pairs:
                try:
                    assert torch.equal(a, b) if a.dtype == torch.bool else assert_close(a, b) is None
                except AssertionError as exc:
                    raise AssertionError(f"{key}: the {name} and DEFAULT builds differ: {exc}") from None


# ------------------------------------------------------------------------- output-buffer cache
# csrc/cpu_buffers.h: the CPU ops take their outputs of 1 MiB or more from freed blocks of the same
# size, so a sampler's large states stop paying page faults every step.


@pytest.fixture
def buffer_cache():
    previous = native.cpu_buffer_cache_limit(1 << 30)
    native.cpu_buffer_cache_limit(0)  # start empty
    native.cpu_buffer_cache_limit(1 << 30)
    yield
    native.cpu_buffer_cache_limit(previous)


def test_large_outputs_reuse_freed_blocks(buffer_cache):
    x, grad, _ = _inputs((512, 1024), torch.float32)  # 2 MiB outputs
    step = torch.full((512,), 0.01)
    first = native.ula_step(x, grad, step, 1.0, _rng(1, 0))
    address = first.data_ptr()
    assert native.cpu_buffer_cache_bytes() == 0
    del first
    assert native.cpu_buffer_cache_bytes() == x.numel() * 4
    again = native.ula_step(x, grad, step, 1.0, _rng(3, 7))
    assert again.data_ptr() == address and native.cpu_buffer_cache_bytes() == 0
    # a recycled block holds the new result, nothing of the old one
    assert_close(again, _reference(x, grad, step, 1.0, 3, 7))
    # multi-output ops too: kinetic_oba's two outputs come back as two blocks
    del again
    x_out, v_out = native.kinetic_oba(x, grad, x, step, step, _rng(1, 0))
    assert {x_out.data_ptr(), v_out.data_ptr()} >= {address}
    del x_out, v_out
    assert native.cpu_buffer_cache_bytes() == 2 * x.numel() * 4


def test_small_outputs_and_a_zero_limit_bypass_the_cache(buffer_cache):
    x, grad, _ = _inputs((64, 128), torch.float32)  # 32 KiB: glibc recycles these itself
    native.ula_step(x, grad, torch.full((64,), 0.01), 1.0, _rng(1, 0))
    assert native.cpu_buffer_cache_bytes() == 0
    big, big_grad, _ = _inputs((512, 1024), torch.float32)
    native.ula_step(big, big_grad, torch.full((512,), 0.01), 1.0, _rng(1, 0))
    assert native.cpu_buffer_cache_bytes() > 0
    assert native.cpu_buffer_cache_limit(0) == 1 << 30  # returns the previous cap, empties the cache
    assert native.cpu_buffer_cache_bytes() == 0
    native.ula_step(big, big_grad, torch.full((512,), 0.01), 1.0, _rng(1, 0))
    assert native.cpu_buffer_cache_bytes() == 0


def test_buffer_cache_limit_bad_values():
    for bad in (-1, 1.5, "1", True):
        with pytest.raises(ValueError, match="limit_bytes must be a non-negative int"):
            native.cpu_buffer_cache_limit(bad)


@pytest.mark.parametrize(("value", "cached"), [("0", False), ("64", True), ("lots", None)])
def test_buffer_cache_environment_variable(value, cached):
    import os
    import subprocess
    import sys

    script = (
        "import torch\nfrom pysampler.backends import native\n"
        "x = torch.ones(512, 1024)\n"
        "native.ula_step(x, x, torch.full((512,), 0.01), 1.0, torch.tensor([1, 0]))\n"
        "print(native.cpu_buffer_cache_bytes())\n"
    )
    env = dict(os.environ, PYSAMPLER_CPU_CACHE_MB=value)
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    if cached is None:
        assert run.returncode != 0 and "PYSAMPLER_CPU_CACHE_MB must be a non-negative whole number" in run.stderr
    else:
        assert run.returncode == 0, run.stderr
        assert (int(run.stdout) > 0) == cached


# ------------------------------------------------------------------------- kinetic Langevin


KINETIC_SHAPES = [(5, 1), (9, 7), (3, 1023), (2, 1025), (6, 2, 3, 4), (40, 300)]


def _kinetic_inputs(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, v, grad = (torch.randn(shape, generator=g, dtype=dtype) for _ in range(3))
    n = shape[0]
    step_size = torch.rand(n, generator=g, dtype=dtype) * 0.3 + 1e-3
    # Frictions from tiny (γh ~ 1e-7, where 1 − e^{−γh} needs expm1) to large.
    friction = torch.logspace(-4, 1.3, n, dtype=dtype)[torch.randperm(n, generator=g)]
    return x, v, grad, step_size, friction


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", KINETIC_SHAPES)
@pytest.mark.parametrize("seed,offset", SEED_OFFSETS[:4])
def test_kinetic_halves_match_reference(shape, dtype, seed, offset):
    x, v, grad, h, gamma = _kinetic_inputs(shape, dtype)
    r = _rng(seed, offset)
    x1, v1 = native.kinetic_oba(x, v, grad, h, gamma, r)
    rx, rv = ops.kinetic_oba(x, v, grad, h, gamma, r)
    assert_close(x1, rx)
    assert_close(v1, rv)
    assert_close(native.kinetic_bo(v, grad, h, gamma, r), ops.kinetic_bo(v, grad, h, gamma, r))


def test_kinetic_non_contiguous_and_thread_count():
    x, v, grad, h, gamma = _kinetic_inputs((64, 300), torch.float32)
    r = _rng(5, 9)
    want = native.kinetic_oba(x, v, grad, h, gamma, r)
    got = native.kinetic_oba(x.t().contiguous().t(), v.t().contiguous().t(), grad, h, gamma, r)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native.kinetic_oba(x, v, grad, h, gamma, r)
        bo_one = native.kinetic_bo(v, grad, h, gamma, r)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, want, strict=True))
    assert torch.equal(bo_one, native.kinetic_bo(v, grad, h, gamma, r))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_kinetic(dtype):
    x, v, grad, h, gamma = _kinetic_inputs((7, 5), dtype)
    r = _rng(1, 2)
    torch.library.opcheck(torch.ops.pysampler.kinetic_oba.default, (x, v, grad, h, gamma, r))
    torch.library.opcheck(torch.ops.pysampler.kinetic_bo.default, (v, grad, h, gamma, r))


def test_kinetic_bad_inputs_name_the_argument():
    x, v, grad, h, gamma = _kinetic_inputs((4, 3), torch.float32)
    r = _rng(0, 0)
    with pytest.raises(ValueError, match="friction must have shape"):
        native.kinetic_oba(x, v, grad, h, gamma[:2], r)
    with pytest.raises(ValueError, match="v must have the shape of x"):
        native.kinetic_oba(x, v[:, :2], grad, h, gamma, r)
    with pytest.raises(ValueError, match="grad must have the dtype of x"):
        native.kinetic_bo(v, grad.double(), h, gamma, r)
    with pytest.raises(ValueError, match="rng must be an int64"):
        native.kinetic_bo(v, grad, h, gamma, r.int())


# --------------------------------------------------------------------- HMC and MH accept ops


def _accept_args(dtype, n=9, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, grad, y, grad_y, p0, p = (torch.randn(n, d, generator=g, dtype=dtype) for _ in range(6))
    energy, energy_y = torch.randn(n, generator=g, dtype=dtype), torch.randn(n, generator=g, dtype=dtype)
    h = torch.rand(n, generator=g, dtype=dtype) * 0.1 + 1e-3
    return x, energy, grad, y, energy_y, grad_y, p0, p, h


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_hmc_and_accept_ops(dtype):
    x, e, g, y, ey, gy, p0, p, h = _accept_args(dtype)
    r = _rng(3, 2**32 - 1)
    pys = torch.ops.pysampler
    torch.library.opcheck(pys.momentum.default, (r, x))
    torch.library.opcheck(pys.leapfrog_kick_drift.default, (x, p, g, h, h))
    torch.library.opcheck(pys.kick.default, (p, g, h))
    torch.library.opcheck(pys.mala_accept.default, (x, e, g, y, ey, gy, h, r))
    torch.library.opcheck(pys.hmc_accept.default, (x, e, g, p0, y, ey, gy, p, h, r))


def test_accept_ops_independent_of_thread_count():
    x, e, g, y, ey, gy, p0, p, h = _accept_args(torch.float32, n=3000, d=7)
    r = _rng(11, 5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = (native.mala_accept(x, e, g, y, ey, gy, h, r), native.hmc_accept(x, e, g, p0, y, ey, gy, p, h, r))
        torch.set_num_threads(max(2, threads))
        many = (native.mala_accept(x, e, g, y, ey, gy, h, r), native.hmc_accept(x, e, g, p0, y, ey, gy, p, h, r))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, many, strict=True):
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_accept_bad_inputs_name_the_argument():
    x, e, g, y, ey, gy, p0, p, h = _accept_args(torch.float32)
    r = _rng(0, 0)
    with pytest.raises(ValueError, match="mala_accept: energy_y must have shape"):
        torch.ops.pysampler.mala_accept(x, e, g, y, ey[:3], gy, h, r)
    with pytest.raises(ValueError, match="hmc_accept: p0 must have the shape of x"):
        torch.ops.pysampler.hmc_accept(x, e, g, p0[:, :2], y, ey, gy, p, h, r)
    with pytest.raises(ValueError, match="leapfrog_kick_drift: kick_size must have the dtype of x"):
        torch.ops.pysampler.leapfrog_kick_drift(x, p, g, h.double(), h)
    with pytest.raises(ValueError, match="momentum: rng must have shape"):
        torch.ops.pysampler.momentum(torch.tensor([1, 2, 3]), x)


# ---------------------------------------------------------------------------------- diffusion


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_diffusion_ops(dtype):
    g = torch.Generator().manual_seed(0)
    x0, xt = torch.randn(6, 2, 3, generator=g, dtype=dtype), torch.randn(6, 2, 3, generator=g, dtype=dtype)
    t = torch.tensor([0, 3, 1, 2, 3, 0])
    tab = torch.linspace(0.1, 0.9, 4, dtype=dtype)
    r = _rng(4, 2**32 - 7)
    torch.library.opcheck(torch.ops.pysampler.q_sample.default, (x0, t, tab, tab.flip(0), r))
    torch.library.opcheck(torch.ops.pysampler.posterior_sample.default, (x0, xt, t, tab, tab.flip(0), tab * 0.5, r))


def test_diffusion_bad_inputs():
    x0 = torch.zeros(4, 3)
    tab = torch.ones(5)
    r = _rng(0, 0)
    with pytest.raises(ValueError, match="t_index must be an int64"):
        torch.ops.pysampler.q_sample(x0, torch.zeros(4, dtype=torch.int32), tab, tab, r)
    with pytest.raises(ValueError, match="t_index must be in"):
        torch.ops.pysampler.q_sample(x0, torch.tensor([0, 1, 5, 2]), tab, tab, r)
    with pytest.raises(ValueError, match="std must have the dtype of x0"):
        torch.ops.pysampler.posterior_sample(x0, x0, torch.zeros(4, dtype=torch.int64), tab, tab, tab.double(), r)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_meta_kernels_take_half_storage(dtype):
    # Half-precision states (float32 arithmetic) are traced by the Meta kernels (torch.compile of the
    # CUDA ops); per-chain parameters are float32. The CPU kernels themselves take float32/float64.
    m = dict(device="meta")
    x = torch.empty(6, 4, dtype=dtype, **m)
    h = torch.empty(6, dtype=torch.float32, **m)
    r = torch.empty(2, dtype=torch.int64, **m)
    pys = torch.ops.pysampler
    assert pys.ula_step(x, x, h, 1.0, r).dtype == dtype
    assert [t.dtype for t in pys.kinetic_oba(x, x, x, h, h, r)] == [dtype, dtype]
    out = pys.mala_accept(x, h, x, x, h, x, h, r)
    assert [t.dtype for t in out] == [dtype, torch.float32, dtype, torch.float32, torch.bool]
    tab = torch.empty(5, dtype=torch.float32, **m)
    assert pys.posterior_sample(x, x, torch.empty(6, dtype=torch.int64, **m), tab, tab, tab, r).dtype == dtype
    with pytest.raises(ValueError, match=r"step_size must have the dtype of x's arithmetic \(Float\)"):
        pys.ula_step(x, x, h.to(dtype), 1.0, r)
    with pytest.raises(ValueError, match="x must be float32 or float64 for the CPU kernels"):
        xc = torch.zeros(6, 4, dtype=dtype)
        pys.ula_step(xc, xc, torch.full((6,), 0.1), 1.0, torch.tensor([0, 0]))
