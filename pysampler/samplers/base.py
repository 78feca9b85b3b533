"""Shared pieces of every sampler: the chain state, step info, argument checks.

Pure steps, explicit state (as in BlackJAX): ``state = sampler.init(target, x0, seed)``,
``state, info = sampler.step(state)``. A step never mutates its input state, so a saved
state (``state.state_dict()``) resumes exactly: the random stream continues at
``state.rng[1]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from ..backends import Backend, resolve
from ..ops import compute_dtype
from ..targets import EnergyTarget, Target

__all__ = ["State", "StepInfo", "Sampler", "as_target"]

_SAVED = ("x", "energy", "grad", "step_size", "rng", "step", "frozen", "v", "friction")


@dataclass
class State:
    """A batch of N chains.

    x: (N, *event) positions; energy: (N,) U(x); grad: (N, *event) ∇U(x) (cached, so a step
    costs one new evaluation); step_size: (N,) per chain; rng: int64 (2,) = (seed, offset)
    of the next draw; step: int64 () steps taken; frozen: (N,) bool chains stopped after
    turning non-finite (on_nonfinite="freeze"); v: (N, *event) velocity and friction (N,)
    (kinetic Langevin only); prior_weight: w when ``grad`` holds ∇U(x) − w·x and the update kernel
    adds the prior term w·x itself (ULA on a target with ``kernel_prior``; 0 otherwise).
    ``target``, ``backend``, ``create_graph`` and ``sync_free`` say how
    to step and are not saved. ``sync_free``: the step makes no host sync (inside a CUDA-graph
    block, :mod:`pysampler.graphs`): chains that turn non-finite are frozen on the device and the
    caller reads ``frozen`` after the block to raise.
    """

    x: torch.Tensor
    energy: torch.Tensor
    grad: torch.Tensor
    step_size: torch.Tensor
    rng: torch.Tensor
    step: torch.Tensor
    frozen: torch.Tensor
    v: torch.Tensor | None = None
    friction: torch.Tensor | None = None
    prior_weight: float = 0.0
    target: Target | None = field(default=None, repr=False, compare=False)
    backend: Backend | None = field(default=None, repr=False, compare=False)
    create_graph: bool = field(default=False, repr=False, compare=False)
    sync_free: bool = field(default=False, repr=False, compare=False)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors of the state (detached), for ``torch.save``; resume with ``sampler.load_state``."""
        out = {k: getattr(self, k).detach().clone() for k in _SAVED if getattr(self, k) is not None}
        if self.prior_weight != 0.0:  # what `grad` leaves out (absent: nothing)
            out["prior_weight"] = torch.tensor(self.prior_weight, dtype=torch.float64)
        return out


@dataclass
class StepInfo:
    """What a step reports: accept_prob (N,) min(1, α) (ones for unadjusted samplers), accepted (N,) bool."""

    accept_prob: torch.Tensor
    accepted: torch.Tensor


def advance(rng: torch.Tensor, n: int) -> torch.Tensor:
    """(seed, offset) -> (seed, offset + n), out of place."""
    out = rng.clone()
    out[1] += n
    return out


def as_target(target: Any) -> Target:
    """A Target as is; any other callable (function or nn.Module energy) wrapped in EnergyTarget."""
    if isinstance(target, Target):
        return target
    if callable(target):
        return EnergyTarget(target)
    raise TypeError(f"target must be a pysampler Target or a callable energy (N, *event) -> (N,); got {type(target).__name__}")


def check_positive(name: str, value: Any) -> float | torch.Tensor:
    """Validate a float or tensor hyper-parameter that must be finite and > 0; returns it."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a float or a floating tensor; got dtype {value.dtype}")
        if value.ndim > 1:
            raise ValueError(f"{name} must be a float or a per-chain (N,) tensor; got shape {tuple(value.shape)}")
        bad = ~(torch.isfinite(value) & (value > 0))
        if bool(bad.any()):
            raise ValueError(f"{name} must be finite and > 0; {int(bad.sum())} of {value.numel()} entries are not")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float or a per-chain (N,) tensor; got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0; got {value}")
    return float(value)


def per_chain_tensor(name: str, value: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A float or (N,)/() tensor as an (N,) tensor of x's compute dtype (float32 for half storage) and device."""
    n = x.shape[0]
    t = torch.as_tensor(value, dtype=compute_dtype(x.dtype), device=x.device)
    if t.ndim == 1 and t.shape[0] != n:
        raise ValueError(f"{name} must be a float or a per-chain ({n},) tensor for {n} chains; got shape {tuple(t.shape)}")
    return t.expand(n).clone()


