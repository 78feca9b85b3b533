"""Backend dispatch: which implementation of each step op runs, and why.

A backend is a named set of op implementations. Ops a backend lacks come from the
plain-PyTorch reference (:mod:`pysampler.ops`), which is also the correctness oracle every
backend is tested against. ``backend="auto"`` picks the fastest backend present for the
device (and the reference when a differentiable chain is asked for, since only the
reference ops carry autograd).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .. import ops as reference_ops
from . import native
from . import triton as triton_backend

__all__ = ["Backend", "available_backends", "resolve"]

# Preference order of backend="auto" per device type, fastest first. Triton runs on the CPU only
# in its interpreter (for tests), so "auto" never picks it there.
# On CUDA, Triton comes first: it has been run (in its interpreter) where the CUDA kernels are only
# compile-checked, and which of the two is faster is still unmeasured (no GPU has run either).
_PREFERENCE = {"cpu": ("cpp", "torch"), "cuda": ("triton", "cuda", "torch")}


@dataclass(frozen=True)
class Backend:
    """A named set of op implementations; missing ops fall back to the reference."""

    name: str
    overrides: dict[str, Callable] = field(default_factory=dict)
    differentiable: bool = False
    #: storage dtypes of x the backend's ops accept
    dtypes: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

    def __getattr__(self, op: str) -> Callable:
        if op.startswith("__"):
            raise AttributeError(op)
        impl = self.overrides.get(op)
        return impl if impl is not None else getattr(reference_ops, op)


TORCH = Backend("torch", differentiable=True)


_BUILDERS: dict[str, Callable[[], Backend]] = {
    "cpp": lambda: Backend("cpp", {name: getattr(native, name) for name in native.OPS}, dtypes=(torch.float32, torch.float64)),
    "triton": lambda: Backend("triton", triton_backend.overrides()),
    "cuda": lambda: Backend("cuda", {name: getattr(native, name) for name in native.CUDA_OPS}),
}


@functools.cache
def _backend(name: str) -> Backend:
    return TORCH if name == "torch" else _BUILDERS[name]()


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Names of the backends that can run on ``device``.

    "torch" always; "cpp" on CPU when the native extension is built; "triton" on CUDA when Triton
    is installed (and on CPU under TRITON_INTERPRET=1, Triton's interpreter, for testing); "cuda" on
    CUDA when the native extension was built with its CUDA kernels.
    """
    device = torch.device(device)
    names = ["torch"]
    if device.type == "cpu" and native.available():
        names.append("cpp")
    if triton_backend.available(device):
        names.append("triton")
    if device.type == "cuda" and native.cuda_available():
        names.append("cuda")
    return names


def _why_missing(backend: str) -> str:
    cuda_error = native.load_error() or "the native extension was built without CUDA kernels (or there is no GPU)"
    error = {"cpp": native.load_error(), "triton": triton_backend.load_error(), "cuda": cuda_error}.get(backend)
    return f" ({error})" if error else ""


_warned_missing_native = False


def _warn_missing_native_once() -> None:
    global _warned_missing_native
    if not _warned_missing_native:
        _warned_missing_native = True
        warnings.warn(
            "pysampler: the native extension (pysampler._C) is not available "
            f"({native.load_error()}); using the reference 'torch' backend. "
            "Build it with `pip install --no-build-isolation -e .` for the fast CPU path.",
            RuntimeWarning,
            stacklevel=3,
        )


def resolve(
    backend: str, device: torch.device | str, differentiable: bool = False, dtype: torch.dtype | None = None
) -> Backend:
    """The :class:`Backend` to use for ``backend`` ("auto" or a name) on ``device`` for states of ``dtype``.

    Raises ValueError naming the backend and what is available when it cannot run there.
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string such as 'auto' or 'torch'; got {type(backend).__name__}")
    device = torch.device(device)
    present = available_backends(device)
    if backend == "auto":
        if device.type == "cpu" and not native.available():
            _warn_missing_native_once()
        if differentiable:
            return TORCH
        candidates = [name for name in _PREFERENCE.get(device.type, ()) + ("torch",) if name in present]
        return next(be for be in map(_backend, candidates) if dtype is None or dtype in be.dtypes)
    if backend not in present:
        raise ValueError(
            f"backend {backend!r} is not available on {device}{_why_missing(backend)}; available there: {present} (or 'auto')"
        )
    if backend == "torch":
        return TORCH
    if differentiable:
        raise ValueError(f"backend {backend!r} has no autograd support; use backend='torch' (or 'auto') with create_graph=True")
    resolved = _backend(backend)
    if dtype is not None and dtype not in resolved.dtypes:
        names = ", ".join(str(d).removeprefix("torch.") for d in resolved.dtypes)
        raise ValueError(f"backend {backend!r} supports {names} states; got {dtype} (use backend='auto')")
    return resolved
