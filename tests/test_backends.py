"""Every fast backend's step ops against the reference ops on the same inputs and random stream.

Backends under test (each skipped where it is not available): "cpp" (the native CPU ops, csrc/cpu),
"triton" (pysampler/kernels: on CUDA when there is a GPU, else on CPU tensors through Triton's
interpreter, which conftest switches on) and "cuda" (csrc/cuda, when built with CUDA and run on a
GPU). An op or dtype a backend does not implement is skipped
for it (it would run the reference). Shapes include the odd sizes 1, 7, 1023 and 1025 per chain,
multi-dimensional events, one chain, per-chain step sizes and non-contiguous inputs.

Tolerances (conftest tables): the normals are float32 Box-Muller values on every backend, but the
backends' log/cos (libm, SLEEF, NumPy, libdevice) differ by an ulp or two, so a step with noise
agrees to float32 ulps of the noise term; without noise the same operations run in the same order.
Half-precision storage is float32 arithmetic rounded once: one storage ulp (Triton's interpreter
truncates float32 -> bfloat16 where compiled Triton and torch round to nearest even: that too stays
within one ulp). The MH accept ops sum squares per chain in another order than torch's norm, so
accept probabilities agree to float32 (float64) rounding of sums of D terms; decisions are compared
away from the tie band |u − α| < that error.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import pysampler as ps
from conftest import TOLERANCES, TOLERANCES_NO_NOISE, TRITON_DEVICE, assert_close, assert_close_compiled_noise
from pysampler import ops, rng

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# (N, *event): D = 1, 7, 1023, 1025 elements per chain, a 3-D event, and one chain.
SHAPES = [(5, 1), (9, 7), (3, 1023), (2, 1025), (4, 3, 2, 5), (1, 6)]
# (seed, offset): offsets whose draws cross 2**32; a seed >= 2**63 (stored negative in int64).
SEED_OFFSETS = [(7, 0), (12345, 2**32 - 50), (2**64 - 5, 3)]


@dataclass(frozen=True)
class Impl:
    name: str
    device: str

    @property
    def backend(self) -> ps.backends.Backend:
        return ps.backends.resolve(self.name, self.device)

    @property
    def compiled_triton(self) -> bool:
        if self.name != "triton":
            return False
        from pysampler.kernels import common

        return not common.INTERPRETED

    @property
    def exact_noise(self) -> bool:
        """Normals within the conftest table of the reference's (see _close_compiled_noise)."""
        return not self.compiled_triton

    @property
    def truncates_bf16(self) -> bool:
        return self.name == "triton" and not self.compiled_triton

    def require(self, *op_names: str, dtype: torch.dtype | None = None) -> None:
        be = self.backend
        missing = [op for op in op_names if op not in be.overrides]
        if missing:
            pytest.skip(f"backend {self.name!r} has no {missing} of its own (it would run the reference)")
        if dtype is not None and dtype not in be.dtypes:
            pytest.skip(f"backend {self.name!r} does not take {dtype} states")


IMPLS = [Impl("cpp", "cpu"), Impl("triton", TRITON_DEVICE), Impl("cuda", "cuda")]


@pytest.fixture(params=IMPLS, ids=[i.name for i in IMPLS])
def impl(request) -> Impl:
    if request.param.name not in ps.available_backends(request.param.device):
        pytest.skip(f"backend {request.param.name!r} not available on {request.param.device}")
    return request.param


def _rng(seed: int, offset: int, dev) -> torch.Tensor:
    return torch.tensor([seed - 2**64 if seed >= 2**63 else seed, offset], dtype=torch.int64, device=dev)


def _compute(dtype):
    return ops.compute_dtype(dtype)


def _inputs(shape, dtype, n_tensors, dev, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64).to(dtype=dtype, device=dev) for _ in range(n_tensors)]


def _per_chain(n, dtype, lo, hi, seed=1, dev="cpu"):
    g = torch.Generator().manual_seed(seed)
    return (lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)).to(dtype=_compute(dtype), device=dev)


def _close(impl, actual, expected, table=TOLERANCES):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if table is TOLERANCES and not impl.exact_noise:
        assert_close_compiled_noise(actual.cpu(), expected.cpu())
    else:
        assert_close(actual.cpu(), expected.cpu(), table)


