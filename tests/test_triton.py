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
from conftest import TOLERANCES, TOLERANCES_NO_NOISE, TRITON_DEVICE, assert_close
from pysampler import ops, rng

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
        _close_compiled_noise(actual.cpu(), expected.cpu())
    else:
        assert_close(actual.cpu(), expected.cpu(), table)


def _close_compiled_noise(actual, expected, tol=1e-5, rare=1e-3, loose=1e-3):
    """Noise-bearing results of the compiled kernels against the reference on the GPU.

    Compiled Triton evaluates tl.randn's log and cos through libdevice (accurate), but its sqrt,
    exp and float32 division are the GPU's approximate instructions and it contracts a·b + c into
    FMAs, so results sit a float32 ulp or so from torch's; Box-Muller's radius sqrt(-2 log u)
    amplifies such errors for the rare draws with u near 1, and a float32 ulp can flip the rounding
    of a half-precision store. All elements must agree to ``loose`` (or one storage ulp, whichever
    is larger); all but a fraction ``rare`` to ``tol`` (or the conftest table). A wrong index or
    formula breaks most elements, so the check keeps its power. The interpreter (NumPy arithmetic)
    is held to the conftest table.
    """
    lo, rel = TOLERANCES[expected.dtype]
    a, e = actual.double(), expected.double()
    err = (a - e).abs()
    bound = max(tol, lo) + max(tol, rel) * e.abs()
    assert bool((err <= max(loose, lo) + max(loose, rel) * e.abs()).all()), f"max error {err.max():.3g}"
    frac = float((err > bound).double().mean())
    assert frac <= rare, f"{frac:.2%} of elements beyond {tol:g}: max error {err.max():.3g}"


# ---------------------------------------------------------------------------------- interpreter


def test_kernels_run_where_expected():
    from pysampler.kernels import common

    assert common.INTERPRETED == (DEV == "cpu")
    assert "triton" not in ps.available_backends("meta")


# ------------------------------------------------------------------------------ elementwise ops


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
# 0.3 and 0.1 are not float32 numbers: float64 kernels must still use them at double precision.
@pytest.mark.parametrize("noise_scale,prior_weight", [(1.0, 0.0), (0.0, 0.0), (0.5, 1.0), (1.0, 0.25), (0.3, 0.1), (0.0, 0.1)])
def test_ula_step(triton, dtype, shape, noise_scale, prior_weight):
    x, grad = _inputs(shape, dtype, 2)
    h = _per_chain(shape[0], dtype, 0.01, 0.3)
    for seed, offset in SEED_OFFSETS:
        r = _rng(seed, offset)
        out = triton.ula_step(x, grad, h, noise_scale, r, prior_weight)
        ref = ops.ula_step(x, grad, h, noise_scale, r, prior_weight)
        _close(out, ref, TOLERANCES if noise_scale else TOLERANCES_NO_NOISE)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_kinetic_obabo_halves(triton, dtype, shape):
    x, v, grad = _inputs(shape, dtype, 3)
    h = _per_chain(shape[0], dtype, 0.01, 0.3)
    # Frictions from tiny (γh ~ 1e-6, where 1 − e^{−γh} needs expm1) to large.
    gamma = _per_chain(shape[0], dtype, 1e-4, 20.0, seed=2)
    for seed, offset in SEED_OFFSETS[:2]:
        r = _rng(seed, offset)
        x1, v1 = triton.kinetic_oba(x, v, grad, h, gamma, r)
        rx, rv = ops.kinetic_oba(x, v, grad, h, gamma, r)
        _close(x1, rx)
        _close(v1, rv)
        _close(triton.kinetic_bo(v, grad, h, gamma, r), ops.kinetic_bo(v, grad, h, gamma, r))


def test_ou_noise_scale_for_tiny_friction(triton):
    # √(1 − e^{−γh}) at γh = 1e-7: naive 1 − exp loses all digits in float32; expm1 keeps them.
    x = torch.zeros(1, 4096, device=DEV)
    h = torch.full((1,), 0.1, device=DEV)
    gamma = torch.full((1,), 1e-6, device=DEV)
    _, v = triton.kinetic_oba(x, x, x, h, gamma, _rng(3, 0))
    z = rng.normal(3, 0, (1, 4096), device=DEV)
    ratio = float((v / z).median())
    assert abs(ratio - (1e-7) ** 0.5) < 1e-6 * (1e-7) ** 0.5 * 10


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_hmc_elementwise(triton, dtype, shape):
    x, p, grad = _inputs(shape, dtype, 3)
    h = _per_chain(shape[0], dtype, 0.01, 0.3)
    k = 0.5 * h
    x1, p1 = triton.leapfrog_kick_drift(x, p, grad, k, h)
    rx, rp = ops.leapfrog_kick_drift(x, p, grad, k, h)
    _close(x1, rx, TOLERANCES_NO_NOISE)
    _close(p1, rp, TOLERANCES_NO_NOISE)
    _close(triton.kick(p, grad, k), ops.kick(p, grad, k), TOLERANCES_NO_NOISE)
    for seed, offset in SEED_OFFSETS:
        r = _rng(seed, offset)
        _close(triton.momentum(r, x), ops.momentum(r, x))


