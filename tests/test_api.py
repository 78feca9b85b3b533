"""The public API contract: determinism, save/resume, gradients, backends, leapfrog, bad input."""

from __future__ import annotations

import io
import warnings

import pytest
import torch

import pysampler as ps
from pysampler.samplers.hmc import leapfrog

F64 = torch.float64
SAMPLERS = [ps.ULA(0.05), ps.MALA(0.1), ps.KineticLangevin(0.1, 1.0), ps.HMC(0.1, 3)]
IDS = [s.name for s in SAMPLERS]


def quadratic(x):
    return 0.5 * x.flatten(1).square().sum(1)


class Energy(torch.nn.Module):
    """A small MLP energy on R²."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.SiLU(), torch.nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1) + 0.5 * x.square().sum(1)


def x0(n=64, d=2, dtype=torch.float32, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ----------------------------------------------------------------------------- results


@pytest.mark.parametrize("sampler", SAMPLERS, ids=IDS)
def test_result_fields(sampler):
    res = ps.sample(quadratic, x0(), sampler, 10, burn_in=3, thin=3, record=True)
    assert res.x.shape == (64, 2) and res.x.dtype == torch.float32
    assert res.accept_rate.shape == (64,)
    assert res.trace.shape == (3, 64, 2)
    torch.testing.assert_close(res.trace[-1], ps.sample(quadratic, x0(), sampler, 9, burn_in=3).x)
    assert res.backend in ps.available_backends("cpu")
    if not sampler.adjusted:
        assert bool((res.accept_rate == 1).all())
    assert ps.sample(quadratic, x0(), sampler, 2).trace is None


def test_event_shapes():
    # (N, *event) with a 3-D event: energies see the full shape.
    x = torch.randn(8, 2, 3, 4)
    for sampler in SAMPLERS:
        res = ps.sample(lambda t: 0.5 * t.square().sum((1, 2, 3)), x, sampler, 3)
        assert res.x.shape == x.shape


# ----------------------------------------------------------------------- determinism


@pytest.mark.parametrize("backend", ps.available_backends("cpu"))
@pytest.mark.parametrize("sampler", SAMPLERS, ids=IDS)
def test_determinism(sampler, backend):
    a = ps.sample(Energy(), x0(), sampler, 20, seed=5, backend=backend).x
    b = ps.sample(Energy(), x0(), sampler, 20, seed=5, backend=backend).x
    c = ps.sample(Energy(), x0(), sampler, 20, seed=6, backend=backend).x
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("backend", ps.available_backends("cpu"))
def test_non_contiguous_x0_and_single_chain(backend):
    base = x0(64, 2)
    strided = torch.empty(2, 64).T  # (64, 2), column-major
    strided.copy_(base)
    assert not strided.is_contiguous()
    for sampler in SAMPLERS:
        a = ps.sample(Energy(), base, sampler, 5, seed=1, backend=backend).x
        b = ps.sample(Energy(), strided, sampler, 5, seed=1, backend=backend).x
        # same chains; the model's matmul may take another BLAS path on a strided input
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
        one = ps.sample(Energy(), base[:1], sampler, 5, seed=1, backend=backend)
        assert one.x.shape == (1, 2) and one.accept_rate.shape == (1,)


def test_progress_bar_and_callback(capsys):
    seen = []
    def callback(i, state, info):
        seen.append((i, int(state.step)))

    ps.sample(quadratic, x0(), ps.MALA(0.1), 4, burn_in=2, progress=True, callback=callback)
    assert seen == [(i, i + 1) for i in range(6)]
    assert "MALA" in capsys.readouterr().err


@pytest.mark.parametrize("sampler", SAMPLERS, ids=IDS)
def test_save_and_resume(sampler):
    energy = Energy()
    straight = ps.sample(energy, x0(), sampler, 20, seed=3).state
    state = sampler.init(energy, x0(), seed=3)
    for _ in range(8):
        state, _ = sampler.step(state)
    buf = io.BytesIO()
    torch.save(state.state_dict(), buf)
    buf.seek(0)
    resumed = sampler.load_state(energy, torch.load(buf))
    for _ in range(12):
        resumed, _ = sampler.step(resumed)
    assert torch.equal(resumed.x, straight.x)
    assert torch.equal(resumed.rng, straight.rng)
    assert int(resumed.step) == 20


def test_steps_are_pure():
    sampler = ps.MALA(0.1)
    state = sampler.init(quadratic, x0(), seed=1)
    before = {k: v.clone() for k, v in state.state_dict().items()}
    s1, _ = sampler.step(state)
    s2, _ = sampler.step(state)
    assert all(torch.equal(before[k], v) for k, v in state.state_dict().items())
    assert torch.equal(s1.x, s2.x)


def test_per_chain_step_size_matches_scalar_runs():
    # Chain n with step h[n] is the same chain as a scalar-h run, since noise is indexed by
    # the element's position in the batch.
    h = torch.tensor([0.01, 0.05, 0.2, 0.05])
    x = x0(4)
    for make in (ps.ULA, ps.MALA, lambda s: ps.KineticLangevin(s, 0.5), lambda s: ps.HMC(s, 2)):
        per_chain = ps.sample(quadratic, x, make(h), 15, seed=2, backend="torch").x
        for n in range(4):
            alone = ps.sample(quadratic, x, make(float(h[n])), 15, seed=2, backend="torch").x
            torch.testing.assert_close(per_chain[n], alone[n], atol=1e-6, rtol=1e-6)


# ------------------------------------------------------------------------- gradients


def test_no_parameter_gradients_accumulate():
    energy = Energy()
    gen = torch.nn.Linear(3, 2)
    for sampler in SAMPLERS:
        ps.sample(energy, x0(), sampler, 5)
        ps.sample(ps.LatentTarget(gen, energy), x0(d=3), sampler, 5)
    assert all(p.grad is None for p in list(energy.parameters()) + list(gen.parameters()))


def test_create_graph_backpropagates_through_the_chain():
    # Noise-free ULA on U = ½θ|x|²: after k steps x_k = (1 - hθ)^k x₀, so
    # d(sum x_k)/dθ = -k h (1 - hθ)^{k-1} sum x₀.
    theta = torch.tensor(2.0, dtype=F64, requires_grad=True)
    x = x0(dtype=F64)
    h, k = 0.05, 4
    res = ps.sample(lambda t: 0.5 * theta * t.square().sum(1), x, ps.ULA(h, noise_scale=0.0), k, create_graph=True)
    assert res.backend == "torch"
    (g,) = torch.autograd.grad(res.x.sum(), theta)
    expected = -k * h * (1 - h * 2.0) ** (k - 1) * x.sum()
    torch.testing.assert_close(g, expected)
    for sampler in SAMPLERS:  # every sampler keeps a differentiable path
        out = ps.sample(lambda t: 0.5 * theta * t.square().sum(1), x, sampler, 3, create_graph=True).x
        assert out.requires_grad


def test_noise_free_ula_is_gradient_descent():
    x = x0(dtype=F64)
    res = ps.sample(quadratic, x, ps.ULA(0.1, noise_scale=0.0), 10)
    torch.testing.assert_close(res.x, x * 0.9**10)


# -------------------------------------------------------------------------- leapfrog


def test_leapfrog_reversible_and_conserves_energy():
    # Harmonic oscillator U = ½x² (unit mass, ω = 1). Leapfrog is time-reversible (flip p,
    # integrate again, flip back: exact return) and conserves the modified energy
    # H̃ = ½p² + ½(1 - h²/4)x² exactly, so H itself oscillates within O(h²) without drift.
    target = ps.EnergyTarget(quadratic)
    x = x0(16, 3, dtype=F64)
    p = x0(16, 3, dtype=F64, seed=1)
    h = torch.full((16,), 0.1, dtype=F64)
    u, g = target.energy_and_grad(x)
    be = ps.backends.resolve("torch", "cpu")
    x1, u1, g1, p1 = leapfrog(be, target.energy_and_grad, x, u, g, p, h, 1000)
    x2, _, _, p2 = leapfrog(be, target.energy_and_grad, x1, u1, g1, -p1, h, 1000)
    torch.testing.assert_close(x2, x, atol=1e-9, rtol=0)
    torch.testing.assert_close(-p2, p, atol=1e-9, rtol=0)

    def modified(xx, pp):
        return 0.5 * pp.square().sum(1) + 0.5 * (1 - 0.01 / 4) * xx.square().sum(1)

    torch.testing.assert_close(modified(x1, p1), modified(x, p), atol=1e-10, rtol=1e-10)
    h0 = 0.5 * p.square().sum(1) + u
    h1 = 0.5 * p1.square().sum(1) + u1
    assert bool(((h1 - h0).abs() <= 0.01 / 4 * h0 * 1.01).all())


# -------------------------------------------------------------------------- backends


def test_available_backends_and_resolution(monkeypatch):
    names = ps.available_backends("cpu")
    assert names[0] == "torch"
    assert ps.available_backends("meta") == ["torch"]
    with pytest.raises(ValueError, match="backend 'nope' is not available"):
        ps.sample(quadratic, x0(), ps.ULA(0.1), 1, backend="nope")
    # Triton runs on the CPU only in its interpreter (which this test session turns on).
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert "triton" not in ps.available_backends("cpu")
    with pytest.raises(ValueError, match="backend 'triton' is not available on cpu"):
        ps.sample(quadratic, x0(), ps.ULA(0.1), 1, backend="triton")
    with pytest.raises(TypeError, match="backend must be a string"):
        ps.sample(quadratic, x0(), ps.ULA(0.1), 1, backend=3)


@pytest.mark.skipif("cpp" not in ps.available_backends("cpu"), reason="native extension not built")
def test_cpp_backend_matches_reference():
    for sampler in SAMPLERS:
        for dtype in (torch.float32, torch.float64):
            ref = ps.sample(Energy().to(dtype), x0(dtype=dtype), sampler, 10, seed=4, backend="torch")
            cpp = ps.sample(Energy().to(dtype), x0(dtype=dtype), sampler, 10, seed=4, backend="cpp")
            assert cpp.backend == "cpp"
            # The noise is float32 in every dtype (the stream's definition) and libm's logf/cosf
            # differ from torch's in the last bit, so chains agree to float32 precision.
            tol = 1e-5
            torch.testing.assert_close(cpp.x, ref.x, atol=tol, rtol=tol)
    with pytest.raises(ValueError, match="no autograd"):
        ps.sample(quadratic, x0(), ps.ULA(0.1), 1, backend="cpp", create_graph=True)


def test_missing_native_extension_warns_once(monkeypatch):
    from pysampler import backends

    monkeypatch.setattr(backends.native, "available", lambda: False)
    monkeypatch.setattr(backends.native, "load_error", lambda: "not built (test)")
    monkeypatch.setattr(backends, "_warned_missing_native", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r1 = ps.sample(quadratic, x0(), ps.ULA(0.1), 2)
        ps.sample(quadratic, x0(), ps.MALA(0.1), 2)
    msgs = [str(w.message) for w in caught if "native extension" in str(w.message)]
    assert len(msgs) == 1 and "not built (test)" in msgs[0]
    assert r1.backend == "torch"


# ------------------------------------------------------------------------ non-finite


def test_unadjusted_samplers_raise_on_non_finite_chains():
    # U = x⁴ with a step far beyond stability blows some chains up within a few steps.
    x = torch.linspace(-3, 3, 20)[:, None]
    quartic = lambda t: t.pow(4).sum(1)  # noqa: E731
    for sampler in (ps.ULA(0.3, noise_scale=0.0), ps.KineticLangevin(0.5, 0.1)):
        with pytest.raises(FloatingPointError, match=r"chain\(s\) became non-finite at step \d+ \(chains "):
            ps.sample(quartic, x, sampler, 50)


def test_unadjusted_samplers_can_freeze_non_finite_chains():
    x = torch.linspace(-3, 3, 20)[:, None]
    quartic = lambda t: t.pow(4).sum(1)  # noqa: E731
    res = ps.sample(quartic, x, ps.ULA(0.3, noise_scale=0.0, on_nonfinite="freeze"), 50)
    frozen = res.state.frozen
    assert bool(frozen.any()) and not bool(frozen.all())
    assert bool(torch.isfinite(res.x).all())
    # the stable chains (|x| small) went to the minimum; frozen ones kept a finite state
    assert bool((res.x[~frozen].abs() < 0.5).all())


# ------------------------------------------------------------------------- bad input


def test_bad_energy_shape():
    with pytest.raises(ValueError, match=r"energy must return a tensor of shape \(N,\) = \(64,\).*\(64, 1\).*squeeze"):
        ps.sample(lambda t: t.square().sum(1, keepdim=True), x0(), ps.ULA(0.1), 1)
    with pytest.raises(ValueError, match=r"energy must return a tensor of shape \(N,\)"):
        ps.sample(lambda t: t.square().sum(), x0(), ps.ULA(0.1), 1)


def test_bad_x0():
    with pytest.raises(TypeError, match="x0 must be float32, float64, float16 or bfloat16; got torch.int64"):
        ps.sample(quadratic, torch.zeros(4, 2, dtype=torch.int64), ps.ULA(0.1), 1)
    with pytest.raises(TypeError, match="x0 must be a torch.Tensor"):
        ps.sample(quadratic, [[0.0, 1.0]], ps.ULA(0.1), 1)
    with pytest.raises(ValueError, match=r"x0 must have shape \(N, \*event\)"):
        ps.sample(quadratic, torch.zeros(4), ps.ULA(0.1), 1)
    bad = x0()
    bad[3, 0] = float("nan")
    bad[7, 1] = float("inf")
    with pytest.raises(ValueError, match=r"x0 must be finite; 2 chains have NaN or inf \(first: \[3, 7\]\)"):
        ps.sample(quadratic, bad, ps.ULA(0.1), 1)


def test_dtype_mismatch_with_model():
    with pytest.raises(ValueError, match="x0 is torch.float64 but the target's parameters are torch.float32"):
        ps.sample(Energy(), x0(dtype=F64), ps.MALA(0.1), 1)
    # analytic targets follow x0's dtype
    assert ps.sample(ps.gmm25(dtype=torch.float32), x0(dtype=F64), ps.MALA(0.1), 2).x.dtype == F64


def test_device_mismatch():
    energy = Energy().to("meta")
    with pytest.raises(ValueError, match="x0 is on cpu but the target's parameters are on meta"):
        ps.sample(energy, x0(), ps.ULA(0.1), 1)
    with pytest.raises(ValueError, match="x0 is on cpu but the target's parameters are on meta"):
        ps.sample(ps.LatentTarget(torch.nn.Linear(2, 2), energy), x0(), ps.MALA(0.1), 1)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ps.ULA(0.0), "step_size must be finite and > 0; got 0.0"),
        (lambda: ps.ULA(-0.1), "step_size must be finite and > 0; got -0.1"),
        (lambda: ps.ULA(float("nan")), "step_size must be finite and > 0"),
        (lambda: ps.MALA(torch.tensor([0.1, -1.0])), "step_size must be finite and > 0; 1 of 2 entries"),
        (lambda: ps.KineticLangevin(0.1, 0.0), "friction must be finite and > 0; got 0.0"),
        (lambda: ps.KineticLangevin(0.1, -2.0), "friction must be finite and > 0"),
        (lambda: ps.HMC(0.1, 0), "n_leapfrog must be an int >= 1; got 0"),
        (lambda: ps.HMC(0.1, 2.5), "n_leapfrog must be an int >= 1; got 2.5"),
        (lambda: ps.ULA(0.1, noise_scale=-1.0), "noise_scale must be a float >= 0"),
        (lambda: ps.ULA(0.1, on_nonfinite="ignore"), "on_nonfinite must be 'raise' or 'freeze'"),
        (lambda: ps.MALA(0.1, target_accept=1.5), r"target_accept must be in \(0, 1\)"),
    ],
)
def test_bad_sampler_config(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_step_size_type_and_shape():
    with pytest.raises(TypeError, match="step_size must be a float or a per-chain"):
        ps.ULA("0.1")
    msg = r"step_size must be a float or a per-chain \(64,\) tensor for 64 chains; got shape \(3,\)"
    with pytest.raises(ValueError, match=msg):
        ps.sample(quadratic, x0(), ps.ULA(torch.tensor([0.1, 0.2, 0.3])), 1)


def test_bad_sample_arguments():
    with pytest.raises(ValueError, match="n_steps must be an int >= 0"):
        ps.sample(quadratic, x0(), ps.ULA(0.1), -1)
    with pytest.raises(ValueError, match="thin must be an int >= 1"):
        ps.sample(quadratic, x0(), ps.ULA(0.1), 5, thin=0)
    with pytest.raises(ValueError, match="burn_in must be an int >= 0"):
        ps.sample(quadratic, x0(), ps.ULA(0.1), 5, burn_in=1.5)
    with pytest.raises(ValueError, match="seed must be an int"):
        ps.sample(quadratic, x0(), ps.ULA(0.1), 5, seed=-1)
    with pytest.raises(TypeError, match="sampler must be a pysampler sampler"):
        ps.sample(quadratic, x0(), "ULA", 5)
    with pytest.raises(TypeError, match="target must be a pysampler Target or a callable"):
        ps.sample(3.0, x0(), ps.ULA(0.1), 5)
    with pytest.raises(ValueError, match="energy or its gradient is non-finite at x0"):
        ps.sample(lambda t: t.sum(1) / 0.0 * 0.0, x0(), ps.ULA(0.1), 1)
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        ps.LatentTarget(torch.nn.Identity(), quadratic, temperature=-1.0)


# --------------------------------------------------------------------------- targets


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_closed_form_gradients_match_autograd(dtype):
    x = x0(33, 2, dtype=dtype) * 3
    g = torch.Generator().manual_seed(1)
    means = torch.randn(4, 2, generator=g, dtype=dtype)
    targets = [
        ps.gmm25(dtype=dtype),
        ps.GaussianMixture(
            means, torch.rand(4, 2, generator=g, dtype=dtype) + 0.3, torch.rand(4, generator=g, dtype=dtype) + 0.1
        ),
        ps.Gaussian(means[0], torch.tensor([0.5, 2.0], dtype=dtype)),
        ps.Gaussian(means[0], scale_tril=torch.tensor([[1.0, 0.0], [0.7, 0.4]], dtype=dtype)),
    ]
    for t in targets:
        u, grad = t.energy_and_grad(x)
        u_ref, grad_ref = ps.Target.energy_and_grad(t, x)  # autograd through potential()
        torch.testing.assert_close(u, u_ref)
        torch.testing.assert_close(grad, grad_ref)


def test_gaussian_mixture_normalised():
    # exp(-U) integrates to 1: Riemann sum on a fine grid.
    means = torch.tensor([[0.0, 0.0], [2.0, 1.0]], dtype=F64)
    t = ps.GaussianMixture(means, torch.tensor([0.5, 0.8], dtype=F64), torch.tensor([1.0, 3.0], dtype=F64))
    grid = torch.linspace(-5, 7, 601, dtype=F64)
    xy = torch.cartesian_prod(grid, grid)
    mass = torch.exp(-t.energy(xy)).sum() * (grid[1] - grid[0]) ** 2
    torch.testing.assert_close(mass, torch.tensor(1.0, dtype=F64), atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_storage(dtype):
    # Half-precision chains: states stored in dtype, step arithmetic in float32 on every backend;
    # per-chain parameters and acceptance are float32. backend="auto" skips backends without half
    # support (the native CPU op), naming one explicitly says what it supports.
    target = ps.Gaussian(torch.zeros(3), torch.tensor([1.0, 0.5, 2.0]))
    start = torch.randn(512, 3, generator=torch.Generator().manual_seed(0)).to(dtype)
    for sampler in SAMPLERS:
        res = ps.sample(target, start, sampler, 30, seed=1)
        assert res.x.dtype == dtype and res.backend == "torch"
        assert res.state.step_size.dtype == torch.float32 and res.accept_rate.dtype == torch.float32
        assert bool(torch.isfinite(res.x).all())
        # Half storage rounds each step; the chains still track the float32 ones.
        ref = ps.sample(target, start.float(), sampler, 30, seed=1, backend="torch")
        assert float((res.x.float() - ref.x).abs().median()) < 0.05
    if "cpp" in ps.available_backends("cpu"):
        with pytest.raises(ValueError, match=f"backend 'cpp' supports float32, float64 states; got {dtype}"):
            ps.sample(target, start, ps.ULA(0.1), 1, backend="cpp")


def test_reference_ops_with_torch_generator():
    # rng=None: the step as a hand-written loop draws it (torch.randn / torch.rand), the benchmarks'
    # eager and torch.compile baselines. Same arithmetic as with the stream, other numbers.
    from pysampler import ops

    x, g = torch.randn(6, 3), torch.randn(6, 3)
    h = torch.full((6,), 0.1)
    torch.manual_seed(3)
    out = ops.ula_step(x, g, h, 1.0, None)
    torch.manual_seed(3)
    want = x - h[:, None] * g + torch.sqrt(2.0 * h)[:, None] * torch.randn(6, 3)
    torch.testing.assert_close(out, want, atol=0, rtol=0)
    x1, e1, g1, prob, acc = ops.mala_accept(x, x.square().sum(1), g, x + 0.1, x.square().sum(1), g, h, None)
    assert prob.shape == acc.shape == (6,) and x1.shape == x.shape


def test_kinetic_schedule():
    # A constant schedule is the plain sampler; a varying one sets (h, γ) before each step.
    plain = ps.sample(quadratic, x0(), ps.KineticLangevin(0.1, friction=2.0), 8, seed=3)
    const = ps.sample(quadratic, x0(), ps.KineticLangevin(0.5, friction=9.0, schedule=lambda i: (0.1, 2.0)), 8, seed=3)
    torch.testing.assert_close(const.x, plain.x, rtol=0, atol=0)
    seen = []

    def schedule(i):
        seen.append(i)
        return 0.1 / (1 + i), torch.full((64,), 2.0 + i)

    res = ps.sample(quadratic, x0(), ps.KineticLangevin(0.1, schedule=schedule), 6, burn_in=2, seed=3)
    assert seen == list(range(8)) and res.backend != "cpp-fused"
    torch.testing.assert_close(res.step_size, torch.full((64,), 0.1 / 8))
    torch.testing.assert_close(res.state.friction, torch.full((64,), 9.0))
    with pytest.raises(ValueError, match=r"schedule\(0\)'s friction must be finite and > 0"):
        ps.sample(quadratic, x0(), ps.KineticLangevin(0.1, schedule=lambda i: (0.1, -1.0)), 2)
    with pytest.raises(ValueError, match=r"schedule\(0\) must return \(step_size, friction\)"):
        ps.sample(quadratic, x0(), ps.KineticLangevin(0.1, schedule=lambda i: 0.1), 2)
    with pytest.raises(TypeError, match="schedule must be None or a callable"):
        ps.KineticLangevin(0.1, schedule=0.1)


def test_progress_bar_shows_acceptance_and_throughput(capsys):
    ps.sample(quadratic, x0(), ps.MALA(0.3), 20, burn_in=5, progress=True)
    err = capsys.readouterr().err
    assert "accept=" in err and "chain-steps/s=" in err
