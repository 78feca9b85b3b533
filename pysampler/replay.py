"""Persistent chains for EBM training: a replay buffer of past samples (Du & Mordatch, 2019).

Each training step starts its short-run chains from samples drawn out of the buffer, except a
fraction ``reinit_prob`` that restart from fresh noise, and pushes the chains' final states back.
VAEBM anneals the reinit probability over training (dissertation ch. 4; ../shared/seeds/004);
set ``buffer.reinit_prob`` between steps to do the same.

    >>> buf = ReplayBuffer(10_000, reinit_prob=0.05, init_fn=lambda n, g: torch.rand(n, 2, generator=g) * 2 - 1)
    >>> x0, idx = buf.sample(128)
    >>> res = ps.sample(energy, x0, ps.ULA(0.01), 60)          # doctest: +SKIP
    >>> buf.push(res.x, idx)                                   # doctest: +SKIP

All of the buffer's randomness (which slots, which chains restart, the fresh noise) comes from
its own ``torch.Generator``, saved in ``state_dict()``: a run restored from a checkpoint
continues exactly as the uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["ReplayBuffer"]

InitFn = Callable[[int, torch.Generator], torch.Tensor]


class ReplayBuffer:
    """A fixed-capacity store of chain states (capacity, *event) for persistent short-run chains.

    Args:
        capacity: most states kept (>= 1); once full, ``push`` without slots overwrites the oldest.
        reinit_prob: probability in [0, 1] that a sampled chain restarts from ``init_fn`` instead.
        init_fn: ``init_fn(n, generator)`` -> (n, *event) fresh starting states, drawing any
            randomness from ``generator`` (the buffer's, so restarts are reproducible).
        seed: seeds the buffer's generator.
        device: where the generator lives and the states are kept (default CPU).
    """

    def __init__(
        self,
        capacity: int,
        reinit_prob: float = 0.05,
        init_fn: InitFn | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1; got {capacity!r}")
        if not callable(init_fn):
            raise TypeError(
                "init_fn must be a callable (n, generator) -> (n, *event) of fresh starting states, "
                f"e.g. lambda n, g: torch.randn(n, 2, generator=g); got {type(init_fn).__name__}"
            )
        self.capacity = capacity
        self.reinit_prob = reinit_prob
        self.init_fn = init_fn
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.storage: torch.Tensor | None = None  # (capacity, *event), allocated on the first push
        self.size = 0  # filled slots: 0 .. size-1
        self.cursor = 0  # next slot a slot-less push overwrites, once full

    @property
    def reinit_prob(self) -> float:
        return self._reinit_prob

    @reinit_prob.setter
    def reinit_prob(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"reinit_prob must be a float in [0, 1]; got {value!r}")
        self._reinit_prob = float(value)

    def __len__(self) -> int:
        return self.size

    def _fresh(self, n: int) -> torch.Tensor:
        x = self.init_fn(n, self.generator)
        if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[0] != n:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"init_fn({n}, generator) must return a tensor of shape ({n}, *event); got {got}")
        if self.storage is not None and (x.shape[1:] != self.storage.shape[1:] or x.dtype != self.storage.dtype):
            raise ValueError(
                f"init_fn returned {tuple(x.shape[1:])} {x.dtype} states; the buffer holds "
                f"{tuple(self.storage.shape[1:])} {self.storage.dtype}"
            )
        return x.to(self.device)

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n starting states and the slots they came from: (x0 (n, *event), slots (n,) int64).

        Each is a stored state chosen uniformly (with replacement), or, with probability
        ``reinit_prob`` (always while the buffer is empty), a fresh one from ``init_fn``. Pass the
        slots back to :meth:`push` to write the chains' final states where they came from.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1; got {n!r}")
        if self.size == 0:  # all fresh; pushed back they fill the buffer from slot 0
            return self._fresh(n), torch.arange(n, device=self.device) % self.capacity
        slots = torch.randint(self.size, (n,), generator=self.generator, device=self.device)
        restart = torch.rand(n, generator=self.generator, device=self.device) < self.reinit_prob
        x = self.storage[slots].clone()
        k = int(restart.sum())
        if k:
            x[restart] = self._fresh(k)
        return x, slots

    def push(self, x: torch.Tensor, slots: torch.Tensor | None = None) -> None:
        """Store states x (n, *event): into ``slots`` (from :meth:`sample`), or appended (the
        oldest overwritten once full). Stored detached, on the buffer's device."""
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            raise TypeError(f"x must be a tensor of shape (n, *event); got {type(x).__name__}")
        x = x.detach().to(self.device)
        if self.storage is None:
            self.storage = torch.empty((self.capacity, *x.shape[1:]), dtype=x.dtype, device=self.device)
        elif x.shape[1:] != self.storage.shape[1:] or x.dtype != self.storage.dtype:
            raise ValueError(
                f"x must be (n, {', '.join(map(str, self.storage.shape[1:]))}) {self.storage.dtype} like the stored "
                f"states; got {tuple(x.shape)} {x.dtype}"
            )
        n = x.shape[0]
        if slots is not None:
            slots = torch.as_tensor(slots, device=self.device)
            if slots.shape != (n,) or slots.dtype != torch.int64:
                raise ValueError(f"slots must be an int64 tensor of shape ({n},) from sample(); got {tuple(slots.shape)}")
            if n:
                lo, hi = (int(v) for v in torch.aminmax(slots))  # one host read
                if lo < 0 or hi >= self.capacity:
                    raise ValueError(f"slots must lie in [0, {self.capacity}); got {lo}..{hi}")
                self.size = max(self.size, hi + 1)
            self.storage[slots] = x
            return
        for start in range(0, n, self.capacity):  # ring append
            part = x[start : start + self.capacity]
            idx = (self.cursor + torch.arange(part.shape[0], device=self.device)) % self.capacity
            self.storage[idx] = part
            self.cursor = int((self.cursor + part.shape[0]) % self.capacity)
            self.size = min(self.capacity, self.size + part.shape[0])

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: the stored states, fill and cursor, reinit
        probability and the generator's state (save it with ``pysampler.checkpoint.save``)."""
        return {
            "capacity": self.capacity,
            "reinit_prob": self.reinit_prob,
            "size": self.size,
            "cursor": self.cursor,
            "storage": None if self.storage is None else self.storage[: self.size].clone(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the capacity must match)."""
        missing = {"capacity", "reinit_prob", "size", "cursor", "storage", "generator"} - set(state)
        if missing:
            raise ValueError(f"state is missing {sorted(missing)}; save it with buffer.state_dict()")
        if state["capacity"] != self.capacity:
            raise ValueError(f"the saved buffer has capacity {state['capacity']}; this one {self.capacity}")
        self.reinit_prob = state["reinit_prob"]
        self.size, self.cursor = int(state["size"]), int(state["cursor"])
        stored = state["storage"]
        if stored is None:
            self.storage = None
        else:
            self.storage = torch.empty((self.capacity, *stored.shape[1:]), dtype=stored.dtype, device=self.device)
            self.storage[: self.size] = stored.to(self.device)
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        shape = "?" if self.storage is None else tuple(self.storage.shape[1:])
        return f"ReplayBuffer({self.size}/{self.capacity} states of shape {shape}, reinit_prob={self.reinit_prob:g})"

