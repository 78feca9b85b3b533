"""``ps.sample``: the convenient loop over ``sampler.step`` (burn-in, thinning, trace, progress, adaptation)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import torch
from tqdm.auto import tqdm

from . import diagnostics, graphs
from .fused import FUSED_BACKENDS, STEPWISE_BACKEND, fused_backend_for, run_fused, why_not_fused
from .ops import compute_dtype
from .samplers.adaptation import DualAveraging
from .samplers.base import Sampler, State, StepInfo, as_target
from .structure import StateLayout, is_structure
from .targets import FlatTarget, Target

__all__ = ["sample", "SampleResult"]


@dataclass
class SampleResult:
    """What :func:`sample` returns.

    x: (N, *event) final states (for a structured x0: the same tuple / list / dict of tensors);
    accept_rate: (N,) fraction of accepted post-burn-in steps (ones for ULA and kinetic Langevin);
    trace: (n_steps // thin, N, *event) recorded states (structured like x), or None; backend: the
    backend that ran ("torch", "cpp", "cpp-fused", ...); state: the final sampler state, over the
    flat (N, D) state for a structured x0 (``state.state_dict()`` saves it; step it further to
    continue the same chains); layout: how a structured state maps to the flat one (None for a tensor);
    cuda_graph: whether blocks of steps were replayed from captured CUDA graphs; cuda_graph_reason:
    why not, in one line (None when they were).
    """

    x: Any
    accept_rate: torch.Tensor
    trace: Any
    backend: str
    state: State
    layout: StateLayout | None = field(default=None)
    cuda_graph: bool = False
    cuda_graph_reason: str | None = None

    @property
    def step_size(self) -> torch.Tensor:
        """(N,) the step sizes used after burn-in (adapted when adaptation was on)."""
        return self.state.step_size

    @cached_property
    def diagnostics(self) -> dict[str, Any] | None:
        """Convergence summary of the recorded trace (``record=True``), else None.

        ``pysampler.diagnostics.summary`` of the trace: ``mean``, ``sd``, ``ess`` (bulk),
        ``ess_mean``, ``mcse_mean`` and ``rhat`` (rank-normalised split R-hat) per coordinate
        (structured like x for a structured state), and ``acceptance`` (N,), the per-chain
        acceptance rate. Computed on first access.
        """
        if self.trace is None:
            return None
        flat = self.layout.flatten(self.trace) if self.layout is not None else self.trace
        if flat.shape[0] < 4:
            return None  # split R-hat and ESS need at least two draws per half-chain
        out: dict[str, Any] = diagnostics.summary(flat.detach())
        if self.layout is not None:
            out = {k: self.layout.unflatten(v) for k, v in out.items()}
        out["acceptance"] = self.accept_rate
        return out


def _show_progress(bar: tqdm, accepted: torch.Tensor, kept_steps: int, n_chains: int, started: float) -> None:
    """The progress bar's postfix: mean acceptance so far (after burn-in) and chain-steps/s."""
    elapsed = max(time.perf_counter() - started, 1e-9)
    postfix = {"chain-steps/s": f"{bar.n * n_chains / elapsed:.3g}"}
    if kept_steps > 0:
        postfix["accept"] = f"{float(accepted.mean()) / kept_steps:.3f}"
    bar.set_postfix(postfix, refresh=False)


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")
    return value


def sample(
    target: Target | Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor | tuple | list | dict,
    sampler: Sampler,
    n_steps: int,
    seed: int = 0,
    backend: str = "auto",
    burn_in: int = 0,
    thin: int = 1,
    record: bool = False,
    progress: bool = False,
    *,
    create_graph: bool = False,
    callback: Callable[[int, State, StepInfo], None] | None = None,
    cuda_graph: bool | str = "auto",
) -> SampleResult:
    """Run N chains from x0 (N, *event) for ``burn_in + n_steps`` steps of ``sampler``.

    Args:
        target: a Target, or any callable / nn.Module energy mapping (N, *event) -> (N,).
        x0: initial states, one chain per row; float32 or float64 (or float16 / bfloat16 storage with
            float32 arithmetic), finite. Or a tuple, list or dict of such (N, *shape_i) tensors
            (for example a VAE's noise groups, see ``ps.ReparamTarget``): the chains then move in
            all groups at once with one step size, the target receives the same structure, and
            ``res.x`` / ``res.trace`` come back in it.
        sampler: ``ps.ULA``, ``ps.MALA``, ``ps.KineticLangevin`` or ``ps.HMC``.
        n_steps: steps after burn-in (>= 0).
        seed: selects the random stream; same seed and backend ⇒ same chains, bit for bit.
        backend: "auto" (fastest available for x0's device: the whole-chain fused kernels,
            "cpp-fused" on the CPU and "triton-fused" on CUDA, when the target and run allow
            them, see ``pysampler.fused``), a name from ``ps.available_backends(x0.device)``
            (step-wise), "cpp-fused" or "triton-fused".
        burn_in: steps run first and discarded; MALA/HMC step sizes adapt during them when
            the sampler has ``adapt_step_size=True``.
        thin: keep every ``thin``-th post-burn-in state in the trace.
        record: keep the trace (n_steps // thin, N, *event).
        progress: show a tqdm progress bar with the mean acceptance after burn-in and chain-steps/s.
        create_graph: keep the autograd graph through the chain (to x0 and the model's
            parameters), for trainers that backpropagate through short chains.
        callback: called as ``callback(i, state, info)`` after every step (i counts burn-in too).
        cuda_graph: True, False or "auto" (the default: True for CUDA chains that allow it). Runs
            the step-wise chain in blocks of ``pysampler.graphs.BLOCK_STEPS`` steps, each captured
            once as a CUDA graph (the energy's forward and backward included) and replayed: the
            same chains as the plain loop, bit for bit, without its launch and Python overhead.
            Blocks are cached per target object, so repeated calls (a training loop) capture once.
            When capture is impossible (CPU chains, a callback, create_graph, a schedule, a model
            that synchronises with the host or changes shapes) the plain loop runs and
            ``res.cuda_graph_reason`` says why; with True, a one-line warning says it too.
    """
    if not isinstance(sampler, Sampler):
        raise TypeError(f"sampler must be a pysampler sampler such as ps.ULA(0.01); got {type(sampler).__name__}")
    n_steps = _check_count("n_steps", n_steps, 0)
    burn_in = _check_count("burn_in", burn_in, 0)
    thin = _check_count("thin", thin, 1)
    if cuda_graph not in (True, False, "auto", "eager"):
        raise ValueError(f"cuda_graph must be True, False or 'auto'; got {cuda_graph!r}")
    graph_owner = target  # graphs are cached per object the user passed
    layout = None
    if is_structure(x0):  # the samplers step one flat (N, D) state; the target sees the groups
        layout = StateLayout.of(x0)
        target = FlatTarget(as_target(target), layout)
        x0 = layout.flatten(x0)
    fused = False
    fused_backend = None
    if (backend == "auto" or backend in FUSED_BACKENDS) and isinstance(x0, torch.Tensor):
        fused_backend = fused_backend_for(x0.device) if backend == "auto" else backend
        why = why_not_fused(
            as_target(target), sampler, x0, create_graph=create_graph, callback=callback, backend=fused_backend
        )
        if backend in FUSED_BACKENDS and why is not None:
            raise ValueError(f"backend={backend!r} cannot run this: {why}; use backend='auto'")
        fused = why is None
    # a fused run's step-wise part (an adapting burn-in) uses the same family's step ops
    stepwise_backend = STEPWISE_BACKEND[fused_backend] if fused else backend
    state = sampler.init(target, x0, seed, backend=stepwise_backend, create_graph=create_graph)
    adapt = DualAveraging(state.step_size, sampler.target_accept) if (sampler.adapt_step_size and burn_in > 0) else None
    accepted = torch.zeros(state.x.shape[0], dtype=torch.float64, device=state.x.device)
    trace: list[torch.Tensor] = []
    total = burn_in + n_steps
    # Step-wise: every step when not fused; the adapting burn-in when fused (then the rest fused).
    stepwise = total if not fused else (burn_in if adapt is not None else 0)
    first_graphable = burn_in if adapt is not None else 0  # the adapting burn-in changes h every step
    block_steps = graphs.BLOCK_STEPS if not record else thin * -(-graphs.BLOCK_STEPS // thin)
    # blocks never straddle the end of burn-in: the longest stretch one could cover
    longest_span = max(burn_in - first_graphable, stepwise - max(burn_in, first_graphable))
    block, graph_reason = _graph_block(
        cuda_graph, graph_owner, layout, sampler, state, longest_span, block_steps, thin, record,
        create_graph=create_graph, callback=callback, fused=fused,
    )
    replayed = False
    n_chains, started = state.x.shape[0], time.perf_counter()
    postfix_every = max(1, total // 50)  # the postfix costs a host sync: ~50 updates a run
    with tqdm(total=total, disable=not progress, desc=sampler.name, unit="step") as bar:
        i = 0
        while i < stepwise:
            # A block never straddles the end of burn-in, so it is all burn-in or all kept steps
            # (and a kept block starts on a multiple of thin: burn_in, then whole blocks).
            span_end = burn_in if i < burn_in else stepwise
            if block is not None and i >= first_graphable and span_end - i >= block_steps:
                state = _run_block(block, state, sampler)
                replayed = True
                if i >= burn_in:
                    accepted += block.accepted
                    if record:
                        trace.extend(block.trace.clone().unbind(0))
                i += block_steps
                bar.update(block_steps)
                if progress:
                    _show_progress(bar, accepted, i - burn_in, n_chains, started)
                continue
            state, info = sampler.step(state)
            if i < burn_in:
                if adapt is not None:
                    state = replace(state, step_size=adapt.update(info.accept_prob))
                    if i == burn_in - 1:
                        state = replace(state, step_size=adapt.final())
            else:
                accepted += info.accepted
                if record and (i - burn_in + 1) % thin == 0:
                    # steps are pure (each returns new tensors), so no copy is needed
                    trace.append(state.x if create_graph else state.x.detach())
            if callback is not None:
                callback(i, state, info)
            i += 1
            bar.update(1)
            if progress and i % postfix_every == 0:
                _show_progress(bar, accepted, i - burn_in, n_chains, started)
        if fused:
            remaining = total - stepwise
            state, fused_accepted, fused_trace = run_fused(
                sampler, state, remaining, record_from=burn_in - stepwise, thin=thin if record else 0,
                backend=fused_backend,
            )
            accepted += fused_accepted
            trace.extend(fused_trace.unbind(0))
            bar.update(remaining)
            if progress:
                _show_progress(bar, accepted, n_steps, n_chains, started)
    rate = accepted / n_steps if n_steps > 0 else torch.full_like(accepted, float("nan"))
    if record:
        stacked = torch.stack(trace) if trace else state.x.new_empty((0, *state.x.shape))
    x_out, trace_out = state.x, (stacked if record else None)
    if layout is not None:
        x_out = layout.unflatten(x_out)
        trace_out = layout.unflatten(trace_out) if record else None
    return SampleResult(
        x=x_out,
        accept_rate=rate.to(compute_dtype(state.x.dtype)),
        trace=trace_out,
        backend=fused_backend if fused else state.backend.name,
        state=state,
        layout=layout,
        cuda_graph=replayed and block.graph is not None,
        cuda_graph_reason=graph_reason,
    )


def _graph_block(
    cuda_graph, owner, layout, sampler: Sampler, state: State, graphable_steps: int, block_steps: int, thin: int,
    record: bool, *, create_graph: bool, callback, fused: bool,
) -> tuple[graphs.GraphedBlock | None, str | None]:
    """The block to replay for ``cuda_graph`` (True / False / "auto" / "eager"), and why not when None.

    "eager" runs the graphed path's blocks without capturing them (on any device): how the CPU
    tests cover everything in the graphed path but the capture itself.
    """
    if cuda_graph is False:
        return None, "cuda_graph=False"
    capture = cuda_graph != "eager"
    why = graphs.why_not_graphed(
        state.x, sampler, create_graph=create_graph, callback=callback, fused=fused, n_steps=graphable_steps,
        block=block_steps, capture=capture,
    )
    if why is not None:
        if cuda_graph is True:
            warnings.warn(f"pysampler: cuda_graph=True, running the plain loop: {why}", RuntimeWarning, stacklevel=3)
        return None, why
    found = graphs.block_for(owner, layout, sampler, state, block_steps, thin, record, capture)
    return (None, found) if isinstance(found, str) else (found, None)


def _run_block(block: graphs.GraphedBlock, state: State, sampler: Sampler) -> State:
    """``state`` advanced by one block; under on_nonfinite="raise", a chain that turned
    non-finite in the block raises at its exact step (the block rerun step by step)."""
    strict = getattr(sampler, "on_nonfinite", None) == "raise"
    start = state
    block.load(state)
    block.run(state.target)
    state = block.state(like=state)
    if strict and bool(state.frozen.any()):
        for _ in range(block.steps):  # raises at the step the plain loop would have
            start, _info = sampler.step(start)
        raise FloatingPointError(f"{sampler.name}: a chain became non-finite in a captured block")  # pragma: no cover
    return state

