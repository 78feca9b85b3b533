"""Whole-chain fused sampling (pysampler.fused, csrc/cpu/fused.cpp): parity with the step-wise
samplers on the same random stream, the automatic choice, and the fused op's contract.

Statistical tests of the fused path: tests/test_sampler_statistics.py runs its Gaussian cases
through backend="cpp-fused" too, and test_fused_gmm25_* below checks the 25-Gaussian mixture.
"""

from __future__ import annotations

import pytest
import torch

import pysampler as ps
from conftest import Z
from pysampler.backends import native

pytestmark = pytest.mark.skipif(not native.available(), reason=f"native library not built: {native.load_error()}")

F64 = torch.float64


def _targets(dtype):
    g = torch.Generator().manual_seed(0)
    mean = torch.tensor([1.0, -1.0, 0.5], dtype=dtype)
    return {
        "gaussian-diag": ps.Gaussian(mean, torch.tensor([0.5, 1.0, 2.0], dtype=dtype)),
        "gaussian-full": ps.Gaussian(
            mean, scale_tril=torch.tensor([[1.0, 0.0, 0.0], [0.7, 0.4, 0.0], [0.1, -0.3, 0.8]], dtype=dtype)
        ),
        "mixture": ps.GaussianMixture(
            torch.randn(4, 3, generator=g, dtype=dtype) * 2,
            torch.rand(4, 3, generator=g, dtype=dtype) + 0.3,
            torch.rand(4, generator=g, dtype=dtype) + 0.1,
        ),
    }


SAMPLERS = {
    "ULA": ps.ULA(0.05),
    "flow": ps.ULA(0.05, noise_scale=0.0),
    "MALA": ps.MALA(0.1),
    "KineticLangevin": ps.KineticLangevin(0.1, 1.5),
    "HMC": ps.HMC(0.1, 3),
}


