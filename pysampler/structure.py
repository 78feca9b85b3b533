"""Structured chain states: a tuple, list or dict of tensors sampled as one flat state.

A VAE's noise is several groups (ε_z per latent group, ε_x), each with its own shape. The samplers
and kernels work on one (N, D) tensor per state, so ``ps.sample`` flattens a structured ``x0``
into (N, D) (one step size across all groups: the point of sampling in noise space), hands the
target views of the groups in their own shapes, and gives results back in the same structure.

    >>> layout = StateLayout.of({"z": torch.zeros(8, 4), "x": torch.zeros(8, 3, 2, 2)})
    >>> flat = layout.flatten({"z": torch.zeros(8, 4), "x": torch.ones(8, 3, 2, 2)})
    >>> flat.shape, layout.unflatten(flat)["x"].shape
    (torch.Size([8, 16]), torch.Size([8, 3, 2, 2]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["StateLayout", "is_structure", "leaves", "restructure"]

Structure = tuple | list | dict


def is_structure(x: Any) -> bool:
    """Whether ``x`` is a tuple, list or dict (of tensors): a structured state."""
    return isinstance(x, (tuple, list, dict))


def leaves(x: Structure) -> list[Any]:
    """The values of a tuple, list or dict, in order."""
    return list(x.values()) if isinstance(x, dict) else list(x)


def _assemble(kind: str, keys: tuple, values: list) -> Structure:
    if kind == "dict":
        return dict(zip(keys, values, strict=True))
    return tuple(values) if kind == "tuple" else list(values)


def _kind(x: Structure) -> str:
    return "dict" if isinstance(x, dict) else ("tuple" if isinstance(x, tuple) else "list")


def restructure(like: Structure, values: list) -> Structure:
    """``values`` (one per group) in the structure (tuple / list / dict, same keys) of ``like``."""
    return _assemble(_kind(like), tuple(like.keys()) if isinstance(like, dict) else (), values)


@dataclass(frozen=True)
class StateLayout:
    """Where each group of a structured state lives in the flat (N, D) state.

    kind: "tuple", "list" or "dict"; keys: the dict's keys (positions otherwise); shapes: each
    group's per-chain shape; sizes: its element count. Groups are laid out in order.
    """

    kind: str
    keys: tuple
    shapes: tuple[tuple[int, ...], ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def dim(self) -> int:
        """D: elements per chain over all groups."""
        return sum(self.sizes)

    @classmethod
    def of(cls, x0: Structure, name: str = "x0") -> StateLayout:
        """The layout of a structured state; checks every group is a floating (N, *shape) tensor
        with one N, dtype and device."""
        if not is_structure(x0) or len(x0) == 0:
            raise TypeError(f"{name} must be a tensor or a non-empty tuple, list or dict of tensors; got {type(x0).__name__}")
        keys = tuple(x0.keys()) if isinstance(x0, dict) else tuple(range(len(x0)))
        groups = leaves(x0)
        first = groups[0]
        for key, t in zip(keys, groups, strict=True):
            where = f"{name}[{key!r}]"
            if not isinstance(t, torch.Tensor):
                raise TypeError(
                    f"{name} must be a torch.Tensor (N, *event) or a tuple, list or dict of such tensors; "
                    f"{where} is a {type(t).__name__}"
                )
            if t.ndim < 1 or t.shape[0] < 1:
                raise ValueError(f"{where} must have shape (N, *shape) with N >= 1 chains; got {tuple(t.shape)}")
            if t.shape[0] != first.shape[0]:
                raise ValueError(
                    f"every group of {name} must have the same number of chains N (dimension 0); "
                    f"{where} has {t.shape[0]}, the first group {first.shape[0]}"
                )
            if t.dtype != first.dtype or t.device != first.device:
                raise ValueError(
                    f"every group of {name} must share one dtype and device; {where} is {t.dtype} on {t.device}, "
                    f"the first group {first.dtype} on {first.device}"
                )
        return cls(kind=_kind(x0), keys=keys, shapes=tuple(tuple(t.shape[1:]) for t in groups))

    def flatten(self, x: Structure) -> torch.Tensor:
        """(N, D): the groups of ``x`` (this layout's structure, any leading dims) side by side."""
        groups = leaves(x)
        if len(groups) != len(self.shapes):
            raise ValueError(f"expected {len(self.shapes)} groups ({self.kind}); got {len(groups)}")
        lead = groups[0].shape[: groups[0].ndim - len(self.shapes[0])]
        return torch.cat([g.reshape(*lead, n) for g, n in zip(groups, self.sizes, strict=True)], dim=-1)

    def unflatten(self, flat: torch.Tensor) -> Structure:
        """The structure back from (..., D): views of ``flat`` in each group's shape (differentiable)."""
        if flat.shape[-1] != self.dim:
            raise ValueError(f"expected a last dimension of {self.dim}; got shape {tuple(flat.shape)}")
        lead = flat.shape[:-1]
        parts = [p.reshape(*lead, *s) for p, s in zip(flat.split(self.sizes, dim=-1), self.shapes, strict=True)]
        return _assemble(self.kind, self.keys, parts)
