"""The native extension: C++ (and, when built, CUDA) kernels registered as ``torch.ops.pysampler``.

``pysampler/_C*.so`` is a plain shared library built from ``csrc/`` by CMakeLists.txt (driven by
setup.py). It has no Python module of its own: loading it with :func:`torch.ops.load_library`
runs its ``TORCH_LIBRARY`` registrations, after which the ops are ``torch.ops.pysampler.<name>``
(schemas in ``csrc/ops.cpp``; Meta kernels make them traceable by ``torch.compile``).

Importing this module never raises: when the library is missing or fails to load,
:func:`available` is False and :func:`load_error` says why. Warning the user is the dispatcher's
job (:mod:`pysampler.backends`), so this module stays silent.
"""

from __future__ import annotations

import glob
import os

import torch

from ..ops import compute_dtype

__all__ = [
    "OPS", "CUDA_OPS", "available", "cuda_available", "load_error", "library_path",
    "cpu_buffer_cache_limit", "cpu_buffer_cache_bytes",
    "ula_step", "kinetic_oba", "kinetic_bo", "momentum", "leapfrog_kick_drift", "kick", "mala_accept", "hmc_accept",
    "q_sample", "posterior_sample",
]

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_library_path: str | None = None
_load_error: str | None = None


def _load() -> None:
    global _library_path, _load_error
    candidates = sorted(glob.glob(os.path.join(_PACKAGE_DIR, "_C*.so")))
    if not candidates:
        _load_error = (
            f"no compiled library pysampler/_C*.so in {_PACKAGE_DIR} "
            "(built by `pip install --no-build-isolation -e .`; the build may have been skipped or failed)"
        )
        return
    path = candidates[0]
    try:
        if not hasattr(torch.ops.pysampler, "ula_step"):
            torch.ops.load_library(path)
        torch.ops.pysampler.ula_step.default  # noqa: B018 - the registration must be complete
    except Exception as exc:  # a stale or ABI-mismatched build must not break `import pysampler`
        _load_error = f"failed to load {path}: {type(exc).__name__}: {exc}"
        return
    _library_path = path


try:
    _load()
except Exception as exc:  # pragma: no cover - belt and braces: importing must never raise
    _library_path, _load_error = None, f"{type(exc).__name__}: {exc}"


#: the step ops the native library implements on the CPU (the cpp backend's overrides)
OPS = (
    "ula_step", "kinetic_oba", "kinetic_bo", "momentum", "leapfrog_kick_drift", "kick", "mala_accept", "hmc_accept",
    "q_sample", "posterior_sample",
)
#: the ops with CUDA kernels (csrc/cuda; the cuda backend's overrides): all of them
CUDA_OPS = OPS


def cuda_available() -> bool:
    """True when the loaded library has CUDA kernels (built with CUDA) and a GPU is present."""
    return (
        _library_path is not None
        and torch.cuda.is_available()
        and torch._C._dispatch_has_kernel_for_dispatch_key("pysampler::ula_step", "CUDA")
    )


def available() -> bool:
    """True when the native ops are loaded and callable as ``torch.ops.pysampler.*``."""
    return _library_path is not None


def load_error() -> str | None:
    """Why the native library is not available (None when it is)."""
    return _load_error


def library_path() -> str | None:
    """Path of the loaded shared library (None when not loaded)."""
    return _library_path


def cpu_buffer_cache_limit(limit_bytes: int) -> int:
    """Caps the bytes the CPU ops keep cached for reuse as outputs; returns the previous cap.

    glibc hands every block above 32 MiB back to the kernel on free, so without a cache each
    large output would pay its page faults anew (about 15 ms per 48 MiB here, more than the op
    itself). The CPU ops draw their outputs from freed blocks of the same size instead (blocks of
    1 MiB or more). The default cap is 1 GiB, or ``PYSAMPLER_CPU_CACHE_MB`` MiB when set before the
    library loads; 0 frees every cached block and turns the cache off. (csrc/cpu_buffers.h)
    """
    _require()
    if isinstance(limit_bytes, bool) or not isinstance(limit_bytes, int) or limit_bytes < 0:
        raise ValueError(f"limit_bytes must be a non-negative int, got {limit_bytes!r}")
    return int(torch.ops.pysampler.cpu_buffer_cache_limit(limit_bytes))


def cpu_buffer_cache_bytes() -> int:
    """Bytes the CPU ops' output cache holds free now (see :func:`cpu_buffer_cache_limit`)."""
    _require()
    return int(torch.ops.pysampler.cpu_buffer_cache_bytes())


def ula_step(
    x: torch.Tensor, grad: torch.Tensor, step_size: torch.Tensor, noise_scale: float, rng: torch.Tensor,
    prior_weight: float = 0.0,
) -> torch.Tensor:
    """One ULA step for N chains in one fused pass (native kernel; reference ``pysampler.ops.ula_step``).

    ``x' = x - h * (grad + w * x) + sqrt(2h) * noise_scale * z``, h = ``step_size[n]`` for chain n,
    w = ``prior_weight``, z the Philox normal at counter ``offset + i`` for flat element i
    (``rng = (seed, offset)``). The arithmetic follows the reference in order: ``g = grad + w * x``
    only when w != 0 (w == 0 skips the term, so an infinite x gives no ``0 * inf`` NaN), then
    ``x - h * g``, then the noise term.

    Args:
        x, grad: (N, *event), float32 or float64, same shape and dtype.
        step_size: (N,), dtype of x.
        noise_scale: multiplies the noise (0 gives gradient descent).
        rng: int64 tensor (2,) = (seed, offset) on the device the op runs on (CPU for CPU tensors).
        prior_weight: w, the weight of a standard-normal prior ``w * |x|^2 / 2`` whose gradient
            ``w * x`` the step adds to ``grad`` (a latent target's prior); 0 leaves ``grad`` as is.
    Returns:
        A new contiguous tensor shaped like x. Inputs are not modified.
    """
    _require()
    return torch.ops.pysampler.ula_step(x, grad, step_size, float(noise_scale), rng, float(prior_weight))


