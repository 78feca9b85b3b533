"""The Triton whole-chain kernels (pysampler/kernels/fused.py) against the CPU whole-chain op.

Both implement ``pysampler::fused_chain``'s contract on the same Philox stream, so on identical
inputs they must give the same chains, energies, gradients, acceptance counts, traces and
frozen chains. Without a GPU the kernels run on CPU tensors through Triton's interpreter (conftest
sets TRITON_INTERPRET=1); shapes are small (the interpreter costs per program) but include odd
dimensions and a partial program of chains. The CPU op is itself held to the step-wise samplers
(tests/test_fused.py), so this ties the Triton kernels to the reference stream too.
"""

from __future__ import annotations

import pytest
import torch
from test_fused import MLP_ACTIVATIONS, _mlp  # the same MLPs as the CPU kernel's tests

import pysampler as ps
from conftest import TRITON_DEVICE
from pysampler.backends import native

pytest.importorskip("triton")
pytestmark = [
    pytest.mark.skipif(
        "triton" not in ps.available_backends(TRITON_DEVICE),
        reason=f"Triton backend not available on {TRITON_DEVICE}: {ps.backends.triton.load_error()}",
    ),
    pytest.mark.skipif(not native.available(), reason=f"native library not loaded: {native.load_error()}"),
]

DEV = TRITON_DEVICE
F64 = torch.float64


@pytest.fixture(scope="module")
def kernels():
    import pysampler.kernels.fused as fused

    return fused


def _targets(d, dtype):
    g = torch.Generator().manual_seed(3)
    a = torch.randn(d, d, generator=g, dtype=F64)
    return {
        "gaussian_diag": ps.Gaussian(torch.randn(d, generator=g, dtype=F64), torch.rand(d, generator=g, dtype=F64) + 0.5),
        "gaussian_full": ps.Gaussian(
            torch.randn(d, generator=g, dtype=F64), scale_tril=torch.linalg.cholesky(a @ a.T / d + torch.eye(d, dtype=F64))
        ),
        "mixture": ps.GaussianMixture(
            torch.randn(5, d, generator=g, dtype=F64) * 2, torch.rand(5, d, generator=g, dtype=F64) + 0.3,
            torch.rand(5, generator=g, dtype=F64) + 0.1,
        ),
    }


def _run(fn, sampler, target, x, step, *, n_steps=20, record_from=0, thin=0, n_leapfrog=3, noise_scale=1.0, seed=11,
         device="cpu"):
    kind, params = ps.fused.fused_target(target, x.dtype)
    u, g = target.energy_and_grad(x)
    n = x.shape[0]
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=F64).to(x.dtype)
    friction = torch.full((n,), 1.5, dtype=x.dtype)
    args = [x, u, g, v if sampler == "kinetic" else None, step, friction if sampler == "kinetic" else None,
            torch.zeros(n, dtype=torch.bool), torch.tensor([seed, 2**32 - 7])]
    args = [a.to(device) if isinstance(a, torch.Tensor) else a for a in args]
    out = fn(sampler, *args, n_steps, record_from, thin, n_leapfrog, noise_scale, kind, [p.to(device) for p in params])
    return [t.cpu() for t in out]


def _compare(tri, cpu, tol, skip=()):
    names = ("x", "energy", "grad", "v", "frozen", "bad_step", "accepted", "trace")
    for name, a, b in zip(names, tri, cpu, strict=True):
        if name in skip:
            continue
        assert a.shape == b.shape and a.dtype == b.dtype, (name, a.shape, b.shape, a.dtype, b.dtype)
        if a.dtype in (torch.bool, torch.int64):
            assert torch.equal(a, b), name
        else:
            torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("target_name", ["gaussian_diag", "gaussian_full", "mixture"])
@pytest.mark.parametrize("sampler", ["ula", "mala", "kinetic", "hmc"])
def test_triton_fused_matches_cpu_fused_float64(kernels, target_name, sampler):
    d, n = 3, 37
    target = _targets(d, F64)[target_name]
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(1), dtype=F64)
    # HMC's trajectories (3 leapfrog steps) need longer steps than MALA to be rejected at times
    step = torch.linspace(0.02, 0.08, n, dtype=F64) * (6 if sampler == "hmc" else 1)
    kw = {"record_from": 5, "thin": 4}
    tri = _run(kernels.fused_chain, sampler, target, x.to(DEV), step.to(DEV), device=DEV, **kw)
    cpu = _run(torch.ops.pysampler.fused_chain, sampler, target, x, step, **kw)
    # The normals are float32 Box-Muller values on both sides, and Triton's log/cos differ from
    # SLEEF's by an ulp or two: 1e-7 of the noise term, carried through 20 float64 steps.
    _compare(tri, cpu, 1e-5)
    if sampler in ("mala", "hmc"):
        assert 0 < int(cpu[6].sum()) < n * 15  # some accepted, some rejected: the MH test was exercised


@pytest.mark.parametrize(("act", "widths", "sampler"), [
    ("silu", [2, 16, 1], "ula"), ("tanh", [3, 20, 12, 1], "mala"), ("softplus", [2, 24, 1], "kinetic"),
    ("relu", [2, 16, 16, 16, 1], "hmc"), ("leaky_relu", [5, 16, 1], "ula"), ("gelu", [2, 17, 1], "mala"),
    ("gelu_tanh", [2, 16, 1], "ula"), ("silu", [4, 1], "mala"),
], ids=str)
def test_triton_fused_mlp_matches_cpu_fused(kernels, act, widths, sampler):
    # tl.dot layers with zero-padded widths (17 -> 32, 20 -> 32, inputs 2..5 -> 16), every activation,
    # one to four Linear layers, every sampler: the same chains as the CPU kernel (MKL products).
    target = ps.MLPEnergy(_mlp(widths, MLP_ACTIVATIONS[act]), prior_weight=0.5)
    n = 24
    x = torch.randn(n, widths[0], generator=torch.Generator().manual_seed(1), dtype=F64)
    step = torch.full((n,), 0.05 if sampler != "hmc" else 0.2, dtype=F64)
    kw = {"n_steps": 8, "record_from": 2, "thin": 3}
    tri = _run(kernels.fused_chain, sampler, target, x.to(DEV), step.to(DEV), device=DEV, **kw)
    cpu = _run(torch.ops.pysampler.fused_chain, sampler, target, x, step, **kw)
    _compare(tri, cpu, 1e-5)