# ------------------------------------------------------------------------------ elementwise ops


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
# 0.3 and 0.1 are not float32 numbers: float64 kernels must still use them at double precision.
@pytest.mark.parametrize("noise_scale,prior_weight", [(1.0, 0.0), (0.0, 0.0), (0.5, 1.0), (1.0, 0.25), (0.3, 0.1), (0.0, 0.1)])
def test_ula_step(impl, dtype, shape, noise_scale, prior_weight):
    be, dev = impl.backend, impl.device
    impl.require("ula_step", dtype=dtype)
    x, grad = _inputs(shape, dtype, 2, dev)
    h = _per_chain(shape[0], dtype, 0.01, 0.3, dev=dev)
    for seed, offset in SEED_OFFSETS:
        r = _rng(seed, offset, dev)
        out = be.ula_step(x, grad, h, noise_scale, r, prior_weight)
        ref = ops.ula_step(x, grad, h, noise_scale, r, prior_weight)
        _close(impl, out, ref, TOLERANCES if noise_scale else TOLERANCES_NO_NOISE)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_kinetic_obabo_halves(impl, dtype, shape):
    be, dev = impl.backend, impl.device
    impl.require("kinetic_oba", "kinetic_bo", dtype=dtype)
    x, v, grad = _inputs(shape, dtype, 3, dev)
    h = _per_chain(shape[0], dtype, 0.01, 0.3, dev=dev)
    # Frictions from tiny (γh ~ 1e-6, where 1 − e^{−γh} needs expm1) to large.
    gamma = _per_chain(shape[0], dtype, 1e-4, 20.0, seed=2, dev=dev)
    for seed, offset in SEED_OFFSETS[:2]:
        r = _rng(seed, offset, dev)
        x1, v1 = be.kinetic_oba(x, v, grad, h, gamma, r)
        rx, rv = ops.kinetic_oba(x, v, grad, h, gamma, r)
        _close(impl, x1, rx)
        _close(impl, v1, rv)
        _close(impl, be.kinetic_bo(v, grad, h, gamma, r), ops.kinetic_bo(v, grad, h, gamma, r))


def test_ou_noise_scale_for_tiny_friction(impl):
    be, dev = impl.backend, impl.device
    impl.require("kinetic_oba")
    # √(1 − e^{−γh}) at γh = 1e-7: naive 1 − exp loses all digits in float32; expm1 keeps them.
    x = torch.zeros(1, 4096, device=dev)
    h = torch.full((1,), 0.1, device=dev)
    gamma = torch.full((1,), 1e-6, device=dev)
    _, v = be.kinetic_oba(x, x, x, h, gamma, _rng(3, 0, dev))
    z = rng.normal(3, 0, (1, 4096), device=dev)
    ratio = float((v / z).median())
    assert abs(ratio - (1e-7) ** 0.5) < 1e-6 * (1e-7) ** 0.5 * 10


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_hmc_elementwise(impl, dtype, shape):
    be, dev = impl.backend, impl.device
    impl.require("leapfrog_kick_drift", "kick", "momentum", dtype=dtype)
    x, p, grad = _inputs(shape, dtype, 3, dev)
    h = _per_chain(shape[0], dtype, 0.01, 0.3, dev=dev)
    k = 0.5 * h
    x1, p1 = be.leapfrog_kick_drift(x, p, grad, k, h)
    rx, rp = ops.leapfrog_kick_drift(x, p, grad, k, h)
    _close(impl, x1, rx, TOLERANCES_NO_NOISE)
    _close(impl, p1, rp, TOLERANCES_NO_NOISE)
    _close(impl, be.kick(p, grad, k), ops.kick(p, grad, k), TOLERANCES_NO_NOISE)
    for seed, offset in SEED_OFFSETS:
        r = _rng(seed, offset, dev)
        _close(impl, be.momentum(r, x), ops.momentum(r, x))


# ----------------------------------------------------------------------------- MH accept kernels


def _accept_tolerance(dtype, d):
    # Sums of d squares in another order: relative error ~ d·eps of the compute dtype, divided by 4h.
    eps = torch.finfo(_compute(dtype)).eps
    return 50 * d * eps


def _check_accept(out, ref, u, current, proposed, dtype, d):
    """Compare (x, energy, grad, accept_prob, accepted) with the reference away from the tie band."""
    tol = _accept_tolerance(dtype, d)
    torch.testing.assert_close(out[3].cpu(), ref[3].cpu(), atol=tol, rtol=tol)
    clear = ((u - ref[3].cpu().double()).abs() > 2 * tol).to(out[4].device)
    assert bool(clear.any())
    assert torch.equal(out[4][clear], ref[4][clear])
    acc = out[4]
    # Every output row is exactly the kept or the proposed input row (a copy, no arithmetic).
    for got, cur, prop in zip(out[:3], current, proposed, strict=True):
        want = torch.where(acc.reshape(-1, *([1] * (cur.ndim - 1))), prop, cur)
        assert got.dtype == cur.dtype and torch.equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(700, 3)])