def _x0(n, d, dtype, seed=1):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("target_name", ["gaussian-diag", "gaussian-full", "mixture"])
@pytest.mark.parametrize("sampler_name", list(SAMPLERS))
def test_fused_matches_stepwise_float64(target_name, sampler_name):
    # 37 chains: the last block is partial; burn-in, thinning and the trace go through the kernel.
    target, sampler = _targets(F64)[target_name], SAMPLERS[sampler_name]
    x0 = _x0(37, 3, F64)
    kw = dict(seed=5, burn_in=3, record=True, thin=2)
    fused = ps.sample(target, x0, sampler, 20, backend="cpp-fused", **kw)
    step = ps.sample(target, x0, sampler, 20, backend="cpp", **kw)
    assert fused.backend == "cpp-fused" and step.backend == "cpp"
    # The same operations in the same order, but for the order of a few reductions: float64 rounding.
    for a, b in [(fused.x, step.x), (fused.trace, step.trace), (fused.state.energy, step.state.energy),
                 (fused.state.grad, step.state.grad)]:
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fused.accept_rate, step.accept_rate, rtol=0, atol=0)
    assert torch.equal(fused.state.rng, step.state.rng) and int(fused.state.step) == int(step.state.step) == 23
    if sampler_name == "KineticLangevin":
        torch.testing.assert_close(fused.state.v, step.state.v, rtol=1e-12, atol=1e-12)
    # the stream continues where the fused run left it: 10 more step-wise steps equal 30 step-wise
    more = fused.state
    for _ in range(10):
        more, _ = sampler.step(more)
    longer = ps.sample(target, x0, sampler, 30, backend="cpp", seed=5, burn_in=3)
    torch.testing.assert_close(more.x, longer.x, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("sampler_name", ["ULA", "KineticLangevin"])
def test_fused_matches_stepwise_float32(sampler_name):
    # Unadjusted samplers (no MH decision to flip): float32 chains agree to float32 rounding.
    target, sampler = _targets(torch.float32)["mixture"], SAMPLERS[sampler_name]
    x0 = _x0(300, 3, torch.float32)
    fused = ps.sample(target, x0, sampler, 20, backend="cpp-fused", seed=2)
    step = ps.sample(target, x0, sampler, 20, backend="cpp", seed=2)
    torch.testing.assert_close(fused.x, step.x, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("d", [1, 2, 9, 300])
def test_fused_odd_dimensions(d):
    # one coordinate, a block of exactly the vector width, and blocks of a few wide chains
    target = ps.Gaussian(torch.linspace(-1, 1, d, dtype=F64), torch.linspace(0.5, 2, d, dtype=F64))
    x0 = _x0(13, d, F64)
    for sampler in (ps.ULA(0.05), ps.MALA(0.1)):
        fused = ps.sample(target, x0, sampler, 8, backend="cpp-fused", seed=3)
        step = ps.sample(target, x0, sampler, 8, backend="cpp", seed=3)
        torch.testing.assert_close(fused.x, step.x, rtol=1e-12, atol=1e-12)


def test_fused_per_chain_step_sizes_and_adaptation():
    target = _targets(F64)["gaussian-full"]
    x0 = _x0(64, 3, F64)
    h = torch.linspace(0.01, 0.3, 64, dtype=F64)
    for sampler in (ps.MALA(h), ps.HMC(h, 2), ps.KineticLangevin(h, torch.linspace(0.5, 3, 64, dtype=F64))):
        fused = ps.sample(target, x0, sampler, 15, backend="cpp-fused", seed=4)
        step = ps.sample(target, x0, sampler, 15, backend="cpp", seed=4)
        torch.testing.assert_close(fused.x, step.x, rtol=1e-12, atol=1e-12)
    # step-size adaptation: the burn-in runs step-wise, the rest fused; same chains as all step-wise
    sampler = ps.MALA(0.5, adapt_step_size=True)
    fused = ps.sample(target, x0, sampler, 15, burn_in=10, backend="cpp-fused", seed=4, record=True)
    step = ps.sample(target, x0, sampler, 15, burn_in=10, backend="cpp", seed=4, record=True)
    torch.testing.assert_close(fused.trace, step.trace, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fused.step_size, step.step_size, rtol=0, atol=0)


def test_auto_chooses_the_fused_path_when_it_can():
    target = _targets(torch.float32)["mixture"]
    x0 = _x0(16, 3, torch.float32)
    assert ps.sample(target, x0, ps.ULA(0.05), 2).backend == "cpp-fused"
    # an energy the kernel cannot evaluate, a callback, create_graph, half storage: step-wise
    assert ps.sample(lambda x: x.square().sum(1), x0, ps.ULA(0.05), 2).backend == "cpp"
    assert ps.sample(target, x0, ps.ULA(0.05), 2, callback=lambda *a: None).backend == "cpp"
    assert ps.sample(target, x0.requires_grad_(), ps.ULA(0.05), 2, create_graph=True).backend == "torch"
    assert ps.sample(target, x0.detach().bfloat16(), ps.ULA(0.05), 2).backend == "torch"
    # naming a step-wise backend keeps the step-wise path
    assert ps.sample(target, x0.detach(), ps.ULA(0.05), 2, backend="cpp").backend == "cpp"


def test_cpp_fused_says_why_it_cannot_run():
    x0 = _x0(16, 3, torch.float32)
    with pytest.raises(ValueError, match="EnergyTarget is not a fusable target"):
        ps.sample(lambda x: x.square().sum(1), x0, ps.ULA(0.05), 2, backend="cpp-fused")
    with pytest.raises(ValueError, match="callback"):
        ps.sample(_targets(torch.float32)["mixture"], x0, ps.ULA(0.05), 2, backend="cpp-fused", callback=print)


def test_fused_nonfinite_chains_raise_or_freeze_like_stepwise():
    # ULA with h far above the stability limit 2σ² blows up: the fused run raises the step-wise
    # error (same chains, same step) or, with on_nonfinite="freeze", freezes the same chains.
    target = ps.Gaussian(torch.zeros(2, dtype=F64), torch.tensor([1.0, 0.01], dtype=F64))
    x0 = torch.cat([_x0(8, 2, F64) * 0.01, _x0(8, 2, F64, seed=2) * 10])
    messages = []
    for backend in ("cpp-fused", "cpp"):
        with pytest.raises(FloatingPointError) as info:
            ps.sample(target, x0, ps.ULA(1.0), 200, backend=backend, seed=1)
        messages.append(str(info.value))
    assert messages[0] == messages[1] and "non-finite at step" in messages[0]
    fused = ps.sample(target, x0, ps.ULA(1.0, on_nonfinite="freeze"), 200, backend="cpp-fused", seed=1)
    step = ps.sample(target, x0, ps.ULA(1.0, on_nonfinite="freeze"), 200, backend="cpp", seed=1)
    assert torch.equal(fused.state.frozen, step.state.frozen) and bool(fused.state.frozen.any())
    torch.testing.assert_close(fused.x, step.x, rtol=1e-12, atol=1e-12)
    assert bool(torch.isfinite(fused.x).all())


def test_fused_gmm25_is_sampled_exactly():
    # MALA on the 25-Gaussian mixture (means on {-4,-2,0,2,4}², σ = 0.5) from a uniform start over
    # [-5, 5]²: 10,000 chains x 1,000 steps (h = 0.1) cross between modes (the density between two
    # neighbours is e^-2 of a mode's). The final states are then iid draws of the mixture: each
    # mode's mass (nearest-mean cell, ≈ 1/25 up to the tails' spill-over, computed by quadrature),
    # the mean 0 and the variance 8 + σ² per coordinate hold within Monte Carlo error.
    target = ps.gmm25(dtype=F64)
    n = 10_000
    x0 = 10 * torch.rand(n, 2, generator=torch.Generator().manual_seed(3), dtype=F64) - 5
    res = ps.sample(target, x0, ps.MALA(0.1), 1000, backend="cpp-fused", seed=7)
    assert res.backend == "cpp-fused"
    # exact cell masses by a fine grid over the plane
    grid = torch.linspace(-8, 8, 1601, dtype=F64)
    xy = torch.cartesian_prod(grid, grid)
    dens = torch.exp(-target.energy(xy)) * (grid[1] - grid[0]) ** 2
    p = torch.zeros(25, dtype=F64).index_add_(0, torch.cdist(xy, target.means).argmin(1), dens)
    counts = torch.bincount(torch.cdist(res.x, target.means).argmin(1), minlength=25).to(F64)
    se = (n * p * (1 - p)).sqrt()
    assert bool(((counts - n * p).abs() < Z * se).all()), (counts - n * p) / se
    x = res.x
    torch.testing.assert_close(x.mean(0), torch.zeros(2, dtype=F64), atol=Z * (8.25 / n) ** 0.5, rtol=0)
    var = x.var(0)
    se_var = (((x - x.mean(0)) ** 4).mean(0) - var**2).sqrt() / n**0.5
    assert bool(((var - 8.25).abs() < Z * se_var).all()), (var, se_var)


def _mlp(widths, act, dtype=F64, seed=0):
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(act)
    return torch.nn.Sequential(*layers).to(dtype)


MLP_ACTIVATIONS = {
    "silu": torch.nn.SiLU(), "tanh": torch.nn.Tanh(), "softplus": torch.nn.Softplus(beta=2.0, threshold=1.0),
    "relu": torch.nn.ReLU(), "leaky_relu": torch.nn.LeakyReLU(0.2), "gelu": torch.nn.GELU(),
    "gelu_tanh": torch.nn.GELU(approximate="tanh"),
}


@pytest.mark.parametrize("act", list(MLP_ACTIVATIONS))
# Inputs up to 8 wide take the kernel's narrow first-layer path, wider ones the BLAS product;
# one hidden layer makes the first layer also the top one (it folds in the output layer).
@pytest.mark.parametrize(
    "widths", [[3, 1], [3, 16, 1], [2, 40, 24, 1], [5, 32, 32, 16, 1], [8, 16, 1], [12, 20, 1], [9, 24, 16, 1]], ids=str
)
def test_fused_mlp_energy_and_gradient(act, widths):
    # One fused ULA step with zero noise from (x, U(x), ∇U(x)) lands at x - h∇U(x) and reports
    # U and ∇U there: the kernel's MLP forward / backward against MLPEnergy.energy_and_grad.
    target = ps.MLPEnergy(_mlp(widths, MLP_ACTIVATIONS[act]), prior_weight=0.3)
    x = 2 * _x0(37, widths[0], F64)
    u, g = target.energy_and_grad(x)
    kind, params = ps.fused.fused_target(target, F64)
    h = torch.full((37,), 0.05, dtype=F64)
    out = torch.ops.pysampler.fused_chain(
        "ula", x, u, g, None, h, None, torch.zeros(37, dtype=torch.bool), torch.tensor([0, 0]), 1, 0, 0, 1, 0.0,
        kind, params,
    )
    y = x - 0.05 * g
    u_y, g_y = target.energy_and_grad(y)
    torch.testing.assert_close(out[0], y, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(out[1], u_y, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(out[2], g_y, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("sampler_name", ["ULA", "MALA", "KineticLangevin", "HMC"])
def test_fused_mlp_matches_stepwise(sampler_name):
    target = ps.MLPEnergy(_mlp([2, 32, 32, 1], torch.nn.SiLU()), prior_weight=1.0)
    x0 = _x0(45, 2, F64)
    fused = ps.sample(target, x0, SAMPLERS[sampler_name], 15, backend="cpp-fused", seed=9)
    step = ps.sample(target, x0, SAMPLERS[sampler_name], 15, backend="cpp", seed=9)
    assert fused.backend == "cpp-fused"
    torch.testing.assert_close(fused.x, step.x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fused.accept_rate, step.accept_rate, rtol=0, atol=0)


def test_fused_mlp_float32_many_blocks_matches_stepwise():
    # The W3 shape in float32 over several 256-chain blocks and a partial one: the layer products
    # go through the BLAS (csrc/cpu/fused.cpp layer_product), the step-wise run through autograd.
    target = ps.MLPEnergy(_mlp([2, 128, 128, 1], torch.nn.SiLU(), dtype=torch.float32), prior_weight=1.0)
    x0 = _x0(700, 2, torch.float32)
    fused = ps.sample(target, x0, ps.ULA(step_size=0.01), 10, backend="cpp-fused", seed=4)
    step = ps.sample(target, x0, ps.ULA(step_size=0.01), 10, backend="cpp", seed=4)
    assert fused.backend == "cpp-fused"
    torch.testing.assert_close(fused.x, step.x, rtol=1e-4, atol=1e-4)


_NO_BLAS_SCRIPT = """
import sys, torch
import pysampler as ps
sys.path.insert(0, sys.argv[2])
from test_fused import _mlp, _x0
target = ps.MLPEnergy(_mlp([3, 40, 24, 1], torch.nn.Tanh()), prior_weight=0.5)
x0 = _x0(300, 3, torch.float64)
torch.save(ps.sample(target, x0, ps.MALA(step_size=0.05), 12, backend="cpp-fused", seed=2).x, sys.argv[1])
"""


def test_fused_mlp_without_blas_matches(tmp_path):
    # PYSAMPLER_FUSED_NO_BLAS=1 makes the kernels use their own register-blocked product, as on a
    # torch build that exports no BLAS: same chains as the BLAS path, to float64 rounding.
    import os
    import pathlib
    import subprocess
    import sys

    path = tmp_path / "no_blas.pt"
    env = dict(os.environ, PYSAMPLER_FUSED_NO_BLAS="1")
    here = str(pathlib.Path(__file__).parent)
    subprocess.run([sys.executable, "-c", _NO_BLAS_SCRIPT, str(path), here], env=env, check=True)
    target = ps.MLPEnergy(_mlp([3, 40, 24, 1], torch.nn.Tanh()), prior_weight=0.5)
    with_blas = ps.sample(target, _x0(300, 3, F64), ps.MALA(step_size=0.05), 12, backend="cpp-fused", seed=2).x
    torch.testing.assert_close(torch.load(path), with_blas, rtol=1e-10, atol=1e-10)


def test_fused_op_opcheck_and_errors():
    x = _x0(9, 3, torch.float32)
    target = _targets(torch.float32)["mixture"]
    u, g = target.energy_and_grad(x)
    kind, params = ps.fused.fused_target(target, torch.float32)
    h = torch.full((9,), 0.05)
    args = ("mala", x, u, g, None, h, None, torch.zeros(9, dtype=torch.bool), torch.tensor([1, 0]), 4, 1, 2, 1, 1.0,
            kind, params)
    torch.library.opcheck(torch.ops.pysampler.fused_chain.default, args)
    op = torch.ops.pysampler.fused_chain
    with pytest.raises(ValueError, match="sampler must be"):
        op("gibbs", *args[1:])
    with pytest.raises(ValueError, match="target must be"):
        op(*args[:14], "banana", params)
    with pytest.raises(ValueError, match="record_from"):
        op(*args[:10], 5, *args[11:])
    with pytest.raises(ValueError, match="needs v and friction"):
        op("kinetic", *args[1:])
    with pytest.raises(ValueError, match="takes params"):
        op(*args[:15], params[:2])
