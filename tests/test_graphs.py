"""CUDA-graph chains (pysampler.graphs, ``ps.sample(cuda_graph=...)``).

On the CPU everything but the capture itself is tested: ``cuda_graph="eager"`` drives the graphed
path's blocks (static buffers, block boundaries, burn-in, thinning, acceptance counting, the
non-finite handling) without capturing them, and must give the plain loop's chains bit for bit;
the block body runs on meta tensors, where any host sync raises, to show it can be captured.
The capture tests need a GPU and skip cleanly without one.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

import pysampler as ps
from pysampler import graphs
from pysampler.backends import native

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="CUDA-graph capture needs a GPU")

BACKENDS = ps.available_backends("cpu")  # torch, cpp when built, triton under its interpreter
# the meta-tensor test needs ops with Meta kernels: the reference and the native ops (Triton reads raw pointers)
META_BACKENDS = ["torch"] + (["cpp"] if native.available() else [])


def quartic(x: torch.Tensor) -> torch.Tensor:
    """A non-Gaussian energy (so nothing takes a closed-form or fused path): ½|x|² + 0.1·Σx⁴."""
    return 0.5 * x.square().sum(1) + 0.1 * x.pow(4).sum(1)


SAMPLERS = {
    "ula": lambda: ps.ULA(0.1),
    "mala": lambda: ps.MALA(0.3),
    "mala-adapt": lambda: ps.MALA(0.3, adapt_step_size=True),
    "hmc": lambda: ps.HMC(0.2, n_leapfrog=3),
    "kinetic": lambda: ps.KineticLangevin(0.1, 1.0),
}


def assert_same_run(a: ps.SampleResult, b: ps.SampleResult) -> None:
    assert torch.equal(a.x, b.x)
    assert torch.equal(a.accept_rate, b.accept_rate)
    assert torch.equal(a.state.rng, b.state.rng) and torch.equal(a.state.step, b.state.step)
    assert torch.equal(a.step_size, b.step_size)
    if a.trace is None:
        assert b.trace is None
    else:
        assert torch.equal(a.trace, b.trace)


RUNS = [(80, 0, 1, False), (80, 7, 3, True), (61, 30, 1, True)]  # (n_steps, burn_in, thin, record)
# Triton's interpreter pays per kernel call: one run that still crosses block boundaries and thins
BACKEND_RUNS = [(b, *run) for b in BACKENDS for run in (RUNS if b != "triton" else [(50, 0, 2, True)])]


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize(("backend", "n_steps", "burn_in", "thin", "record"), BACKEND_RUNS)
def test_blocks_give_the_plain_loops_chains(backend, name, n_steps, burn_in, thin, record):
    x0 = torch.randn(48, 3, generator=torch.Generator().manual_seed(1))
    kwargs = dict(seed=5, backend=backend, burn_in=burn_in, thin=thin, record=record)
    plain = ps.sample(quartic, x0, SAMPLERS[name](), n_steps, cuda_graph=False, **kwargs)
    blocks = ps.sample(quartic, x0, SAMPLERS[name](), n_steps, cuda_graph="eager", **kwargs)
    assert blocks.cuda_graph_reason is None  # the blocks ran (uncaptured)
    assert plain.cuda_graph_reason == "cuda_graph=False"
    assert_same_run(plain, blocks)


def test_structured_state_and_latent_target_blocks():
    gen = torch.nn.Linear(3, 5).double()
    energy = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1), torch.nn.Flatten(0)).double()
    target = ps.LatentTarget(gen, energy)
    z0 = torch.randn(32, 3, dtype=torch.float64)
    plain = ps.sample(target, z0, ps.KineticLangevin(0.05), 60, record=True, cuda_graph=False)
    blocks = ps.sample(target, z0, ps.KineticLangevin(0.05), 60, record=True, cuda_graph="eager")
    assert_same_run(plain, blocks)

    def transform(eps):
        return gen(eps["z"]) + 0.1 * eps["x"]

    rp = ps.ReparamTarget(transform, energy)
    eps0 = {"z": torch.randn(32, 3, dtype=torch.float64), "x": torch.randn(32, 5, dtype=torch.float64)}
    plain = ps.sample(rp, eps0, ps.MALA(0.1), 50, cuda_graph=False)
    blocks = ps.sample(rp, eps0, ps.MALA(0.1), 50, cuda_graph="eager")
    for k in eps0:
        assert torch.equal(plain.x[k], blocks.x[k])
    assert torch.equal(plain.accept_rate, blocks.accept_rate)


def blows_up(x: torch.Tensor) -> torch.Tensor:
    """Finite at the start, but its gradient pushes chains with x[:, 0] > 4 to infinity."""
    return 0.5 * x.square().sum(1) - torch.where(x[:, 0] > 4.0, x[:, 0].pow(8), torch.zeros_like(x[:, 0]))


@pytest.mark.parametrize("name", ["ula", "kinetic"])
def test_nonfinite_chains_freeze_or_raise_at_the_same_step(name):
    x0 = torch.zeros(16, 2, dtype=torch.float64)
    x0[3, 0] = 4.5  # this chain diverges within a few steps (the others stay near 0)
    sampler = dataclasses.replace(SAMPLERS[name](), on_nonfinite="freeze")
    plain = ps.sample(blows_up, x0, sampler, 60, cuda_graph=False)
    blocks = ps.sample(blows_up, x0, sampler, 60, cuda_graph="eager")
    assert bool(plain.state.frozen[3]) and int(plain.state.frozen.sum()) == 1
    assert_same_run(plain, blocks)
    assert torch.equal(plain.state.frozen, blocks.state.frozen)

    strict = dataclasses.replace(SAMPLERS[name](), on_nonfinite="raise")
    with pytest.raises(FloatingPointError) as plain_error:
        ps.sample(blows_up, x0, strict, 60, cuda_graph=False)
    with pytest.raises(FloatingPointError) as block_error:
        ps.sample(blows_up, x0, strict, 60, cuda_graph="eager")
    assert str(block_error.value) == str(plain_error.value)  # same chain, same step


def _on_meta(state: ps.State) -> ps.State:
    moved = {k: (t.to("meta") if (t := getattr(state, k)) is not None else None) for k in graphs._CARRIED}
    return dataclasses.replace(state, **moved)


@pytest.mark.parametrize("backend", META_BACKENDS)
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_block_body_makes_no_host_sync(backend, name):
    """A captured block must not read device values on the host. On meta tensors every such read
    (.item(), bool(t), .tolist()) raises, so running the block body there proves the steps,
    the step ops (the reference Philox included) and the bookkeeping stay on the device."""
    sampler = SAMPLERS[name]()
    state = sampler.init(quartic, torch.randn(8, 3), 0, backend=backend)
    block = graphs.GraphedBlock(sampler, _on_meta(state), steps=4, thin=2, record=True, capture=False)
    block.run(state.target)
    assert block.static.x.device.type == "meta" and block.trace.shape == (2, 8, 3)
    if name in ("ula", "kinetic"):  # the plain step's non-finite check does sync: the test can tell
        with pytest.raises(RuntimeError, match="meta"):
            sampler.step(_on_meta(state))


def test_block_cache_reuses_blocks_per_target_and_settings():
    graphs.clear_cache()

    def energy(x):
        return quartic(x)

    x0 = torch.randn(16, 2)
    sampler = ps.ULA(0.1)
    state = sampler.init(energy, x0, 0, backend="torch")
    first = graphs.block_for(energy, None, sampler, state, 25, 1, False, capture=False)
    assert graphs.block_for(energy, None, ps.ULA(0.05), state, 25, 1, False, capture=False) is first  # h is state
    assert graphs.block_for(energy, None, ps.ULA(0.1, noise_scale=0.0), state, 25, 1, False, capture=False) is not first
    assert graphs.block_for(quartic, None, sampler, state, 25, 1, False, capture=False) is not first
    # repeated ps.sample calls replay the cached block and still give the plain loop's chains
    for seed in (1, 2):
        plain = ps.sample(energy, x0, sampler, 50, seed=seed, cuda_graph=False, backend="torch")
        blocks = ps.sample(energy, x0, sampler, 50, seed=seed, cuda_graph="eager", backend="torch")
        assert_same_run(plain, blocks)
    graphs.clear_cache()


def test_cache_does_not_keep_the_model_alive():
    # the cache is keyed weakly on the user's target; a cached block must not hold it strongly
    import gc
    import weakref

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

        def forward(self, x):
            return self.body(x).squeeze(-1)

    model = Net()
    energy = ps.EnergyTarget(model)
    ps.sample(energy, torch.randn(8, 2), ps.MALA(0.1), 50, cuda_graph="eager", backend="torch")
    assert len(graphs._CACHE) >= 1
    alive = weakref.ref(energy), weakref.ref(model)
    del energy, model
    gc.collect()
    assert alive[0]() is None and alive[1]() is None
    graphs.clear_cache()


def test_reasons_when_not_graphed():
    x0 = torch.randn(8, 2)
    res = ps.sample(quartic, x0, ps.ULA(0.1), 30)  # "auto" on the CPU: silently the plain loop
    assert not res.cuda_graph and "CUDA graphs capture CUDA work only" in res.cuda_graph_reason
    with pytest.warns(RuntimeWarning, match=r"cuda_graph=True, running the plain loop: the chains are on cpu"):
        forced = ps.sample(quartic, x0, ps.ULA(0.1), 30, cuda_graph=True)
    assert_same_run(res, forced)
    with pytest.raises(ValueError, match="cuda_graph must be True, False or 'auto'"):
        ps.sample(quartic, x0, ps.ULA(0.1), 30, cuda_graph="yes")
    # the other reasons, independent of the device
    cases = {
        "a callback runs Python": dict(callback=lambda *a: None),
        "create_graph=True": dict(create_graph=True),
    }
    for reason, kwargs in cases.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = ps.sample(quartic, x0, ps.ULA(0.1), 30, cuda_graph="eager", **kwargs)
        assert reason in r.cuda_graph_reason
    annealed = ps.KineticLangevin(0.1, schedule=lambda i: (0.1, 1.0))
    assert "schedule is read on the host" in ps.sample(quartic, x0, annealed, 30, cuda_graph="eager").cuda_graph_reason
    assert "no stretch of steps (10 at most" in ps.sample(quartic, x0, ps.ULA(0.1), 10, cuda_graph="eager").cuda_graph_reason
    # 30 steps but neither the burn-in (10) nor the kept part (20) fills a block of 25
    split = ps.sample(quartic, x0, ps.ULA(0.1), 20, burn_in=10, cuda_graph="eager")
    assert "no stretch of steps (20 at most" in split.cuda_graph_reason
    fused = ps.sample(ps.Gaussian(torch.zeros(2), torch.ones(2)), x0, ps.ULA(0.1), 30, cuda_graph="eager")
    if fused.backend.endswith("-fused"):
        assert "fused kernel" in fused.cuda_graph_reason


# ------------------------------------------------------------------------------ GPU only


@needs_cuda
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_captured_chains_match_the_plain_loop(name):
    graphs.clear_cache()
    x0 = torch.randn(256, 8, device="cuda", generator=None)
    net = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.SiLU(), torch.nn.Linear(64, 1), torch.nn.Flatten(0)).cuda()
    plain = ps.sample(net, x0, SAMPLERS[name](), 60, burn_in=10, record=True, thin=5, cuda_graph=False)
    graphed = ps.sample(net, x0, SAMPLERS[name](), 60, burn_in=10, record=True, thin=5, cuda_graph=True)
    assert graphed.cuda_graph and graphed.cuda_graph_reason is None
    assert_same_run(plain, graphed)
    again = ps.sample(net, x0, SAMPLERS[name](), 60, burn_in=10, record=True, thin=5, cuda_graph=True)  # cached
    assert_same_run(plain, again)


@needs_cuda
def test_capture_falls_back_with_the_reason_when_the_model_syncs():
    graphs.clear_cache()

    def syncing(x):
        scale = float(x.abs().max())  # a host sync
        return 0.5 * x.square().sum(1) / max(scale, 1.0)

    x0 = torch.randn(64, 4, device="cuda")
    with pytest.warns(RuntimeWarning, match="capturing the block failed"):
        res = ps.sample(syncing, x0, ps.ULA(0.05), 60, cuda_graph=True)
    assert not res.cuda_graph and "capturing the block failed" in res.cuda_graph_reason
    assert_same_run(ps.sample(syncing, x0, ps.ULA(0.05), 60, cuda_graph=False), res)


@needs_cuda
def test_compiled_energy_is_captured():
    graphs.clear_cache()
    net = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.SiLU(), torch.nn.Linear(64, 1), torch.nn.Flatten(0)).cuda()
    compiled = torch.compile(net)
    x0 = torch.randn(128, 8, device="cuda")
    plain = ps.sample(compiled, x0, ps.KineticLangevin(0.05), 50, cuda_graph=False)
    graphed = ps.sample(compiled, x0, ps.KineticLangevin(0.05), 50, cuda_graph=True)
    assert graphed.cuda_graph
    assert_same_run(plain, graphed)
