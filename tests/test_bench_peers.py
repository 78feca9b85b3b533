"""bench/peers.py: one step of each third-party provider is the workload's update.

On W1's energy (the 25-Gaussian mixture, x0 uniform on [-5, 5]²), one step from the same x0:
* replayed: with the global generator reseeded, the same normals give the workload's formula
  (ULA, BAOA) or the hand-written MALA step of bench/baselines.py, to float32 rounding;
* in law (ULA, BAOA): the residual x1 − E[x1 | x0] over many chains has mean 0 and the
  workload's variance, within Z standard errors (independent of how the library draws noise).
Skipped when torchebm / posteriors is not installed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import pytest
import torch

from conftest import Z
from pysampler.bench.baselines import eager_mala
from pysampler.bench.implementations import Unavailable
from pysampler.bench.workloads import WORKLOADS, energy_fn

CPU = torch.device("cpu")
N = 20_000


def _library(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # posteriors' import-time tensordict warnings
        pytest.importorskip(name)
    from pysampler.bench import peers

    return peers


def _workload(algorithm: str, n_chains: int = N, step_size: float = 0.01, friction: float = 0.0):
    return replace(WORKLOADS["W1"], algorithm=algorithm, n_chains=n_chains, n_steps=1, step_size=step_size, friction=friction)


def _x0_grad(w):
    x0 = w.x0(CPU)
    x = x0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(energy_fn(w.target(CPU))(x).sum(), x)
    return x0, g


def _assert_normal(r: torch.Tensor, var: float) -> None:
    """r's entries are i.i.d. N(0, var): sample mean and second moment within Z standard errors."""
    r = r.flatten().double()
    m = r.numel()
    assert abs(r.mean().item()) < Z * math.sqrt(var / m)
    assert abs(r.square().mean().item() - var) < Z * var * math.sqrt(2.0 / m)


def _kinetic_coefficients(h: float, gamma: float) -> tuple[float, float]:
    return math.exp(-gamma * h), math.sqrt(-math.expm1(-2.0 * gamma * h))


@pytest.mark.parametrize("provider", ["torchebm_langevin", "posteriors_sgmcmc"])
def test_ula_step(provider):
    peers = _library(provider.split("_")[0])
    w = _workload("ula")
    h = w.step_size
    x0, g = _x0_grad(w)
    run = getattr(peers, provider)(w, CPU)

    torch.manual_seed(1)
    x1 = run()
    torch.manual_seed(1)
    expected = x0 - h * g + math.sqrt(2.0 * h) * torch.randn_like(x0)
    torch.testing.assert_close(x1, expected, atol=1e-5, rtol=1e-5)

    torch.manual_seed(2)
    _assert_normal(run() - (x0 - h * g), 2.0 * h)
    assert torch.equal(w.x0(CPU), x0)  # the run leaves x0 alone


def test_torchebm_mala_is_eager_mala():
    peers = _library("torchebm")
    w = _workload("mala", n_chains=4096, step_size=0.1)  # h large enough that many proposals are rejected
    x0 = w.x0(CPU)
    run = peers.torchebm_langevin(w, CPU)
    torch.manual_seed(3)
    x1 = run()
    torch.manual_seed(3)  # same draws in the same order: p ~ N(0, I) (N, d), then u ~ U(0, 1) (N,)
    expected, accepted = eager_mala(energy_fn(w.target(CPU)), x0, w.step_size, 1)
    assert 0.05 < accepted.mean().item() < 0.95
    torch.testing.assert_close(x1, expected, atol=1e-5, rtol=1e-5)


def test_posteriors_kinetic_step():
    peers = _library("posteriors")
    w = _workload("kinetic", friction=1.0)
    h, gamma = w.step_size, w.friction
    decay, noise = _kinetic_coefficients(h, gamma)
    x0, g = _x0_grad(w)
    run = peers.posteriors_sgmcmc(w, CPU)

    torch.manual_seed(4)
    x1 = run()
    torch.manual_seed(4)  # v0 (drawn by init), then the O step's noise
    v0, xi = torch.randn_like(x0), torch.randn_like(x0)
    v = v0 - h * g  # B
    x = x0 + 0.5 * h * v  # A
    v = decay * v + noise * xi  # O
    torch.testing.assert_close(x1, x + 0.5 * h * v, atol=1e-5, rtol=1e-5)  # A

    # in law: x1 = x0 − (h²/2)(1 + e^{−γh})∇U(x0) + (h/2)[(1 + e^{−γh})v0 + √(1 − e^{−2γh})ξ]
    torch.manual_seed(5)
    r = run() - (x0 - 0.5 * h * h * (1.0 + decay) * g)
    _assert_normal(r, (0.5 * h) ** 2 * ((1.0 + decay) ** 2 + noise**2))


@pytest.mark.parametrize(("provider", "algorithm"), [("torchebm_langevin", "kinetic"), ("posteriors_sgmcmc", "mala")])
def test_unsupported_algorithm_is_unavailable(provider, algorithm):
    peers = _library(provider.split("_")[0])
    with pytest.raises(Unavailable):
        getattr(peers, provider)(_workload(algorithm, n_chains=16), CPU)
