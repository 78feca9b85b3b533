"""Hamiltonian Monte Carlo with a fixed number of leapfrog steps."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .. import ops
from .base import Sampler, State, StepInfo, advance, check_positive, check_target_accept

__all__ = ["HMC", "leapfrog"]


def leapfrog(backend, evaluate, x, energy, grad, p, step_size, n_steps, close=True):
    """L leapfrog steps of size h from (x, p) with cached U, ∇U at x.

    The closing half kick of step l and the opening half kick of step l+1 are merged into
    one full kick, so each step is one fused kick-drift plus one gradient evaluation.
    Returns (x, energy, grad, p) at the end of the trajectory; with ``close=False`` p is the
    momentum before the trajectory's closing half kick (HMC's accept kernel applies it).
    """
    half = 0.5 * step_size
    for i in range(n_steps):
        x, p = backend.leapfrog_kick_drift(x, p, grad, half if i == 0 else step_size, step_size)
        energy, grad = evaluate(x)
    return x, energy, grad, (backend.kick(p, grad, half) if close else p)


@dataclass
class HMC(Sampler):
    """HMC: fresh p ~ N(0, I), L leapfrog steps of size h, Metropolis-Hastings on H = U + ½|p|².

    (Duane, Kennedy, Pendleton & Roweth 1987; Neal 2011, "MCMC using Hamiltonian dynamics".)
    Rejected chains keep their position, energy and cached gradient; a non-finite
    Hamiltonian is a rejection. No momentum flip is needed: the momentum is redrawn every step.

    Args:
        step_size: h, a float or per-chain (N,) tensor, > 0.
        n_leapfrog: L >= 1 gradient evaluations per step.
        adapt_step_size, target_accept: per-chain dual averaging during burn-in (0.65 is the
            usual HMC target, Beskos et al. 2013).

    Random stream per step: N·prod(event) counters (momentum), then N (uniforms).
    """

    step_size: float
    n_leapfrog: int = 10
    adapt_step_size: bool = False
    target_accept: float = 0.65

    name = "HMC"
    adjusted = True

    def __post_init__(self):
        self.step_size = check_positive("step_size", self.step_size)
        if isinstance(self.n_leapfrog, bool) or not isinstance(self.n_leapfrog, int) or self.n_leapfrog < 1:
            raise ValueError(f"n_leapfrog must be an int >= 1; got {self.n_leapfrog!r}")
        self.target_accept = check_target_accept(self.target_accept)

    def step(self, state: State) -> tuple[State, StepInfo]:
        be = state.backend
        p0 = be.momentum(state.rng, state.x)
        rng = advance(state.rng, ops.counters("momentum", p0))
        y, energy_y, grad_y, p = leapfrog(
            be, lambda z: self._evaluate(state, z), state.x, state.energy, state.grad, p0, state.step_size, self.n_leapfrog,
            close=False,
        )
        # The closing half kick happens inside the accept: one pass fewer over the momentum.
        x, energy, grad, accept_prob, accepted = be.hmc_accept(
            state.x, state.energy, state.grad, p0, y, energy_y, grad_y, p, 0.5 * state.step_size, rng
        )
        new = replace(
            state, x=x, energy=energy, grad=grad,
            rng=advance(rng, ops.counters("hmc_accept", x)), step=state.step + 1,
        )
        return new, StepInfo(accept_prob, accepted)