# ----------------------------------------------------------------------------- MH accept kernels


def _accept_tolerance(dtype, d):
    # Sums of d squares in another order: relative error ~ d·eps of the compute dtype, divided by 4h.
    eps = torch.finfo(_compute(dtype)).eps
    return 50 * d * eps


def _check_accept(out, ref, u, current, proposed, dtype, d):
    """Compare (x, energy, grad, accept_prob, accepted) with the reference away from the tie band."""
    tol = _accept_tolerance(dtype, d)
    torch.testing.assert_close(out[3].cpu(), ref[3].cpu(), atol=tol, rtol=tol)
    clear = ((u - ref[3].cpu().double()).abs() > 2 * tol).to(DEV)
    assert bool(clear.any())
    assert torch.equal(out[4][clear], ref[4][clear])
    acc = out[4]
    # Every output row is exactly the kept or the proposed input row (a copy, no arithmetic).
    for got, cur, prop in zip(out[:3], current, proposed, strict=True):
        want = torch.where(acc.reshape(-1, *([1] * (cur.ndim - 1))), prop, cur)
        assert got.dtype == cur.dtype and torch.equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(700, 3)])
def test_mala_accept(triton, dtype, shape):
    x, grad, noise, grad_y = _inputs(shape, dtype, 4)
    n = shape[0]
    d = x[0].numel()
    h = _per_chain(n, dtype, 0.001, 0.05)
    y = (x.to(torch.float64) + 0.05 * noise.to(torch.float64)).to(dtype)  # a nearby proposal
    e = _per_chain(n, dtype, -1.0, 1.0, seed=3)
    e_y = e + _per_chain(n, dtype, -0.5, 0.5, seed=4)
    r = _rng(99, 2**32 - 3)
    out = triton.mala_accept(x, e, grad, y, e_y, grad_y, h, r)
    ref = ops.mala_accept(x, e, grad, y, e_y, grad_y, h, r)
    u = rng.uniform(99, 2**32 - 3, n).double()
    _check_accept(out, ref, u, (x, e, grad), (y, e_y, grad_y), dtype, d)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(700, 3)])
def test_hmc_accept(triton, dtype, shape):
    x, grad, p0, y, grad_y, p = _inputs(shape, dtype, 6)
    n = shape[0]
    d = x[0].numel()
    e = _per_chain(n, dtype, -1.0, 1.0, seed=3)
    # Energies chosen so that H changes by O(1): a mix of accepts and rejects.
    k = _per_chain(n, dtype, 0.01, 0.1, seed=5)  # the closing half kick, applied inside
    p_end = p.to(_compute(dtype)) - ops.per_chain(k, p) * grad_y.to(_compute(dtype))
    ke0 = 0.5 * p0.to(_compute(dtype)).flatten(1).square().sum(1)
    ke1 = 0.5 * p_end.flatten(1).square().sum(1)
    e_y = e + ke0 - ke1 + _per_chain(n, dtype, -1.5, 1.0, seed=4)
    r = _rng(5, 17)
    out = triton.hmc_accept(x, e, grad, p0, y, e_y, grad_y, p, k, r)
    ref = ops.hmc_accept(x, e, grad, p0, y, e_y, grad_y, p, k, r)
    u = rng.uniform(5, 17, n).double()
    _check_accept(out, ref, u, (x, e, grad), (y, e_y, grad_y), dtype, d)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's NumPy on NaN
@pytest.mark.parametrize("op", ["mala", "hmc"])
def test_accept_rejects_non_finite_proposals(triton, op):
    n, d = 6, 5
    x, grad, y, grad_y, p = _inputs((n, d), torch.float32, 5)
    e = torch.zeros(n, device=DEV)
    e_y = torch.full((n,), -100.0, device=DEV)  # α = 1 for every finite proposal
    y[1, 2] = float("inf")
    y[2, 0] = float("nan")
    grad_y[3, 4] = float("nan")
    e_y[4] = float("nan")
    e_y[5] = float("-inf")
    r = _rng(1, 0)
    if op == "mala":
        h = torch.full((n,), 1e-4, device=DEV)
        x_, e_, g_, prob, acc = triton.mala_accept(x, e, grad, y, e_y, grad_y, h, r)
        want = [True, False, False, False, False, False]
    else:
        p0 = p.clone()
        k = torch.full((n,), 1e-4, device=DEV)
        x_, e_, g_, prob, acc = triton.hmc_accept(x, e, grad, p0, y, e_y, grad_y, p, k, r)
        # A non-finite ∇U(y) enters H through the closing kick: chain 3 is rejected too.
        want = [True, False, False, False, False, False]
    assert acc.tolist() == want
    assert bool(torch.isfinite(prob).all()) and prob[~acc].eq(0).all()
    assert torch.equal(x_[~acc], x[~acc]) and torch.equal(g_[~acc], grad[~acc]) and torch.equal(e_[~acc], e[~acc])


