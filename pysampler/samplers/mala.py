"""Metropolis-adjusted Langevin algorithm (MALA)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .. import ops
from .base import Sampler, State, StepInfo, advance, check_positive, check_target_accept

__all__ = ["MALA"]


@dataclass
class MALA(Sampler):
    """ULA proposal y = x − h∇U(x) + √(2h)ξ with a Metropolis-Hastings test (Roberts & Tweedie 1996).

    U and ∇U are cached in the state, so a step costs one energy-and-gradient evaluation.
    Proposals whose position, energy or gradient is non-finite are rejected.

    Args:
        step_size: h, a float or per-chain (N,) tensor, > 0.
        adapt_step_size: adapt h per chain by dual averaging during ``ps.sample``'s burn-in.
        target_accept: acceptance rate the adaptation aims at (0.574 is optimal for MALA in
            high dimension, Roberts & Rosenthal 1998).

    Random stream per step: N·prod(event) counters (proposal noise), then N (uniforms).
    """

    step_size: float
    adapt_step_size: bool = False
    target_accept: float = 0.574

    name = "MALA"
    adjusted = True

    def __post_init__(self):
        self.step_size = check_positive("step_size", self.step_size)
        self.target_accept = check_target_accept(self.target_accept)

    def step(self, state: State) -> tuple[State, StepInfo]:
        be = state.backend
        y = be.ula_step(state.x, state.grad, state.step_size, 1.0, state.rng)
        energy_y, grad_y = self._evaluate(state, y)
        rng = advance(state.rng, ops.counters("ula_step", y))
        x, energy, grad, accept_prob, accepted = be.mala_accept(
            state.x, state.energy, state.grad, y, energy_y, grad_y, state.step_size, rng
        )
        new = replace(
            state, x=x, energy=energy, grad=grad,
            rng=advance(rng, ops.counters("mala_accept", y)), step=state.step + 1,
        )
        return new, StepInfo(accept_prob, accepted)
