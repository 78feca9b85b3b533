"""The step ops benchmarked by bench/test_step_kernels.py: inputs, byte counts, implementations.

A *step op* is the elementwise work of one sampler step given the gradient (pysampler/ops.py).
Each op is measured as

* ``eager``: the step as a hand-written PyTorch loop runs it: the reference op
  ``pysampler.ops.<op>`` called with ``rng=None``, so its noise and uniforms come from
  ``torch.randn`` / ``torch.rand`` (torch's own generator) and everything else is the same
  arithmetic, op for op, as pysampler's reference;
* ``compile``: ``torch.compile(pysampler.ops.<op>, fullgraph=True, dynamic=False)`` of that same
  function with ``rng=None`` (Inductor fuses the arithmetic and generates torch's random numbers
  in its own kernels): the strongest thing a user gets without pysampler;
* every pysampler backend that overrides the op (``op in backend.overrides``): the backend's
  implementation, ``ps.backends.resolve(name, device).<op>``, called with the ``rng`` tensor
  (pysampler's stream), checked once against the reference op on the same stream.

Inputs are float32 (N, D) states with real random data (a Gaussian target with per-dimension
precisions, proposals one step away), per-chain step sizes and frictions, built once per
(op, size) from a fixed seed and shared by every implementation.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

import pysampler as ps
from pysampler import ops as reference_ops

__all__ = [
    "SEED",
    "OFFSET",
    "RNG",
    "StepOp",
    "STEP_OPS",
    "SIZES",
    "SMALL_SIZE",
    "LARGE_SIZE",
    "selected_sizes",
    "backend_names",
    "make_input_sets",
    "bind",
    "rng_tensor",
    "gbps",
    "reference_fn",
    "compiled_eager",
    "backend_fn",
    "mismatch",
]

#: the (seed, offset) every implementation draws its noise at
SEED, OFFSET = 20261121, 0
DTYPE = torch.float32


class _RngSlot:
    """Placeholder for the ``rng`` argument in an op's argument tuple (see :func:`bind`)."""

    def __repr__(self) -> str:
        return "RNG"


RNG = _RngSlot()


@dataclass(frozen=True)
class StepOp:
    name: str
    #: float32 bytes moved per state element (reads + writes of the (N, D) tensors; (N,) ones ignored)
    bytes_per_elem: int
    traffic: str
    #: fresh (N, D) tensors the op returns: each costs an allocation and its first touch (page faults on a CPU)
    outputs: int
    #: (N, D, device, generator) -> positional arguments, RNG where the rng tensor goes
    make_args: Callable[[int, int, torch.device, torch.Generator], tuple]


# ------------------------------------------------------------------------------------- inputs


def _randn(n: int, d: int, device: torch.device, g: torch.Generator) -> torch.Tensor:
    return torch.randn(n, d, generator=g, device=device, dtype=DTYPE)


def _uniform(n: int, lo: float, hi: float, device: torch.device, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device, dtype=DTYPE)


def _precisions(d: int, device: torch.device) -> torch.Tensor:
    # U(x) = ½ Σ_d λ_d x_d², λ from 0.5 to 2: energies and gradients of a real (anisotropic) target
    return torch.linspace(0.5, 2.0, d, device=device, dtype=DTYPE)