def check_x0(x0: Any) -> torch.Tensor:
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"x0 must be a torch.Tensor of shape (N, *event); got {type(x0).__name__}")
    if x0.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        # float16 / bfloat16 are storage: every backend does a step's arithmetic in float32.
        raise TypeError(f"x0 must be float32, float64, float16 or bfloat16; got {x0.dtype} (use x0.float())")
    if x0.ndim < 2 or x0.shape[0] < 1:
        raise ValueError(
            f"x0 must have shape (N, *event) with N >= 1 chains and at least one event dimension; got {tuple(x0.shape)} "
            "(for a 1-D target use x0[:, None])"
        )
    bad = ~torch.isfinite(x0.detach().flatten(1)).all(1)
    if bool(bad.any()):
        raise ValueError(f"x0 must be finite; {int(bad.sum())} chains have NaN or inf (first: {bad.nonzero()[:5, 0].tolist()})")
    return x0


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an int in [0, 2**63); got {seed!r}")
    return seed


def nonfinite_chains(*tensors: torch.Tensor) -> torch.Tensor:
    """(N,) bool: chains where any of the given (N, ...) tensors has NaN or inf.

    A row with NaN or inf has a non-finite sum, so one reduction per tensor does it (a finite row
    is only flagged if its sum overflows, i.e. at values near the dtype's max: a chain that far
    out has blown up anyway).
    """
    total = None
    for t in tensors:
        # Half-precision rows are summed in float32: float16 would overflow at a sum of 65504.
        row = t.detach().reshape(t.shape[0], -1).sum(1, dtype=compute_dtype(t.dtype))
        total = row if total is None else total + row
    return ~torch.isfinite(total)