# ------------------------------------------------------------------------------------- diffusion


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_diffusion_ops(triton, dtype, shape):
    sched = ps.diffusion.VPSchedule(10)
    x0, xt = _inputs(shape, dtype, 2)
    n = shape[0]
    t = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(n)).to(DEV)
    cdt = _compute(dtype)
    names = ("posterior_mean_coef_x0", "posterior_mean_coef_xt", "posterior_std")
    tables = [getattr(sched, k).to(device=DEV, dtype=cdt) for k in names]
    names = ("sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod")
    q_tables = [getattr(sched, k).to(device=DEV, dtype=cdt) for k in names]
    for seed, offset in SEED_OFFSETS:
        r = _rng(seed, offset)
        _close(triton.posterior_sample(x0, xt, t, *tables, r), ops.posterior_sample(x0, xt, t, *tables, r))
        _close(triton.q_sample(x0, t, *q_tables, r), ops.q_sample(x0, t, *q_tables, r))


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


# ---------------------------------------------------------------------------- layouts and errors


def test_non_contiguous_inputs(triton):
    base, gbase = _inputs((6, 10), torch.float32, 2)
    x, grad = base.t(), gbase.t()  # (10, 6) transposed views
    assert not x.is_contiguous()
    h = _per_chain(10, torch.float32, 0.01, 0.1)
    r = _rng(4, 4)
    _close(triton.ula_step(x, grad, h, 1.0, r), ops.ula_step(x, grad, h, 1.0, r))
    same = triton.ula_step(x.contiguous(), grad.contiguous(), h, 1.0, r)
    _close(triton.ula_step(x, grad, h, 1.0, r), same, TOLERANCES_NO_NOISE)


def test_inputs_are_not_modified(triton):
    x, grad, v = _inputs((4, 9), torch.float32, 3)
    h = _per_chain(4, torch.float32, 0.01, 0.1)
    saved = [t.clone() for t in (x, grad, v, h)]
    r = _rng(1, 2)
    triton.ula_step(x, grad, h, 1.0, r)
    triton.kinetic_oba(x, v, grad, h, h, r)
    triton.kinetic_bo(v, grad, h, h, r)
    for a, b in zip((x, grad, v, h), saved, strict=True):
        assert torch.equal(a, b)
    assert r.tolist() == [1, 2]


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


# ------------------------------------------------------------------------------ whole samplers


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "sampler",
    [ps.ULA(0.05), ps.ULA(0.05, noise_scale=0.0), ps.MALA(0.1), ps.KineticLangevin(0.1, 1.5), ps.HMC(0.1, 3)],
    ids=["ULA", "ULA-noise-free", "MALA", "KLA", "HMC"],
)
def test_sampler_chains_match_reference(sampler, dtype):
    # The same seed gives the same chains on backend="triton" and the reference, to float precision.
    target = ps.Gaussian(torch.tensor([1.0, -1.0, 0.5], device=DEV), torch.tensor([1.0, 0.5, 2.0], device=DEV))
    x0 = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=dtype).to(DEV)
    step_size = torch.linspace(0.05, 0.15, 64, dtype=ops.compute_dtype(dtype), device=DEV)  # per chain
    sampler = type(sampler)(**{**sampler.__dict__, "step_size": step_size})
    ref = ps.sample(target, x0, sampler, 15, seed=8, backend="torch")
    out = ps.sample(target, x0, sampler, 15, seed=8, backend="triton")
    assert out.backend == "triton" and out.x.dtype == dtype
    if dtype in (torch.float32, torch.float64) and _interpreted():
        tol = 1e-5 if dtype == torch.float32 else 1e-6
        torch.testing.assert_close(out.x, ref.x, atol=tol, rtol=tol)
        torch.testing.assert_close(out.accept_rate, ref.accept_rate)
    elif dtype in (torch.float32, torch.float64):
        # Compiled: the noise agrees to float32 ulps but for rare small-radius draws (see
        # _close_compiled_noise); over 15 steps those errors contract or stay put.
        _close_compiled_noise(out.x.cpu(), ref.x.cpu(), tol=1e-4, rare=0.02, loose=1e-2)
    elif dtype == torch.bfloat16 and _interpreted():
        # Triton's interpreter casts float32 -> bfloat16 by truncation (compiled Triton rounds to
        # nearest even, as torch does), so each bfloat16 store may sit one ulp off the reference and
        # the chains drift apart by a few ulps (each op is checked to one ulp above).
        assert float((out.x.float() - ref.x.float()).abs().median()) <= 8 * torch.finfo(dtype).eps
    else:
        # The same float32 arithmetic rounded once per store: the chains agree to a storage ulp.
        _close(out.x, ref.x)
    assert int(out.state.rng[1]) == int(ref.state.rng[1])


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