def _energy(x: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    return 0.5 * (lam * x.square()).sum(1)


def _step_sizes(n: int, device, g) -> torch.Tensor:
    return _uniform(n, 0.005, 0.02, device, g)


def _ula_args(n, d, device, g):
    return (_randn(n, d, device, g), _randn(n, d, device, g), _step_sizes(n, device, g), 1.0, RNG)


def _mala_args(n, d, device, g):
    lam = _precisions(d, device)
    x, h = _randn(n, d, device, g), _step_sizes(n, device, g)
    grad = lam * x
    y = x - h[:, None] * grad + torch.sqrt(2.0 * h)[:, None] * _randn(n, d, device, g)
    grad_y = lam * y
    return (x, _energy(x, lam), grad, y, _energy(y, lam), grad_y, h, RNG)


def _oba_args(n, d, device, g):
    lam = _precisions(d, device)
    x = _randn(n, d, device, g)
    return (x, _randn(n, d, device, g), lam * x, _step_sizes(n, device, g), _uniform(n, 0.5, 1.5, device, g), RNG)


def _bo_args(n, d, device, g):
    return (_randn(n, d, device, g), _randn(n, d, device, g), _step_sizes(n, device, g), _uniform(n, 0.5, 1.5, device, g), RNG)


def _kick_drift_args(n, d, device, g):
    lam = _precisions(d, device)
    x, h = _randn(n, d, device, g), _step_sizes(n, device, g)
    return (x, _randn(n, d, device, g), lam * x, 0.5 * h, h)


def _hmc_args(n, d, device, g):
    # one leapfrog step of a real trajectory, so that H changes by a realistic amount; p is the
    # momentum before the closing half kick, which hmc_accept applies (kick_size = h/2)
    lam = _precisions(d, device)
    x, h, p0 = _randn(n, d, device, g), _step_sizes(n, device, g), _randn(n, d, device, g)
    grad = lam * x
    p = p0 - 0.5 * h[:, None] * grad
    y = x + h[:, None] * p
    return (x, _energy(x, lam), grad, p0, y, _energy(y, lam), lam * y, p, 0.5 * h, RNG)


N_DIFFUSION_STEPS = 1000


def _posterior_args(n, d, device, g):
    # DDPM linear schedule (Ho et al. 2020): posterior q(x_{t-1} | x_t, x_0) coefficient tables
    t = N_DIFFUSION_STEPS
    betas = torch.linspace(1e-4, 0.02, t, device=device, dtype=torch.float64)
    ab = torch.cumprod(1.0 - betas, 0)
    ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
    coef_x0 = (betas * ab_prev.sqrt() / (1.0 - ab)).to(DTYPE)
    coef_xt = ((1.0 - ab_prev) * (1.0 - betas).sqrt() / (1.0 - ab)).to(DTYPE)
    std = (betas * (1.0 - ab_prev) / (1.0 - ab)).sqrt().to(DTYPE)
    t_index = torch.randint(0, t, (n,), generator=g, device=device, dtype=torch.int64)
    return (_randn(n, d, device, g), _randn(n, d, device, g), t_index, coef_x0, coef_xt, std, RNG)


STEP_OPS: dict[str, StepOp] = {
    op.name: op
    for op in (
        StepOp("ula_step", 12, "read x, grad; write x'", 1, _ula_args),
        StepOp("mala_accept", 32, "pass 1 reads x, grad, y, grad_y; pass 2 reads 2 of them, writes x', grad'", 2, _mala_args),
        StepOp("kinetic_oba", 20, "read x, v, grad; write x', v'", 2, _oba_args),
        StepOp("kinetic_bo", 12, "read v, grad; write v'", 1, _bo_args),
        StepOp("leapfrog_kick_drift", 20, "read x, p, grad; write x', p'", 2, _kick_drift_args),
        StepOp("hmc_accept", 32, "pass 1 reads p0, p, y, grad_y; pass 2 reads 2, writes x', grad'", 2, _hmc_args),
        StepOp("posterior_sample", 12, "read x0, xt; write x", 1, _posterior_args),
    )
}

#: name -> (N, D)
SIZES: dict[str, tuple[int, int]] = {"64x128": (64, 128), "4096x3072": (4096, 3072), "4096x4096": (4096, 4096)}
SMALL_SIZE, LARGE_SIZE = "64x128", "4096x4096"
SIZES_ENV = "PYSAMPLER_BENCH_STEP_SIZES"
_SIZE_ALIASES = {"small": "64x128", "medium": "4096x3072", "large": "4096x4096", "16m": "4096x4096"}


def selected_sizes(spec: str | None) -> list[str]:
    """Size names from PYSAMPLER_BENCH_STEP_SIZES: unset or "all" = every size; else a comma list
    of small / medium / large (= 16M) or NxD names."""
    if spec is None or spec.strip().lower() in ("", "all"):
        return list(SIZES)
    names = []
    for token in spec.split(","):
        token = token.strip().lower()
        name = _SIZE_ALIASES.get(token, token)
        if name not in SIZES:
            raise ValueError(f"{SIZES_ENV}: unknown size {token!r}; expected all, small, medium, large or one of {list(SIZES)}")
        if name not in names:
            names.append(name)
    return [n for n in SIZES if n in names]


def backend_names(device: torch.device) -> list[str]:
    """pysampler backends to benchmark on ``device``: every available one but the reference "torch"
    (that is ``eager``), and never Triton on the CPU (its interpreter says nothing about speed)."""
    names = [b for b in ps.available_backends(device) if b != "torch"]
    return [b for b in names if b != "triton" or device.type == "cuda"]


def _check_arguments(op: StepOp) -> None:
    """Fail clearly when the reference op's signature no longer matches ``op.make_args``."""
    params = list(inspect.signature(reference_fn(op.name)).parameters.values())
    args = op.make_args(1, 1, torch.device("cpu"), torch.Generator().manual_seed(0))
    required = [p.name for p in params if p.default is inspect.Parameter.empty]
    rng_at = [i for i, a in enumerate(args) if a is RNG]
    expected_rng = [i for i, p in enumerate(params) if p.name == "rng"]
    if not (len(required) <= len(args) <= len(params)) or rng_at != expected_rng:
        raise TypeError(
            f"bench/step_ops.py builds {len(args)} arguments for {op.name} (rng at {rng_at}), but "
            f"pysampler.ops.{op.name}{inspect.signature(reference_fn(op.name))} differs: update its make_args"
        )


def make_input_sets(op: StepOp, size: str, device: torch.device, n_sets: int) -> list[tuple]:
    """``n_sets`` independent argument tuples (RNG placeholders left in) from a fixed seed."""
    _check_arguments(op)
    n, d = SIZES[size]
    g = torch.Generator(device=device)
    g.manual_seed(1234 + 7919 * list(SIZES).index(size))
    return [op.make_args(n, d, device, g) for _ in range(n_sets)]


def bind(args: tuple, rng) -> tuple:
    """``args`` with the RNG placeholder replaced by ``rng`` (the stream's tensor, or None for torch's generator)."""
    return tuple(rng if a is RNG else a for a in args)


def rng_tensor(device: torch.device) -> torch.Tensor:
    return torch.tensor([SEED, OFFSET], dtype=torch.int64, device=device)


# ----------------------------------------------------------------------------- implementations


def reference_fn(op: str) -> Callable:
    return getattr(reference_ops, op)


def compiled_eager(op: str) -> Callable:
    """``torch.compile`` of the reference op, to be called with ``rng=None`` (torch's generator).

    Dynamo's caches are reset first: every (op, size) compiles afresh for its static shapes, and
    never runs into the recompile limit of the reference function's code object.
    """
    torch._dynamo.reset()
    return torch.compile(reference_fn(op), fullgraph=True, dynamic=False)


def backend_fn(backend: str, op: str, device: torch.device) -> Callable | None:
    """The backend's own implementation of ``op``, or None when it falls back to the reference."""
    be = ps.backends.resolve(backend, device)
    return getattr(be, op) if op in be.overrides else None


# ----------------------------------------------------------------------------------- checking


def _flat_outputs(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, tuple | list) else [out]


def mismatch(reference, out, rtol: float = 1e-2, atol: float = 1e-3) -> float:
    """Largest fraction of elements, over the outputs, that differ from the reference.

    A sanity check that an implementation does the same work, not a precision test (tests/ does
    that): accept ops may flip a few chains whose uniform lies within rounding of α.
    """
    ref, got = _flat_outputs(reference), _flat_outputs(out)
    if len(ref) != len(got):
        return 1.0
    worst = 0.0
    for a, b in zip(ref, got, strict=True):
        if a.shape != b.shape:
            return 1.0
        a, b = a.detach(), b.detach()
        if a.dtype == torch.bool or b.dtype == torch.bool:
            bad = a.to(torch.bool) != b.to(torch.bool)
        else:
            bad = ~torch.isclose(a.to(torch.float64), b.to(torch.float64), rtol=rtol, atol=atol, equal_nan=True)
        worst = max(worst, float(bad.float().mean()) if a.numel() else 0.0)
    return worst


def gbps(bytes_per_elem: float, numel: int, seconds: float) -> float:
    return bytes_per_elem * numel / seconds / 1e9 if seconds > 0 and math.isfinite(seconds) else float("nan")
