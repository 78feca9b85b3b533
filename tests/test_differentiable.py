"""Differentiable short chains (create_graph=True): gradients to the energy's and the generator's
parameters through the whole chain, against central finite differences of the same chain (same
seed, so the same noise)."""

import pytest
import torch

import pysampler as ps

F64 = torch.float64


def _central_difference(loss, param: torch.Tensor, index: tuple, delta: float = 1e-6) -> float:
    with torch.no_grad():
        saved = param[index].item()
        param[index] = saved + delta
        up = loss().item()
        param[index] = saved - delta
        down = loss().item()
        param[index] = saved
    return (up - down) / (2 * delta)


@pytest.mark.parametrize("sampler", [ps.ULA(0.05), ps.ULA(0.05, noise_scale=0.0), ps.KineticLangevin(0.1, friction=1.0)],
                         ids=["ula", "gradient-flow", "kinetic"])
def test_energy_parameter_gradient_through_a_chain(sampler):
    theta = torch.tensor([0.7, -0.3], dtype=F64, requires_grad=True)

    def energy(x):
        return 0.65 * (x - theta).square().sum(1) + 0.1 * x.pow(4).sum(1)

    x0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=F64)

    def loss(create_graph=False):
        res = ps.sample(energy, x0, sampler, 10, seed=3, backend="torch", create_graph=create_graph)
        return (res.x.square().sum(1) + res.x[:, 0]).mean()

    (grad,) = torch.autograd.grad(loss(create_graph=True), theta)
    for i in range(2):
        assert grad[i].item() == pytest.approx(_central_difference(loss, theta, (i,)), rel=1e-6, abs=1e-8)


def test_generator_parameter_gradient_through_a_latent_chain():
    # GEBM-style: chains in a generator's latent space, loss on the decoded samples; the gradient
    # reaches the generator's weights both through the energy E(G(z)) and through G at the end.
    torch.manual_seed(0)
    gen = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).to(F64)
    target = ps.LatentTarget(gen, lambda x: 0.5 * (x - 1.0).square().sum(1), temperature=0.5)
    z0 = torch.randn(8, 3, generator=torch.Generator().manual_seed(1), dtype=F64)

    def loss(create_graph=False):
        res = ps.sample(target, z0, ps.ULA(0.05), 6, seed=5, backend="torch", create_graph=create_graph)
        return gen(res.x).square().mean()

    weight = gen[0].weight
    (grad,) = torch.autograd.grad(loss(create_graph=True), weight)
    for index in [(0, 0), (2, 1), (3, 2)]:
        assert grad[index].item() == pytest.approx(_central_difference(loss, weight, index), rel=1e-6, abs=1e-8)
