"""Kinetic (underdamped) Langevin with the OBABO splitting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from .. import ops
from .base import Sampler, State, StepInfo, advance, check_on_nonfinite, check_positive, per_chain_tensor

__all__ = ["KineticLangevin"]


@dataclass
class KineticLangevin(Sampler):
    """Underdamped Langevin, unit mass, friction γ, OBABO splitting (the KLA of the GEBM paper).

    One step of size h: O(h/2) B(h/2) A(h) [∇U at the new x] B(h/2) O(h/2), where
    O: v ← e^{−γh/2}v + √(1 − e^{−γh})ξ is the exact Ornstein-Uhlenbeck flow,
    B: v ← v − (h/2)∇U(x), A: x ← x + h v (Bussi & Parrinello 2007; Leimkuhler & Matthews
    2015; Arbel, Zhou & Gretton 2021). The gradient is cached: one evaluation per step.
    Unadjusted, so O(h²)-biased. Large γ approaches overdamped Langevin; small γ, HMC.

    Args:
        step_size: h, float or per-chain (N,) tensor, > 0.
        friction: γ, float or per-chain (N,) tensor, > 0.
        on_nonfinite: "raise" or "freeze", as for :class:`ULA`.
        schedule: optional annealing, ``schedule(i) -> (step_size, friction)`` for step i (0-based,
            burn-in included; floats or per-chain (N,) tensors), replacing both before that step,
            e.g. a friction decayed over a GEBM sampling run. It is read on the host each step
            (one device sync per step on a GPU), and the run takes the step-wise path.

    Random stream: N·prod(event) counters at init (v₀ ~ N(0, I)), then 2·N·prod(event) per step.
    """

    step_size: float
    friction: float = 1.0
    on_nonfinite: str = "raise"
    schedule: Callable[[int], tuple[float | torch.Tensor, float | torch.Tensor]] | None = None

    name = "KineticLangevin"

    def __post_init__(self):
        self.step_size = check_positive("step_size", self.step_size)
        self.friction = check_positive("friction", self.friction)
        self.on_nonfinite = check_on_nonfinite(self.on_nonfinite)
        if self.schedule is not None and not callable(self.schedule):
            raise TypeError(f"schedule must be None or a callable i -> (step_size, friction); got {type(self.schedule).__name__}")

    def _scheduled(self, state: State) -> State:
        """The state with step i's (step_size, friction) from the schedule."""
        i = int(state.step)
        pair = self.schedule(i)
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"schedule({i}) must return (step_size, friction); got {pair!r}")
        h = check_positive(f"schedule({i})'s step_size", pair[0])
        gamma = check_positive(f"schedule({i})'s friction", pair[1])
        return replace(
            state, step_size=per_chain_tensor("step_size", h, state.x), friction=per_chain_tensor("friction", gamma, state.x)
        )

    def _init_extra(self, state: State) -> State:
        v = state.backend.momentum(state.rng, state.x)
        return replace(
            state, v=v, friction=per_chain_tensor("friction", self.friction, state.x),
            rng=advance(state.rng, ops.counters("momentum", v)),
        )

    def step(self, state: State) -> tuple[State, StepInfo]:
        if self.schedule is not None:
            state = self._scheduled(state)
        be = state.backend
        x, v = be.kinetic_oba(state.x, state.v, state.grad, state.step_size, state.friction, state.rng)
        energy, grad = self._evaluate(state, x)
        rng = advance(state.rng, ops.counters("kinetic_oba", x))
        v = be.kinetic_bo(v, grad, state.step_size, state.friction, rng)
        new = replace(
            state, x=x, v=v, energy=energy, grad=grad,
            rng=advance(rng, ops.counters("kinetic_bo", x)), step=state.step + 1,
        )
        return self._commit_unadjusted(state, new), self._accept_all(state)
