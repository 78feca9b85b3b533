"""Fusable targets: MLPEnergy's structure checks, and its hand-written gradient (the fused kernels'
computation) against autograd."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pysampler as ps
from pysampler.targets import MLP_MAX_LAYERS, MLP_MAX_WIDTH

ACTIVATIONS = {
    "silu": nn.SiLU(),
    "tanh": nn.Tanh(),
    "softplus": nn.Softplus(),
    "softplus_beta2_threshold1": nn.Softplus(beta=2.0, threshold=1.0),
    "relu": nn.ReLU(),
    "leaky_relu": nn.LeakyReLU(0.2),
    "gelu": nn.GELU(),
    "gelu_tanh": nn.GELU(approximate="tanh"),
}


def _mlp(widths: list[int], act: nn.Module, dtype=torch.float64, bias: bool = True, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(widths) - 2:
            layers.append(act)
    return nn.Sequential(*layers).to(dtype)


@pytest.mark.parametrize("act", list(ACTIVATIONS), ids=str)
@pytest.mark.parametrize("widths", [[2, 1], [2, 32, 1], [3, 16, 8, 1], [5, 64, 64, 32, 1]], ids=str)
@pytest.mark.parametrize("prior_weight", [0.0, 0.7])
def test_mlp_gradient_matches_autograd(act, widths, prior_weight):
    module = _mlp(widths, ACTIVATIONS[act])
    target = ps.MLPEnergy(module, prior_weight=prior_weight)
    # wide inputs: every activation's branches (Softplus above its threshold, ReLU's zero side) occur
    x = torch.randn(257, widths[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 3
    u, g = target.energy_and_grad_by_hand(x)
    u_ref, g_ref = target.energy_and_grad(x)  # autograd through the module's own forward
    torch.testing.assert_close(u, u_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)
    assert not u.requires_grad and not g.requires_grad


def test_mlp_without_bias_and_float32():
    module = _mlp([4, 32, 32, 1], nn.SiLU(), dtype=torch.float32, bias=False)
    target = ps.MLPEnergy(module, prior_weight=1.0)
    x = torch.randn(64, 4)
    u, g = target.energy_and_grad_by_hand(x)
    u_ref, g_ref = target.energy_and_grad(x)
    torch.testing.assert_close(u, u_ref)
    torch.testing.assert_close(g, g_ref)
    assert [layer.bias.abs().max().item() for layer in target.layers()] == [0.0, 0.0, 0.0]


def test_mlp_create_graph_reaches_the_parameters():
    module = _mlp([2, 8, 1], nn.Tanh())
    target = ps.MLPEnergy(module)
    x = torch.randn(16, 2, dtype=torch.float64)
    u, g = target.energy_and_grad(x, create_graph=True)
    (g.square().sum() + u.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_mlp_sees_parameter_updates():
    module = _mlp([2, 8, 1], nn.Tanh())
    target = ps.MLPEnergy(module)
    x = torch.randn(16, 2, dtype=torch.float64)
    before = target.energy(x)
    with torch.no_grad():
        module[-1].bias += 1.0
    torch.testing.assert_close(target.energy(x), before + 1.0)


def test_mlp_samples_like_an_energy_target():
    # a correct target unfused: every sampler runs on it through the generic path
    module = _mlp([2, 16, 1], nn.SiLU(), dtype=torch.float32)
    res = ps.sample(ps.MLPEnergy(module, prior_weight=1.0), torch.zeros(64, 2), ps.MALA(0.1), n_steps=5, seed=0, backend="torch")
    assert res.x.shape == (64, 2) and torch.isfinite(res.x).all()


@pytest.mark.parametrize(
    ("module", "why"),
    [
        (nn.Linear(2, 1), "not an nn.Sequential"),
        (nn.Sequential(nn.Linear(2, 4), nn.Sigmoid(), nn.Linear(4, 1)), "Sigmoid is not a fusable activation"),
        (nn.Sequential(nn.Linear(2, 4), nn.ReLU()), "end with a Linear"),
        (nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 1), nn.ReLU(), nn.Linear(1, 1)), "alternate"),
        (nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3)), "3 outputs"),
        (nn.Sequential(nn.Linear(2, MLP_MAX_WIDTH + 1), nn.ReLU(), nn.Linear(MLP_MAX_WIDTH + 1, 1)), "wider than"),
        (nn.Sequential(nn.Linear(MLP_MAX_WIDTH + 1, 4), nn.ReLU(), nn.Linear(4, 1)), "input has"),
        (_mlp([2] + [4] * MLP_MAX_LAYERS + [1], nn.ReLU()), f"at most {MLP_MAX_LAYERS}"),
    ],
    ids=["linear", "sigmoid", "ends-with-activation", "two-linears", "vector-output", "too-wide", "wide-input", "too-deep"],
)
def test_mlp_rejects_what_it_cannot_fuse(module, why):
    with pytest.raises(ValueError, match=why) as info:
        ps.MLPEnergy(module)
    assert "EnergyTarget" in str(info.value)


def test_mlp_bad_arguments():
    module = _mlp([2, 4, 1], nn.ReLU())
    with pytest.raises(ValueError, match="prior_weight"):
        ps.MLPEnergy(module, prior_weight=-1.0)
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        ps.MLPEnergy(module).energy(torch.zeros(3, 5, dtype=torch.float64))


# ------------------------------------------------------------------ the prior in ULA's kernel


def _latent_model():
    gen = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 4)).double()
    energy = nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Linear(8, 1), nn.Flatten(0)).double()
    return gen, energy


@pytest.mark.parametrize("backend", ps.available_backends("cpu"))
def test_ula_adds_the_latent_prior_in_its_kernel(backend):
    # ULA on a LatentTarget caches only ∇(T·E∘G) and adds the prior's z inside ula_step; the chain
    # must be the chain of the same U differentiated whole by autograd (a plain energy target).
    gen, energy = _latent_model()
    target = ps.LatentTarget(gen, energy, temperature=0.7)
    z0 = torch.randn(40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    kernel = ps.sample(target, z0, ps.ULA(0.05), 30, seed=4, backend=backend)
    whole = ps.sample(target.potential, z0, ps.ULA(0.05), 30, seed=4, backend=backend)
    assert kernel.state.prior_weight == 1.0 and whole.state.prior_weight == 0.0
    torch.testing.assert_close(kernel.x, whole.x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kernel.state.energy, whole.state.energy, rtol=1e-12, atol=1e-12)
    # the cached gradient leaves the prior out
    torch.testing.assert_close(kernel.state.grad + kernel.x, whole.state.grad, rtol=1e-12, atol=1e-12)
    # ReparamTarget: the same on a structured ε (the flat state's prior is ½|ε|² over all groups)
    rp = ps.ReparamTarget(lambda e: gen(e["z"]) + 0.1 * e["x"], energy)
    eps0 = {"z": z0, "x": torch.zeros(40, 4, dtype=torch.float64)}
    a = ps.sample(rp, eps0, ps.ULA(0.05), 20, seed=4, backend=backend)
    b = ps.sample(rp.potential, eps0, ps.ULA(0.05), 20, seed=4, backend=backend)
    assert a.state.prior_weight == 1.0
    for k in eps0:
        torch.testing.assert_close(a.x[k], b.x[k], rtol=1e-12, atol=1e-12)


def test_kernel_prior_state_saves_and_resumes():
    gen, energy = _latent_model()
    target = ps.LatentTarget(gen, energy)
    sampler = ps.ULA(0.05)
    state = sampler.init(target, torch.randn(16, 3, dtype=torch.float64), seed=3)
    for _ in range(5):
        state, _ = sampler.step(state)
    saved = state.state_dict()
    assert float(saved["prior_weight"]) == 1.0
    resumed = sampler.load_state(target, saved)
    a, b = state, resumed
    for _ in range(5):
        a, _ = sampler.step(a)
        b, _ = sampler.step(b)
    assert torch.equal(a.x, b.x) and torch.equal(a.grad, b.grad)
    # MALA caches the full gradient: a ULA state's gradient would be silently wrong there
    with pytest.raises(ValueError, match="leaves out a prior term of weight 1.0, but MALA on LatentTarget expects 0.0"):
        ps.MALA(0.05).load_state(target, saved)
    # a target kind without the closed-form prior must implement the split itself to set it
    class Custom(ps.Target):
        kernel_prior = 1.0

        def potential(self, x):
            return 0.5 * x.square().sum(1)

    with pytest.raises(NotImplementedError, match="Custom sets kernel_prior"):
        sampler.init(Custom(), torch.zeros(4, 2))
