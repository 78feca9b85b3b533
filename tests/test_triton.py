"""The Triton backend (pysampler/kernels): every kernel against the reference op on the same stream.

Without a GPU the kernels run on CPU tensors through Triton's interpreter (conftest sets
TRITON_INTERPRET=1 before the kernels are imported); with one they run compiled on CUDA. Shapes
are small (the interpreter costs per program) but include the odd sizes 1, 7, 1023 and 1025 per
chain, multi-dimensional events, per-chain step sizes and non-contiguous inputs.

Tolerances (conftest tables): the normals are float32 Box-Muller values on both sides, but Triton's
log/cos and torch's differ by an ulp or two, so a step with noise agrees to float32 ulps of the
noise term; without noise the same operations run in the same order. Half-precision storage is
float32 arithmetic rounded once: one storage ulp (Triton's interpreter truncates float32 -> bfloat16
where compiled Triton and torch round to nearest even: that too stays within one ulp). The MH
accept kernels sum squares per chain in another order than torch's norm, so accept probabilities
agree to float32 (float64) rounding of sums of D terms; decisions are compared away from the tie band |u − α| < that error.
"""

from __future__ import annotations

import pytest
import torch

import pysampler as ps
from conftest import TOLERANCES, TRITON_DEVICE, assert_close, assert_close_compiled_noise
from pysampler import ops

pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(
    "triton" not in ps.available_backends(TRITON_DEVICE),
    reason=f"Triton backend not available on {TRITON_DEVICE}: {ps.backends.triton.load_error()}",
)

DEV = TRITON_DEVICE
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# (N, *event): D = 1, 7, 1023, 1025 elements per chain, a 3-D event, and one chain.
SHAPES = [(5, 1), (9, 7), (3, 1023), (2, 1025), (4, 3, 2, 5), (1, 6)]
# (seed, offset): offsets whose draws cross 2**32; a seed >= 2**63 (stored negative in int64).
SEED_OFFSETS = [(7, 0), (12345, 2**32 - 50), (2**64 - 5, 3)]


@pytest.fixture(scope="module")
def triton():
    return ps.backends.resolve("triton", DEV)


def _rng(seed: int, offset: int) -> torch.Tensor:
    return torch.tensor([seed - 2**64 if seed >= 2**63 else seed, offset], dtype=torch.int64, device=DEV)


def _interpreted() -> bool:
    from pysampler.kernels import common

    return common.INTERPRETED


def _compute(dtype):
    return ops.compute_dtype(dtype)


def _inputs(shape, dtype, n_tensors, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64).to(dtype=dtype, device=DEV) for _ in range(n_tensors)]


def _per_chain(n, dtype, lo, hi, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)).to(dtype=_compute(dtype), device=DEV)


def _close(actual, expected, table=TOLERANCES):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if table is TOLERANCES and not _interpreted():
        assert_close_compiled_noise(actual.cpu(), expected.cpu())
    else:
        assert_close(actual.cpu(), expected.cpu(), table)


# ---------------------------------------------------------------------------------- interpreter


def test_kernels_run_where_expected():
    from pysampler.kernels import common

    assert common.INTERPRETED == (DEV == "cpu")
    assert "triton" not in ps.available_backends("meta")


# ------------------------------------------------------------------- Triton-specific behaviour


def test_diffusion_public_api_on_triton():
    sched = ps.diffusion.VPSchedule(8)
    x0, xt = _inputs((33, 3, 4), torch.float32, 2)
    t = torch.arange(33, device=DEV) % 8 + 1
    for fn in (
        lambda be: ps.diffusion.posterior_sample(sched, x0, xt, t, seed=3, offset=11, backend=be),
        lambda be: sched.q_sample(x0, t, seed=3, offset=11, backend=be),
    ):
        _close(fn("triton"), fn("torch"))
    # t = 1: zero posterior variance, x_{t-1} = x0 exactly.
    out = ps.diffusion.posterior_sample(sched, x0, xt, 1, seed=0, backend="triton")
    assert torch.equal(out, x0)


def test_bad_inputs_name_the_argument(triton):
    x, grad = _inputs((4, 3), torch.float32, 2)
    h = torch.full((4,), 0.1, device=DEV)
    r = _rng(0, 0)
    with pytest.raises(ValueError, match="grad must match x"):
        triton.ula_step(x, grad[:, :2], h, 1.0, r)
    with pytest.raises(ValueError, match=r"step_size must be a floating \(4,\) tensor"):
        triton.ula_step(x, grad, h[:3], 1.0, r)
    with pytest.raises(ValueError, match="rng must be an int64"):
        triton.ula_step(x, grad, h, 1.0, r.float())
    with pytest.raises(TypeError, match="x must be float16, bfloat16, float32 or float64"):
        triton.ula_step(x.int(), grad.int(), h, 1.0, r)
    with pytest.raises(ValueError, match="t_index must be an int64"):
        triton.q_sample(x, torch.zeros(4, dtype=torch.int32, device=DEV), h, h, r)


