"""Unadjusted Langevin algorithm (ULA) and its noise-free gradient flow."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .. import ops
from .base import Sampler, State, StepInfo, advance, check_on_nonfinite, check_positive

__all__ = ["ULA"]


@dataclass
class ULA(Sampler):
    """x' = x − h∇U(x) + √(2h)·noise_scale·ξ, ξ ~ N(0, I) (Roberts & Tweedie 1996).

    ``noise_scale=0`` is the noise-free gradient flow of the dissertation's ch. 5
    (../shared/seeds/004). Unadjusted: biased by O(h); MALA corrects it.

    Args:
        step_size: h, a float or per-chain (N,) tensor, > 0.
        noise_scale: multiplies the injected noise; 1 samples exp(−U), 0 is gradient descent.
        on_nonfinite: "raise" (default) stops with the chains and step that turned NaN/inf;
            "freeze" keeps those chains at their last finite state.

    On a target with a closed-form standard-normal prior (``ps.LatentTarget``,
    ``ps.ReparamTarget``: ``kernel_prior``), the prior's gradient is added inside the update
    kernel, and the state caches the rest of the gradient (``State.prior_weight``).

    Random stream: N·prod(event) counters per step (one normal per element).
    """

    step_size: float
    noise_scale: float = 1.0
    on_nonfinite: str = "raise"

    name = "ULA"
    adds_kernel_prior = True

    def __post_init__(self):
        self.step_size = check_positive("step_size", self.step_size)
        if not isinstance(self.noise_scale, (int, float)) or not self.noise_scale >= 0:
            raise ValueError(f"noise_scale must be a float >= 0; got {self.noise_scale!r}")
        self.noise_scale = float(self.noise_scale)
        self.on_nonfinite = check_on_nonfinite(self.on_nonfinite)

    def step(self, state: State) -> tuple[State, StepInfo]:
        x = state.backend.ula_step(
            state.x, state.grad, state.step_size, self.noise_scale, state.rng, prior_weight=state.prior_weight
        )
        energy, grad = self._evaluate(state, x)
        new = replace(
            state, x=x, energy=energy, grad=grad,
            rng=advance(state.rng, ops.counters("ula_step", x)), step=state.step + 1,
        )
        return self._commit_unadjusted(state, new), self._accept_all(state)
