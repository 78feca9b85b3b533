"""The Triton backend: fused step kernels (pysampler.kernels) for CUDA tensors.

The kernels are imported on first use, so ``import pysampler`` never pays for importing Triton.
They run on CUDA devices, and on CPU tensors only through Triton's interpreter (TRITON_INTERPRET=1
set before pysampler.kernels is imported): that is how CI tests them, and far too slow for real
work, so backend="auto" never picks Triton on the CPU.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

import torch

__all__ = ["available", "load_error", "overrides"]

_OPS = {
    "langevin": ("ula_step", "mala_accept", "kinetic_oba", "kinetic_bo"),
    "hmc": ("momentum", "leapfrog_kick_drift", "kick", "hmc_accept"),
    "diffusion": ("q_sample", "posterior_sample"),
}

_overrides: dict | None = None
_interpreted = False
_load_error: str | None = None


def _interpret_requested() -> bool:
    # Triton's own reading of the variable (triton.knobs env_bool): 1 / true / yes / on.
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on", "y")


def _load() -> bool:
    """Import the kernels once; remember why not when that fails."""
    global _overrides, _interpreted, _load_error
    if _overrides is not None or _load_error is not None:
        return _overrides is not None
    if importlib.util.find_spec("triton") is None:
        _load_error = "triton is not installed (pip install triton)"
        return False
    try:
        common = importlib.import_module("pysampler.kernels.common")
        ops = {}
        for family, names in _OPS.items():
            module = importlib.import_module(f"pysampler.kernels.{family}")
            ops.update({name: getattr(module, name) for name in names})
    except Exception as exc:  # an incompatible Triton must not break the other backends
        _load_error = f"importing the Triton kernels failed: {type(exc).__name__}: {exc}"
        return False
    _overrides, _interpreted = ops, common.INTERPRETED
    return True


def available(device: torch.device) -> bool:
    """True when the Triton kernels can run on ``device``: CUDA, or CPU under the interpreter."""
    if device.type == "cuda":  # compiled kernels only: the interpreter would run CUDA tensors on the host
        return torch.cuda.is_available() and _load() and not _interpreted
    if device.type == "cpu" and _interpret_requested():
        return _load() and _interpreted
    return False


def load_error() -> str | None:
    """Why the kernels could not be imported (None when they were, or were never asked for)."""
    return _load_error


def overrides() -> dict:
    """Op name -> Triton implementation, for :class:`pysampler.backends.Backend`."""
    if not _load():
        raise RuntimeError(f"the Triton backend is not available: {_load_error}")
    return dict(_overrides)