def test_mala_accept(impl, dtype, shape):
    be, dev = impl.backend, impl.device
    impl.require("mala_accept", dtype=dtype)
    x, grad, noise, grad_y = _inputs(shape, dtype, 4, dev)
    n = shape[0]
    d = x[0].numel()
    h = _per_chain(n, dtype, 0.001, 0.05, dev=dev)
    y = (x.to(torch.float64) + 0.05 * noise.to(torch.float64)).to(dtype)  # a nearby proposal
    e = _per_chain(n, dtype, -1.0, 1.0, seed=3, dev=dev)
    e_y = e + _per_chain(n, dtype, -0.5, 0.5, seed=4, dev=dev)
    r = _rng(99, 2**32 - 3, dev)
    out = be.mala_accept(x, e, grad, y, e_y, grad_y, h, r)
    ref = ops.mala_accept(x, e, grad, y, e_y, grad_y, h, r)
    u = rng.uniform(99, 2**32 - 3, n).double()
    _check_accept(out, ref, u, (x, e, grad), (y, e_y, grad_y), dtype, d)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(700, 3)])
def test_hmc_accept(impl, dtype, shape):
    be, dev = impl.backend, impl.device
    impl.require("hmc_accept", dtype=dtype)
    x, grad, p0, y, grad_y, p = _inputs(shape, dtype, 6, dev)
    n = shape[0]
    d = x[0].numel()
    e = _per_chain(n, dtype, -1.0, 1.0, seed=3, dev=dev)
    # Energies chosen so that H changes by O(1): a mix of accepts and rejects.
    k = _per_chain(n, dtype, 0.01, 0.1, seed=5, dev=dev)  # the closing half kick, applied inside
    p_end = p.to(_compute(dtype)) - ops.per_chain(k, p) * grad_y.to(_compute(dtype))
    ke0 = 0.5 * p0.to(_compute(dtype)).flatten(1).square().sum(1)
    ke1 = 0.5 * p_end.flatten(1).square().sum(1)
    e_y = e + ke0 - ke1 + _per_chain(n, dtype, -1.5, 1.0, seed=4, dev=dev)
    r = _rng(5, 17, dev)
    out = be.hmc_accept(x, e, grad, p0, y, e_y, grad_y, p, k, r)
    ref = ops.hmc_accept(x, e, grad, p0, y, e_y, grad_y, p, k, r)
    u = rng.uniform(5, 17, n).double()
    _check_accept(out, ref, u, (x, e, grad), (y, e_y, grad_y), dtype, d)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's NumPy on NaN
@pytest.mark.parametrize("op", ["mala", "hmc"])
def test_accept_rejects_non_finite_proposals(impl, op):
    be, dev = impl.backend, impl.device
    impl.require(f"{op}_accept")
    n, d = 6, 5
    x, grad, y, grad_y, p = _inputs((n, d), torch.float32, 5, dev)
    e = torch.zeros(n, device=dev)
    e_y = torch.full((n,), -100.0, device=dev)  # α = 1 for every finite proposal
    y[1, 2] = float("inf")
    y[2, 0] = float("nan")
    grad_y[3, 4] = float("nan")
    e_y[4] = float("nan")
    e_y[5] = float("-inf")
    r = _rng(1, 0, dev)
    if op == "mala":
        h = torch.full((n,), 1e-4, device=dev)
        x_, e_, g_, prob, acc = be.mala_accept(x, e, grad, y, e_y, grad_y, h, r)
        want = [True, False, False, False, False, False]
    else:
        p0 = p.clone()
        k = torch.full((n,), 1e-4, device=dev)
        x_, e_, g_, prob, acc = be.hmc_accept(x, e, grad, p0, y, e_y, grad_y, p, k, r)
        # A non-finite ∇U(y) enters H through the closing kick: chain 3 is rejected too.
        want = [True, False, False, False, False, False]
    assert acc.tolist() == want
    assert bool(torch.isfinite(prob).all()) and prob[~acc].eq(0).all()
    assert torch.equal(x_[~acc], x[~acc]) and torch.equal(g_[~acc], grad[~acc]) and torch.equal(e_[~acc], e[~acc])


# ------------------------------------------------------------------------------------- diffusion


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_diffusion_ops(impl, dtype, shape):
    be, dev = impl.backend, impl.device
    impl.require("q_sample", "posterior_sample", dtype=dtype)
    sched = ps.diffusion.VPSchedule(10)
    x0, xt = _inputs(shape, dtype, 2, dev)
    n = shape[0]
    t = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(n)).to(dev)
    cdt = _compute(dtype)
    names = ("posterior_mean_coef_x0", "posterior_mean_coef_xt", "posterior_std")
    tables = [getattr(sched, k).to(device=dev, dtype=cdt) for k in names]
    names = ("sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod")
    q_tables = [getattr(sched, k).to(device=dev, dtype=cdt) for k in names]
    for seed, offset in SEED_OFFSETS:
        r = _rng(seed, offset, dev)
        _close(impl, be.posterior_sample(x0, xt, t, *tables, r), ops.posterior_sample(x0, xt, t, *tables, r))
        _close(impl, be.q_sample(x0, t, *q_tables, r), ops.q_sample(x0, t, *q_tables, r))