@pytest.mark.parametrize("sampler", ["ula", "mala"])
def test_triton_fused_float32_odd_dimension(kernels, sampler):
    d, n = 7, 50
    target = _targets(d, torch.float32)["mixture"]
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(2))
    step = torch.full((n,), 0.03)
    tri = _run(kernels.fused_chain, sampler, target, x.to(DEV), step.to(DEV), device=DEV)
    cpu = _run(torch.ops.pysampler.fused_chain, sampler, target, x, step)
    # float32: the normals agree to an ulp or two (Triton's log/cos against SLEEF's), which 20
    # steps carry into the state at about 1e-5
    _compare(tri, cpu, 2e-4, skip=("accepted",) if sampler == "mala" else ())


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_triton_fused_noise_free_flow_and_frozen_chains(kernels):
    # ULA without noise is gradient descent; a step size of 2.5 on a unit Gaussian multiplies x by
    # -1.5 each step, so float32 chains overflow and freeze at the step they turn non-finite.
    d, n = 2, 9
    target = ps.Gaussian(torch.zeros(d), torch.ones(d))
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(4)) * torch.logspace(0, 15, n)[:, None]
    step = torch.where(torch.arange(n) % 2 == 0, torch.tensor(2.5), torch.tensor(0.1))
    tri = _run(kernels.fused_chain, "ula", target, x.to(DEV), step.to(DEV), device=DEV, n_steps=200, noise_scale=0.0)
    cpu = _run(torch.ops.pysampler.fused_chain, "ula", target, x, step, n_steps=200, noise_scale=0.0)
    assert bool(cpu[4][::2].all()) and not bool(cpu[4][1::2].any())
    _compare(tri, cpu, 1e-5)


def test_triton_fused_bad_arguments(kernels):
    x = torch.zeros(4, 2, device=DEV)
    common = (x, torch.zeros(4, device=DEV), x, None, torch.ones(4, device=DEV), None,
              torch.zeros(4, dtype=torch.bool, device=DEV), torch.tensor([0, 0], device=DEV), 3, 0, 0, 1, 1.0)
    with pytest.raises(ValueError, match="sampler must be one of"):
        kernels.fused_chain("nuts", *common, "gaussian_diag", [torch.zeros(2), torch.ones(2)])
    with pytest.raises(ValueError, match="target must be one of"):
        kernels.fused_chain("ula", *common, "quartic", [])
    with pytest.raises(ValueError, match="'kinetic' needs v"):
        kernels.fused_chain("kinetic", *common, "gaussian_diag", [torch.zeros(2), torch.ones(2)])


@pytest.mark.parametrize("sampler", [ps.ULA(step_size=0.05), ps.MALA(step_size=0.1), ps.HMC(step_size=0.1, n_leapfrog=3)],
                         ids=lambda s: type(s).__name__)
def test_sample_with_triton_fused_matches_stepwise(sampler):
    # ps.sample(..., backend="triton-fused") on the interpreter (auto picks it on CUDA only): the
    # whole run in one launch, against the step-wise Triton run of the same stream; a trace and a
    # burn-in with the acceptance counted after it.
    target = _targets(2, F64)["mixture"]
    x0 = torch.randn(40, 2, generator=torch.Generator().manual_seed(8), dtype=F64).to(DEV)
    kw = {"n_steps": 12, "burn_in": 4, "thin": 3, "seed": 21}
    fused = ps.sample(target, x0, sampler, backend="triton-fused", **kw)
    step = ps.sample(target, x0, sampler, backend="triton", **kw)
    assert fused.backend == "triton-fused" and step.backend == "triton"
    torch.testing.assert_close(fused.x, step.x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused.trace, step.trace, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused.accept_rate, step.accept_rate, rtol=0, atol=0)


def test_triton_fused_says_why_it_cannot_run():
    wide = ps.Gaussian(torch.zeros(300), torch.ones(300))
    with pytest.raises(ValueError, match="d <= 256"):
        ps.sample(wide, torch.zeros(4, 300, device=DEV), ps.ULA(0.01), 2, backend="triton-fused")
    with pytest.raises(ValueError, match="needs the step-wise path"):
        ps.sample(ps.gmm25(), torch.zeros(4, 2, device=DEV), ps.ULA(0.01), 2, backend="triton-fused",
                  callback=lambda *a: None)


def test_sample_mlp_with_triton_fused_matches_stepwise():
    target = ps.MLPEnergy(_mlp([2, 16, 16, 1], torch.nn.SiLU()), prior_weight=1.0)
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(3), dtype=F64).to(DEV)
    fused = ps.sample(target, x0, ps.MALA(step_size=0.1), 10, backend="triton-fused", seed=5)
    step = ps.sample(target, x0, ps.MALA(step_size=0.1), 10, backend="triton", seed=5)
    assert fused.backend == "triton-fused"
    torch.testing.assert_close(fused.x, step.x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused.accept_rate, step.accept_rate, rtol=0, atol=0)