def test_auto_picks_triton_on_cuda_only():
    x0 = torch.zeros(2, 2, device=DEV)
    res = ps.sample(lambda x: 0.5 * x.square().sum(1), x0, ps.ULA(0.1), 1)
    assert res.backend == ("triton" if DEV == "cuda" else "cpp" if "cpp" in ps.available_backends("cpu") else "torch")


# --------------------------------------------------------------------------------- GPU only
# Compilation, operator checks and CUDA-graph capture need the compiled kernels on a GPU; in the
# interpreter fake-tensor tracing of triton_op does not work (../shared/DESIGN.md).

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (compiled Triton kernels)")


def _op_samples():
    """(op, args) for every registered Triton op, small float32 CUDA inputs."""
    n, d = 8, 5
    x, grad, v, y, grad_y, p = _inputs((n, d), torch.float32, 6)
    h = _per_chain(n, torch.float32, 0.01, 0.1)
    e = _per_chain(n, torch.float32, -1.0, 1.0, seed=3)
    r = _rng(3, 7)
    t = torch.arange(n, device=DEV) % 4
    tab = torch.linspace(0.1, 0.9, 4, device=DEV)
    ops_ = torch.ops.pysampler
    return [
        (ops_.triton_ula_step.default, (x, grad, h, 1.0, r, 0.5)),
        (ops_.triton_mala_accept.default, (x, e, grad, y, e + 0.1, grad_y, h, r)),
        (ops_.triton_kinetic_oba.default, (x, v, grad, h, h, r)),
        (ops_.triton_kinetic_bo.default, (v, grad, h, h, r)),
        (ops_.triton_momentum.default, (r, x)),
        (ops_.triton_leapfrog_kick_drift.default, (x, p, grad, h, h)),
        (ops_.triton_kick.default, (p, grad, h)),
        (ops_.triton_hmc_accept.default, (x, e, grad, p, y, e + 0.1, grad_y, p, h, r)),
        (ops_.triton_q_sample.default, (x, t, tab, tab, r)),
        (ops_.triton_posterior_sample.default, (x, y, t, tab, tab, tab, r)),
    ]


@gpu
def test_opcheck_every_op(triton):
    for op, args in _op_samples():
        torch.library.opcheck(op, args)


@gpu
def test_torch_compile_fullgraph(triton):
    for op, args in _op_samples():
        torch._dynamo.reset()  # one code object for every op's lambda: start afresh (recompile limit)
        compiled = torch.compile(lambda *a, op=op: op(*a), fullgraph=True)
        got, want = compiled(*args), op(*args)
        for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,), strict=True):
            torch.testing.assert_close(g, w, atol=0, rtol=0)


@gpu
def test_cuda_graph_capture_of_a_k_step_chain(triton):
    # K ULA steps of an nn.Module energy captured once and replayed: the kernels read (seed, offset)
    # from device memory, so each replay continues the stream with no host sync.
    from pysampler.samplers.base import advance

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.SiLU(), torch.nn.Linear(64, 1)).to(DEV)
    target = ps.EnergyTarget(lambda x: model(x).squeeze(-1) + 0.5 * x.square().sum(1))
    k, n = 10, 256
    h = torch.full((n,), 0.01, device=DEV)
    x_static = torch.randn(n, 8, device=DEV)
    rng_static = _rng(42, 0)

    def chain(x, r):
        for _ in range(k):
            _, grad = target.energy_and_grad(x)
            x = triton.ula_step(x, grad, h, 1.0, r)
            r = advance(r, x.numel())
        return x, r

    start = x_static.clone()
    want_1, r1 = chain(start, rng_static.clone())
    want_2, _ = chain(want_1, r1)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up (autograd, allocator) outside the capture
        chain(x_static, rng_static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out_x, out_r = chain(x_static, rng_static)
    graph.replay()
    torch.testing.assert_close(out_x, want_1, atol=1e-5, rtol=1e-5)
    x_static.copy_(out_x)
    rng_static.copy_(out_r)
    graph.replay()
    torch.testing.assert_close(out_x, want_2, atol=1e-5, rtol=1e-5)
    assert int(out_r[1]) == 2 * k * x_static.numel()


@gpu
@pytest.mark.parametrize("name", ["ULA", "MALA", "KineticLangevin", "HMC"])
def test_statistics_on_gpu(name):
    from test_sampler_statistics import CASES_2D, COV2, MEAN2, overdispersed_start

    from conftest import assert_gaussian_moments

    sampler, n_steps, cov = CASES_2D[name]
    target = ps.Gaussian(MEAN2.to(DEV), scale_tril=torch.linalg.cholesky(COV2).to(DEV))
    res = ps.sample(target, overdispersed_start(8000, 2).to(DEV), sampler, n_steps, seed=11, backend="triton")
    assert res.backend == "triton"
    assert_gaussian_moments(res.x.cpu(), MEAN2, cov)
