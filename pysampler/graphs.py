"""CUDA-graph chains: capture a block of K sampler steps once, the energy's forward and backward
included, and replay it (``ps.sample(..., cuda_graph=...)``).

Why: for a neural energy the step kernels are a small part of a step; the rest is kernel-launch
overhead and Python between the forward and the backward pass. A replayed graph launches the
whole block from one call (``torch.cuda.CUDAGraph``, the "whole-network capture" of PyTorch's
CUDA semantics notes).

Why the replayed chain is the plain loop's chain, bit for bit:

* the state lives in static device buffers; the block reads them, steps K times with the same
  ops, and copies the result back into them, so each replay continues where the last one ended;
* the random stream's seed and offset are the state's ``rng`` tensor on the device: every
  backend's step ops read them there (no host sync), and each step advances the offset on the
  device, so every replay draws fresh noise, the noise the plain loop would have drawn;
* steps run with ``State.sync_free``: a chain that turns non-finite is frozen on the device
  instead of raising mid-block. After a block that froze a chain under
  ``on_nonfinite="raise"``, the block is run again step by step from a snapshot of its start,
  which raises at the exact step, as the plain loop does.

Blocks are cached per (target object, sampler settings, shapes, backend), so a training loop
that calls ``ps.sample`` every iteration with the same target captures once; parameters that
an optimizer updates in place are read by every replay. Call :func:`clear_cache` after changing a
model's structure (not only its parameter values) or to free the graphs' memory.

Capture needs a CUDA device and a model that never synchronises with the host (no ``.item()``,
``bool(tensor)``, data-dependent shapes) and keeps its shapes. The warm-up runs with
``torch.cuda.set_sync_debug_mode("error")``, so a model that syncs is caught before the capture
with the reason, and the chain falls back to the plain loop (:func:`why_not_graphed`).
"""

from __future__ import annotations

import dataclasses
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import torch

from .samplers.base import Sampler, State

__all__ = ["BLOCK_STEPS", "GraphedBlock", "why_not_graphed", "block_for", "clear_cache", "warm_up", "capture", "cached"]

#: steps per captured block (rounded up to a multiple of ``thin`` when a trace is recorded). Long
#: enough that one replay amortises its launch, short enough to capture quickly and to leave
#: few steps to the plain loop at the end of a run.
BLOCK_STEPS = 25

#: the State fields a block carries from one replay to the next
_CARRIED = ("x", "energy", "grad", "step_size", "rng", "step", "frozen", "v", "friction")

#: sampler fields that live in the state (so a cached block serves any value of them)
_STATE_HELD = frozenset({"step_size", "friction", "adapt_step_size", "target_accept"})


def why_not_graphed(
    x0: torch.Tensor, sampler: Sampler, *, create_graph: bool, callback: Callable | None, fused: bool, n_steps: int,
    block: int, capture: bool = True,
) -> str | None:
    """Why a chain cannot run as replayed CUDA graphs (one line), or None when it can be tried.

    ``capture=False`` asks whether it can run in uncaptured blocks (any device).
    """
    if capture and x0.device.type != "cuda":
        return f"the chains are on {x0.device.type}, and CUDA graphs capture CUDA work only"
    if fused:
        return "the whole-chain fused kernel already runs the chain in one launch"
    if create_graph:
        return "create_graph=True keeps one autograd graph across all steps, which a replayed block cannot extend"
    if callback is not None:
        return "a callback runs Python after every step"
    if getattr(sampler, "schedule", None) is not None:
        return f"{sampler.name}'s schedule is read on the host before every step"
    if n_steps < block:
        return f"no stretch of steps ({n_steps} at most, burn-in and kept steps apart) fills one captured block ({block})"
    return None