class Sampler:
    """Base class of the sampler configs. Subclasses set ``name`` and implement ``_init_extra``/``step``."""

    name = "sampler"
    #: whether the step has a Metropolis-Hastings test (adaptation needs it)
    adjusted = False
    #: whether the step ops add a target's closed-form prior gradient themselves (Target.kernel_prior)
    adds_kernel_prior = False
    adapt_step_size = False
    target_accept = 0.0

    def init(
        self,
        target: Target | Callable,
        x0: torch.Tensor,
        seed: int = 0,
        *,
        backend: str = "auto",
        create_graph: bool = False,
    ) -> State:
        """Initial state: evaluates U and ∇U at x0 (N, *event) and validates every input."""
        target = as_target(target)
        x0 = check_x0(x0)
        target.validate(x0)
        seed = check_seed(seed)
        resolved = resolve(backend, x0.device, differentiable=create_graph, dtype=x0.dtype)
        x = x0 if create_graph else x0.detach()
        prior_weight = float(target.kernel_prior) if self.adds_kernel_prior else 0.0
        energy, grad = _evaluate(target, x, create_graph, prior_weight)
        bad = nonfinite_chains(energy, grad)
        if bool(bad.any()):
            raise ValueError(
                f"the energy or its gradient is non-finite at x0 for {int(bad.sum())} chains "
                f"(first: {bad.nonzero()[:5, 0].tolist()}); start the chains where the energy is finite"
            )
        state = State(
            x=x,
            energy=energy,
            grad=grad,
            step_size=per_chain_tensor("step_size", self.step_size, x),
            rng=torch.tensor([seed, 0], dtype=torch.int64, device=x.device),
            step=torch.zeros((), dtype=torch.int64, device=x.device),
            frozen=torch.zeros(x.shape[0], dtype=torch.bool, device=x.device),
            prior_weight=prior_weight,
            target=target,
            backend=resolved,
            create_graph=create_graph,
        )
        return self._init_extra(state)

    def _init_extra(self, state: State) -> State:
        return state

    def step(self, state: State) -> tuple[State, StepInfo]:
        raise NotImplementedError

    def load_state(
        self,
        target: Target | Callable,
        state_dict: dict[str, torch.Tensor],
        *,
        backend: str = "auto",
        create_graph: bool = False,
    ) -> State:
        """Rebuild a state saved with ``state.state_dict()``; stepping it continues the same chains."""
        missing = [k for k in ("x", "energy", "grad", "step_size", "rng", "step", "frozen") if k not in state_dict]
        if missing:
            raise ValueError(f"state_dict is missing {missing}; save it with state.state_dict()")
        target = as_target(target)
        x = check_x0(state_dict["x"])
        target.validate(x)
        kwargs = {f.name: state_dict.get(f.name) for f in fields(State) if f.name in _SAVED}
        prior_weight = float(state_dict.get("prior_weight", 0.0))
        expected = float(target.kernel_prior) if self.adds_kernel_prior else 0.0
        if prior_weight != expected:
            raise ValueError(
                f"state_dict's cached gradient leaves out a prior term of weight {prior_weight}, but {self.name} on "
                f"{type(target).__name__} expects {expected}: load it with the sampler and target kind that saved it"
            )
        resolved = resolve(backend, x.device, differentiable=create_graph, dtype=x.dtype)
        return State(**kwargs, prior_weight=prior_weight, target=target, backend=resolved, create_graph=create_graph)

    def _evaluate(self, state: State, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _evaluate(state.target, x, state.create_graph, state.prior_weight)

    @staticmethod
    def _accept_all(state: State) -> StepInfo:
        n = state.x.shape[0]
        ones = torch.ones(n, dtype=compute_dtype(state.x.dtype), device=state.x.device)
        return StepInfo(ones, ones.bool())

    def _commit_unadjusted(self, state: State, new: State) -> State:
        """For ULA / kinetic Langevin: catch chains that turned non-finite, raise or freeze them."""
        tensors = [new.x, new.energy, new.grad] + ([new.v] if new.v is not None else [])
        bad = nonfinite_chains(*tensors) & ~state.frozen
        frozen = state.frozen | bad
        # The one host sync per step, nothing more when all chains are fine. Sync-free (a CUDA-graph
        # block) selects unconditionally, which gives the same values, and leaves raising to the caller.
        if state.sync_free or bool(frozen.any()):
            if self.on_nonfinite == "raise" and not state.sync_free:  # then nothing was frozen before: the new ones are `bad`
                idx = bad.nonzero()[:, 0].tolist()
                shown = ", ".join(map(str, idx[:10])) + (", ..." if len(idx) > 10 else "")
                raise FloatingPointError(
                    f"{self.name}: {len(idx)} chain(s) became non-finite at step {int(state.step) + 1} "
                    f"(chains {shown}); lower step_size, or pass on_nonfinite='freeze' to stop those chains instead"
                )
            keep = {}
            for name in ("x", "energy", "grad", "v"):
                old, cur = getattr(state, name), getattr(new, name)
                if cur is not None:
                    keep[name] = torch.where(frozen.reshape(-1, *([1] * (cur.ndim - 1))), old, cur)
            new = replace(new, **keep)
        return replace(new, frozen=frozen)


def _evaluate(target: Target, x: torch.Tensor, create_graph: bool, prior_weight: float):
    """(U(x), ∇U(x) − prior_weight·x): the full gradient when prior_weight is 0."""
    if prior_weight != 0.0:
        return target.energy_and_grad_without_prior(x, create_graph=create_graph)
    return target.energy_and_grad(x, create_graph=create_graph)


def check_on_nonfinite(value: str) -> str:
    if value not in ("raise", "freeze"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'freeze'; got {value!r}")
    return value


def check_target_accept(value: float) -> float:
    if not (isinstance(value, (int, float)) and 0.0 < value < 1.0):
        raise ValueError(f"target_accept must be in (0, 1); got {value!r}")
    return float(value)
