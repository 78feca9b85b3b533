"""Third-party PyTorch samplers on the same workloads: torchebm and posteriors.

Each provider is ``make(workload, device) -> run`` as in ``bench/implementations.py``: the
energy is the workload's own U (``energy_fn(target)``, (N, d) -> (N,)), the chains start from
``workload.x0``, and the library's arguments are chosen so that its update is the workload's
(ULA with step h; MALA with step h; underdamped Langevin with friction γ and step h). The
library is driven as its documentation shows, without trajectories or diagnostics. Both raise
``Unavailable`` (imported late from ``.implementations``, which imports this module) when the
library is missing or has no sampler for the workload's algorithm.

* ``torchebm_langevin``: torchebm's ``LangevinDynamics`` (ULA) and ``HamiltonianMonteCarlo``
  with one leapfrog step (MALA); no kinetic Langevin sampler in torchebm.
* ``posteriors_sgmcmc``: posteriors' ``sgmcmc.sgld`` with exact gradients (ULA) and
  ``sgmcmc.baoa`` (kinetic Langevin, BAOAB splitting); no MALA in posteriors.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch

from .workloads import Workload, energy_fn

__all__ = ["torchebm_langevin", "posteriors_sgmcmc"]

DTYPE = torch.float32


def _unavailable(reason: str) -> Exception:
    from .implementations import Unavailable  # the registry's exception (imported late: no cycle)

    return Unavailable(reason)


def torchebm_langevin(workload: Workload, device: torch.device) -> Callable[[], torch.Tensor]:
    """torchebm (``torchebm.samplers``) on our energy, wrapped in the smallest ``BaseModel``
    (``forward(x) = U(x)``; torchebm's default ``gradient`` is ``autograd.grad`` of it).

    ula: ``LangevinDynamics(model, step_size=h, noise_scale=1)``, default Euler-Maruyama
    integrator, no clamp: its step is x + h·(−∇U(x)) + √(2·noise_scale²)·√h·ξ, i.e.
    x' = x − h∇U(x) + √(2h)ξ (ξ from ``torch.randn_like``, the global generator).

    mala: ``HamiltonianMonteCarlo(model, step_size=ε=√(2h), n_leapfrog_steps=1)``, unit mass.
    One leapfrog step from p ~ N(0, I) gives x' = x − (ε²/2)∇U(x) + εp = x − h∇U(x) + √(2h)p,
    and accepting with min(1, exp(H(x, p) − H(x', p'))) is exactly MALA's Metropolis-Hastings
    ratio (|p'| is the reverse proposal's noise). torchebm clamps U to ±1e10, the Hamiltonian
    difference to ±50 and forces to ±1e6, and maps NaN to 0 (``safe=True``, not switchable):
    no effect on finite chains with moderate gradients. Per step it evaluates U(x), ∇U(x),
    ∇U(x') and U(x') (nothing cached), where MALA with cached U, ∇U needs one U and one ∇U.

    ``sample(x=x0, n_steps=n)`` runs the chain with the defaults return_trajectory=False,
    return_diagnostics=False, thin=1: nothing is recorded.
    """
    try:
        from torchebm.core import BaseModel
        from torchebm.samplers import HamiltonianMonteCarlo, LangevinDynamics
    except ImportError as exc:
        raise _unavailable(f"torchebm is not installed ({exc}); pip install torchebm") from None
    if workload.algorithm not in ("ula", "mala"):
        raise _unavailable(f"torchebm has no {workload.algorithm} sampler (no underdamped Langevin)")

    class Energy(BaseModel):
        def __init__(self, fn):
            super().__init__(dtype=DTYPE, device=device)
            self.fn = fn

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fn(x)

    model = Energy(energy_fn(workload.target(device, DTYPE)))
    h = workload.step_size
    if workload.algorithm == "ula":
        sampler = LangevinDynamics(model, step_size=h, noise_scale=1.0, dtype=DTYPE, device=device)
    else:
        sampler = HamiltonianMonteCarlo(model, step_size=math.sqrt(2.0 * h), n_leapfrog_steps=1, dtype=DTYPE, device=device)
    x0 = workload.x0(device, DTYPE)

    def run() -> torch.Tensor:
        return sampler.sample(x=x0, n_steps=workload.n_steps)  # x0 is not modified

    return run


def posteriors_sgmcmc(workload: Workload, device: torch.device) -> Callable[[], torch.Tensor]:
    """posteriors (``posteriors.sgmcmc``) with exact gradients: the N chains are one (N, d)
    parameter tensor and ``log_posterior(params, batch) = −ΣU(params)``, whose gradient (taken by
    posteriors with ``torch.func.grad_and_value``) is −∇U(x_i) in row i, as U's rows are
    independent. ``state = transform.init(x0)``, then ``transform.update(state, None,
    inplace=True)`` n times; inplace=True rebinds the state's tensors instead of building a new
    state object each step (it replaces ``.data``, so a copy of x0 is what is updated).
    ``torch.func`` runs some backward formulas decomposed into elementary ops (SiLU's: W3's
    gradient takes about twice ``autograd.grad``'s time); posteriors offers no other path.

    ula: ``sgld.build(log_posterior, lr=h, beta=0, temperature=1)``: x' = x + h·(−∇U(x)) +
    √(T·h·(2 − T·h·β))·ξ = x − h∇U(x) + √(2h)ξ.

    kinetic: ``baoa.build(log_posterior, lr=h, alpha=γ, sigma=1, temperature=1)``, momenta
    v₀ ~ N(0, I) drawn by ``init`` (inside run, as the eager loop draws v₀), then per step
    (Leimkuhler & Matthews' BAOAB with the two half kicks of consecutive steps merged):
    B: v ← v − h∇U(x);  A: x ← x + (h/2)v;  O: v ← e^{−γh}v + √(1 − e^{−2γh})ξ;  A: x ← x + (h/2)v.
    One gradient per step, the same SDE, γ and h as the eager loop's OBABO (O(h/2) B(h/2) A(h)
    B(h/2) O(h/2)), but a different splitting, so not the same chain.
    """
    try:
        with warnings.catch_warnings():  # posteriors' state classes warn at import (tensordict defaults)
            warnings.simplefilter("ignore", FutureWarning)
            from posteriors.sgmcmc import baoa, sgld
    except ImportError as exc:
        raise _unavailable(f"posteriors is not installed ({exc}); pip install posteriors") from None
    if workload.algorithm not in ("ula", "kinetic"):
        raise _unavailable(f"posteriors has no {workload.algorithm} sampler (no Metropolis-adjusted Langevin)")

    energy = energy_fn(workload.target(device, DTYPE))
    no_aux = torch.tensor([], device=device)  # posteriors wants a tensor tree as aux

    def log_posterior(params: torch.Tensor, batch: None) -> tuple[torch.Tensor, torch.Tensor]:
        return -energy(params).sum(), no_aux

    h = workload.step_size
    if workload.algorithm == "ula":
        transform = sgld.build(log_posterior, lr=h, beta=0.0, temperature=1.0)
    else:
        transform = baoa.build(log_posterior, lr=h, alpha=workload.friction, sigma=1.0, temperature=1.0)
    x0 = workload.x0(device, DTYPE)

    def run() -> torch.Tensor:
        state = transform.init(x0.clone())
        for _ in range(workload.n_steps):
            state, _ = transform.update(state, None, inplace=True)
        return state.params

    return run