class GraphedBlock:
    """K steps of ``sampler`` from static state buffers: captured as a CUDA graph, or run as is.

    ``capture=False`` runs the same block body eagerly at each :meth:`run` (on any device): the
    CPU tests drive every part of the graphed path but the capture itself through it.

    Args:
        sampler: the sampler to step.
        state: a state of the chains' shapes, dtype and device (its values are not used until
            :meth:`load`).
        steps: K, steps per block.
        thin: with ``record``, the block writes every ``thin``-th state to :attr:`trace`
            (K must be a multiple of ``thin``).
        record: keep (K // thin, N, *event) states in :attr:`trace`.
        capture: capture a CUDA graph (CUDA states only).
    """

    def __init__(self, sampler: Sampler, state: State, steps: int, thin: int, record: bool, capture: bool):
        if record and steps % thin:
            raise ValueError(f"steps ({steps}) must be a multiple of thin ({thin}) when recording")
        self.sampler, self.steps, self.thin = sampler, steps, thin
        self.static = _clone(state, sync_free=True)
        self.accepted = torch.zeros(state.x.shape[0], dtype=torch.float64, device=state.x.device)
        self.trace = state.x.new_empty((steps // thin, *state.x.shape)) if record else None
        self.graph: torch.cuda.CUDAGraph | None = None
        if capture:
            self._capture()
        # The block is cached under the user's target (weakly): it must not hold the target itself,
        # or the entry would keep its own key alive. A replay needs no Python; an uncaptured run
        # gets the target for its duration (:meth:`run`).
        self.static = dataclasses.replace(self.static, target=None)

    def _body(self) -> None:
        """K steps from the static state, written back into it; counts acceptances, keeps the trace."""
        self.accepted.zero_()
        cur = self.static
        for j in range(self.steps):
            cur, info = self.sampler.step(cur)
            self.accepted.add_(info.accepted)
            if self.trace is not None and (j + 1) % self.thin == 0:
                self.trace[j // self.thin].copy_(cur.x)
        for name in _CARRIED:
            static = getattr(self.static, name)
            if static is not None:
                static.copy_(getattr(cur, name))

    def _capture(self) -> None:
        # Warm up on a scratch copy (its values are consumed), then capture on the real buffers.
        real = self.static
        self.static = _clone(real, sync_free=True)
        device = real.x.device
        warm_up(device, self._body, first=lambda: self.sampler.step(self.static))
        self.static = real
        self.graph = capture(device, self._body)

    def load(self, state: State) -> None:
        """Copy ``state``'s tensors into the static buffers."""
        for name in _CARRIED:
            static = getattr(self.static, name)
            if static is not None:
                static.copy_(getattr(state, name))

    def run(self, target: Any) -> None:
        """Advance the static state by K steps: replay the graph, or run the body on ``target``."""
        if self.graph is not None:
            self.graph.replay()
            return
        self.static = dataclasses.replace(self.static, target=target)
        try:
            self._body()
        finally:
            self.static = dataclasses.replace(self.static, target=None)

    def state(self, like: State) -> State:
        """The current static state as a fresh State with ``like``'s target, backend and flags."""
        return _clone(self.static, sync_free=False, like=like)


def warm_up(device: torch.device, body: Callable[[], None], first: Callable[[], Any] | None = None) -> None:
    """PyTorch's capture recipe, before :func:`capture`: run on a side stream ``first()`` (default:
    ``body()``) for lazy initialisation, cuBLAS workspaces and torch.compile's compilation, then
    ``body()`` with host syncs raising, so a model that syncs fails here, with the reason, instead
    of invalidating a capture."""
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    previous = torch.cuda.get_sync_debug_mode()
    try:
        with torch.cuda.stream(side):
            (first or body)()
            torch.cuda.set_sync_debug_mode("error")
            body()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    torch.cuda.current_stream(device).wait_stream(side)


def capture(device: torch.device, body: Callable[[], None]) -> torch.cuda.CUDAGraph:
    """``body()`` captured as a CUDA graph on ``device`` (after :func:`warm_up`); replay it with ``.replay()``."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.device(device), torch.cuda.graph(graph):
        body()
    return graph


def _clone(state: State, sync_free: bool, like: State | None = None) -> State:
    """A copy of ``state`` whose carried tensors are new (non-aliasing) buffers."""
    like = state if like is None else like
    tensors = {name: (t.clone() if (t := getattr(state, name)) is not None else None) for name in _CARRIED}
    return dataclasses.replace(like, **tensors, sync_free=sync_free)


# ----------------------------------------------------------------------------------- cache

# the object the user passed (a sampler's target, a diffusion denoiser) -> {key: captured graph
# object (GraphedBlock, diffusion's reverse chain), or the one-line reason its capture failed}
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _sampler_key(sampler: Sampler) -> tuple:
    """The sampler settings a captured block bakes in (per-chain values live in the state)."""
    items = []
    for f in dataclasses.fields(sampler):
        if f.name not in _STATE_HELD:
            items.append((f.name, getattr(sampler, f.name)))
    return (type(sampler), tuple(items))


def block_for(
    owner: Any, layout: Any, sampler: Sampler, state: State, steps: int, thin: int, record: bool, capture: bool
) -> GraphedBlock | str:
    """The cached block for these chains, captured on first use; or the reason capture failed.

    ``owner`` is the target object the user passed (the cache entry lives as long as it does and
    does not keep it alive; objects that cannot be weakly referenced get a fresh block every call). A failed capture is
    remembered, so it is tried (and reported) once.
    """
    key = (
        _sampler_key(sampler), layout, tuple(state.x.shape), state.x.dtype, state.x.device, state.backend.name,
        steps, thin if record else 0, record, capture,
    )
    return cached(owner, key, lambda: GraphedBlock(sampler, state, steps, thin, record, capture), "the block", "the chain")


def cached(owner: Any, key: tuple, build: Callable[[], Any], what: str, fallback: str) -> Any:
    """The graph object cached for ``owner`` (weakly: the entry lives as long as ``owner`` and must not
    hold it) under ``key``, built by ``build()`` on first use; or, when building failed, the one-line
    reason, which is cached too, so a failure is tried and reported (a RuntimeWarning) once.
    ``what`` / ``fallback`` name the captured thing and what runs instead, for the message."""
    try:
        entries = _CACHE.setdefault(owner, {})
    except TypeError:  # not weakly referenceable: no caching
        entries = {}
    found = entries.get(key)
    if found is None:
        try:
            found = build()
        except Exception as exc:  # any capture failure falls back to the plain loop
            found = f"capturing {what} failed ({type(exc).__name__}: {first_line(exc)})"
            warnings.warn(f"pysampler: running {fallback} without CUDA graphs: {found}", RuntimeWarning, stacklevel=4)
        entries[key] = found
    return found


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"


def clear_cache() -> None:
    """Drop every cached graph (sampler blocks and diffusion reverse chains) and the memory it holds."""
    _CACHE.clear()