# ---------------------------------------------------------------------------- layouts and errors


def test_non_contiguous_inputs(impl):
    be, dev = impl.backend, impl.device
    impl.require("ula_step")
    base, gbase = _inputs((6, 10), torch.float32, 2, dev)
    x, grad = base.t(), gbase.t()  # (10, 6) transposed views
    assert not x.is_contiguous()
    h = _per_chain(10, torch.float32, 0.01, 0.1, dev=dev)
    r = _rng(4, 4, dev)
    _close(impl, be.ula_step(x, grad, h, 1.0, r), ops.ula_step(x, grad, h, 1.0, r))
    same = be.ula_step(x.contiguous(), grad.contiguous(), h, 1.0, r)
    _close(impl, be.ula_step(x, grad, h, 1.0, r), same, TOLERANCES_NO_NOISE)


def test_inputs_are_not_modified(impl):
    be, dev = impl.backend, impl.device
    impl.require("ula_step", "kinetic_oba", "kinetic_bo")
    x, grad, v = _inputs((4, 9), torch.float32, 3, dev)
    h = _per_chain(4, torch.float32, 0.01, 0.1, dev=dev)
    saved = [t.clone() for t in (x, grad, v, h)]
    r = _rng(1, 2, dev)
    be.ula_step(x, grad, h, 1.0, r)
    be.kinetic_oba(x, v, grad, h, h, r)
    be.kinetic_bo(v, grad, h, h, r)
    for a, b in zip((x, grad, v, h), saved, strict=True):
        assert torch.equal(a, b)
    assert r.tolist() == [1, 2]


# ------------------------------------------------------------------------------ whole samplers


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "sampler",
    [ps.ULA(0.05), ps.ULA(0.05, noise_scale=0.0), ps.MALA(0.1), ps.KineticLangevin(0.1, 1.5), ps.HMC(0.1, 3)],
    ids=["ULA", "ULA-noise-free", "MALA", "KLA", "HMC"],
)
def test_sampler_chains_match_reference(impl, sampler, dtype):
    # The same seed gives the same chains on every backend and the reference, to float precision.
    dev = impl.device
    impl.require(dtype=dtype)
    name = impl.name
    target = ps.Gaussian(torch.tensor([1.0, -1.0, 0.5], device=dev), torch.tensor([1.0, 0.5, 2.0], device=dev))
    x0 = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=dtype).to(dev)
    step_size = torch.linspace(0.05, 0.15, 64, dtype=ops.compute_dtype(dtype), device=dev)  # per chain
    sampler = type(sampler)(**{**sampler.__dict__, "step_size": step_size})
    ref = ps.sample(target, x0, sampler, 15, seed=8, backend="torch")
    out = ps.sample(target, x0, sampler, 15, seed=8, backend=name)
    assert out.backend == name and out.x.dtype == dtype
    if dtype in (torch.float32, torch.float64) and impl.exact_noise:
        tol = 1e-5 if dtype == torch.float32 else 1e-6
        torch.testing.assert_close(out.x, ref.x, atol=tol, rtol=tol)
        torch.testing.assert_close(out.accept_rate, ref.accept_rate)
    elif dtype in (torch.float32, torch.float64):
        # Compiled: the noise agrees to float32 ulps but for rare small-radius draws (see
        # _close_compiled_noise); over 15 steps those errors contract or stay put.
        assert_close_compiled_noise(out.x.cpu(), ref.x.cpu(), tol=1e-4, rare=0.02, loose=1e-2)
    elif dtype == torch.bfloat16 and impl.truncates_bf16:
        # Triton's interpreter casts float32 -> bfloat16 by truncation (compiled Triton rounds to
        # nearest even, as torch does), so each bfloat16 store may sit one ulp off the reference and
        # the chains drift apart by a few ulps (each op is checked to one ulp above).
        assert float((out.x.float() - ref.x.float()).abs().median()) <= 8 * torch.finfo(dtype).eps
    else:
        # The same float32 arithmetic rounded once per store: the chains agree to a storage ulp.
        _close(impl, out.x, ref.x)
    assert int(out.state.rng[1]) == int(ref.state.rng[1])