def kinetic_oba(
    x: torch.Tensor, v: torch.Tensor, grad: torch.Tensor, step_size: torch.Tensor, friction: torch.Tensor,
    rng: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """First half of an OBABO step, O(h/2) B(h/2) A(h), in one pass (reference ``pysampler.ops.kinetic_oba``).

    x, v, grad: (N, *event) float32 or float64; step_size, friction: (N,); rng: int64 (2,) on the CPU.
    Returns new (x', v').
    """
    _require()
    return torch.ops.pysampler.kinetic_oba(x, v, grad, step_size, friction, rng)


def kinetic_bo(
    v: torch.Tensor, grad: torch.Tensor, step_size: torch.Tensor, friction: torch.Tensor, rng: torch.Tensor
) -> torch.Tensor:
    """Second half of an OBABO step, B(h/2) O(h/2), in one pass (reference ``pysampler.ops.kinetic_bo``)."""
    _require()
    return torch.ops.pysampler.kinetic_bo(v, grad, step_size, friction, rng)


def momentum(rng: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Standard normals shaped like ``like``, normal i at counter offset + i (reference ``pysampler.ops.momentum``)."""
    _require()
    return torch.ops.pysampler.momentum(rng, like)


def leapfrog_kick_drift(
    x: torch.Tensor, p: torch.Tensor, grad: torch.Tensor, kick_size: torch.Tensor, step_size: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """p' = p − k∇U, x' = x + h·p' in one pass (reference ``pysampler.ops.leapfrog_kick_drift``)."""
    _require()
    return torch.ops.pysampler.leapfrog_kick_drift(x, p, grad, kick_size, step_size)


def kick(p: torch.Tensor, grad: torch.Tensor, kick_size: torch.Tensor) -> torch.Tensor:
    """p − k∇U (reference ``pysampler.ops.kick``)."""
    _require()
    return torch.ops.pysampler.kick(p, grad, kick_size)


def mala_accept(
    x: torch.Tensor, energy: torch.Tensor, grad: torch.Tensor,
    y: torch.Tensor, energy_y: torch.Tensor, grad_y: torch.Tensor,
    step_size: torch.Tensor, rng: torch.Tensor,
):
    """MALA accept/reject, one reduction per chain (reference ``pysampler.ops.mala_accept``).

    Energies are taken in the compute dtype (x's, float32 for half storage).
    Returns (x, energy, grad, accept_prob, accepted).
    """
    _require()
    cdt = compute_dtype(x.dtype)
    return torch.ops.pysampler.mala_accept(x, energy.to(cdt), grad, y, energy_y.to(cdt), grad_y, step_size, rng)


def hmc_accept(
    x: torch.Tensor, energy: torch.Tensor, grad: torch.Tensor, p0: torch.Tensor,
    y: torch.Tensor, energy_y: torch.Tensor, grad_y: torch.Tensor, p: torch.Tensor,
    kick_size: torch.Tensor, rng: torch.Tensor,
):
    """HMC accept/reject with the closing half kick folded in (reference ``pysampler.ops.hmc_accept``).

    Energies are taken in the compute dtype (x's, float32 for half storage).
    Returns (x, energy, grad, accept_prob, accepted).
    """
    _require()
    cdt = compute_dtype(x.dtype)
    return torch.ops.pysampler.hmc_accept(x, energy.to(cdt), grad, p0, y, energy_y.to(cdt), grad_y, p, kick_size, rng)


def q_sample(
    x0: torch.Tensor, t_index: torch.Tensor, sqrt_ab: torch.Tensor, sqrt_1mab: torch.Tensor, rng: torch.Tensor
) -> torch.Tensor:
    """x_t = sqrt_ab[t]·x0 + sqrt_1mab[t]·ξ per sample, one pass (reference ``pysampler.ops.q_sample``).

    x0: (N, *event); t_index: (N,) int64, t − 1; sqrt_ab, sqrt_1mab: (T,) tables (taken in x0's dtype).
    """
    _require()
    return torch.ops.pysampler.q_sample(x0, t_index, sqrt_ab.to(x0.dtype), sqrt_1mab.to(x0.dtype), rng)


def posterior_sample(
    x0: torch.Tensor, xt: torch.Tensor, t_index: torch.Tensor,
    coef_x0: torch.Tensor, coef_xt: torch.Tensor, std: torch.Tensor, rng: torch.Tensor,
) -> torch.Tensor:
    """x_{t−1} = c0[t]·x0 + ct[t]·xt + σ̃[t]·ξ per sample, one pass (reference ``pysampler.ops.posterior_sample``)."""
    _require()
    tables = (t.to(x0.dtype) for t in (coef_x0, coef_xt, std))
    return torch.ops.pysampler.posterior_sample(x0, xt, t_index, *tables, rng)


def _require() -> None:
    if _library_path is None:
        raise RuntimeError(f"pysampler native extension is not available: {_load_error}")
