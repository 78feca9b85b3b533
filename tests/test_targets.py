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
