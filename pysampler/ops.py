"""Reference implementations of every step op, in plain PyTorch.

Each op is the elementwise work of one sampler step given the energy gradient: what a
fused Triton / C++ / CUDA kernel does in one pass. They are the correctness oracle for
every faster backend (tested on the same inputs and the same random stream) and the
fallback when no faster implementation exists.

Conventions:
    x, v, p, grad: (N, *event); energies: (N,); step_size, friction: (N,) per chain.
    rng: int64 tensor (2,) = (seed, offset). An op's i-th normal (row-major flat index)
    is ``rng.normal(seed, offset + i)``; an op that also draws one uniform per chain takes
    them at ``offset + numel + n``. Callers advance the offset by what each op consumes
    (see :func:`counters`).
"""

from __future__ import annotations

import torch

from . import rng as _rng

__all__ = [
    "counters",
    "ula_step",
    "mala_accept",
    "kinetic_oba",
    "kinetic_bo",
    "leapfrog_kick_drift",
    "kick",
    "hmc_accept",
]


# Philox counters each draw consumes: one per element of the state, or one per chain.
_PER_ELEMENT = frozenset({"ula_step", "kinetic_oba", "kinetic_bo", "momentum"})
_PER_CHAIN = frozenset({"mala_accept", "hmc_accept"})


def counters(op: str, x: torch.Tensor) -> int:
    """Number of Philox counters ``op`` consumes for a state like ``x`` (N, *event)."""
    if op in _PER_ELEMENT:
        return x.numel()
    if op in _PER_CHAIN:
        return x.shape[0]
    raise KeyError(f"unknown step op {op!r}")


def _seed_offset(rng: torch.Tensor) -> tuple[int, int]:
    seed, offset = rng.tolist()
    return int(seed), int(offset)


def _noise(rng: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    seed, offset = _seed_offset(rng)
    return _rng.normal(seed, offset, like.shape, like.dtype, like.device)


def _uniform(rng: torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    seed, offset = _seed_offset(rng)
    return _rng.uniform(seed, offset, n, device)


def per_chain(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View a per-chain (N,) tensor so it broadcasts over ``like`` (N, *event)."""
    return t.reshape(t.shape[0], *([1] * (like.ndim - 1)))


def momentum(rng: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Fresh standard-normal momentum shaped like ``like`` (HMC, kinetic Langevin init)."""
    return _noise(rng, like)


def ula_step(x: torch.Tensor, grad: torch.Tensor, step_size: torch.Tensor, noise_scale: float, rng: torch.Tensor) -> torch.Tensor:
    """x' = x - h∇U(x) + √(2h)·noise_scale·ξ (unadjusted Langevin; noise_scale=0: gradient flow)."""
    h = per_chain(step_size, x)
    out = x - h * grad
    if noise_scale != 0.0:
        out = out + torch.sqrt(2.0 * h) * noise_scale * _noise(rng, x)
    return out


def _sq_norm(v: torch.Tensor) -> torch.Tensor:
    """Per-row squared Euclidean norm of v (N, D), in one reduction pass."""
    return torch.linalg.vector_norm(v, dim=1).square()


def _mh_select(log_alpha: torch.Tensor, rng: torch.Tensor, current: tuple, proposed: tuple):
    """Metropolis-Hastings: keep ``proposed`` where u < α. Non-finite log α is a rejection.

    Returns (selected tensors..., accept_prob (N,), accepted (N,) bool). The uniform u for
    chain n is counter ``offset + n``.
    """
    log_alpha = torch.where(torch.isfinite(log_alpha), log_alpha, torch.full_like(log_alpha, -torch.inf))
    accept_prob = torch.exp(torch.clamp_max(log_alpha, 0.0))
    u = _uniform(rng, log_alpha.shape[0], log_alpha.device).to(log_alpha.dtype)
    accepted = u < accept_prob
    out = tuple(torch.where(per_chain(accepted, c), p, c) for c, p in zip(current, proposed, strict=True))
    return (*out, accept_prob.detach(), accepted)


def mala_accept(
    x: torch.Tensor, energy: torch.Tensor, grad: torch.Tensor,
    y: torch.Tensor, energy_y: torch.Tensor, grad_y: torch.Tensor,
    step_size: torch.Tensor, rng: torch.Tensor,
):
    """MALA accept/reject of proposal y from x (Roberts & Tweedie 1996).

    log α = U(x) − U(y) + log q(x|y) − log q(y|x), q(b|a) = N(b; a − h∇U(a), 2h I).
    A non-finite proposal is rejected. Uniform for chain n at counter offset + n.
    Returns (x, energy, grad, accept_prob, accepted).
    """
    h = per_chain(step_size, x)
    diff = (y - x).flatten(1)
    fwd = _sq_norm(torch.addcmul(diff, h.flatten(1), grad.flatten(1)))  # |y − x + h∇U(x)|²
    bwd = _sq_norm(torch.addcmul(-diff, h.flatten(1), grad_y.flatten(1)))  # |x − y + h∇U(y)|²
    # A non-finite y or ∇U(y) makes fwd or bwd inf/NaN, hence log α non-finite: _mh_select
    # rejects it without a separate pass over the proposal.
    log_alpha = energy - energy_y - (bwd - fwd) / (4.0 * step_size)
    return _mh_select(log_alpha, rng, (x, energy, grad), (y, energy_y, grad_y))


def _ou_coefficients(step_size: torch.Tensor, friction: torch.Tensor, like: torch.Tensor):
    # Exact Ornstein-Uhlenbeck half step: v ← e^{−γh/2} v + √(1 − e^{−γh}) ξ.
    gh = per_chain(friction * step_size, like)
    return torch.exp(-0.5 * gh), torch.sqrt(-torch.expm1(-gh))


def kinetic_oba(
    x: torch.Tensor, v: torch.Tensor, grad: torch.Tensor,
    step_size: torch.Tensor, friction: torch.Tensor, rng: torch.Tensor,
):
    """First half of an OBABO step: O(h/2), B(h/2), A(h). Returns (x', v')."""
    decay, noise_std = _ou_coefficients(step_size, friction, v)
    h = per_chain(step_size, x)
    v = decay * v + noise_std * _noise(rng, v)
    v = v - 0.5 * h * grad
    return x + h * v, v


def kinetic_bo(
    v: torch.Tensor, grad: torch.Tensor, step_size: torch.Tensor, friction: torch.Tensor, rng: torch.Tensor
) -> torch.Tensor:
    """Second half of an OBABO step, after the gradient at the new x: B(h/2), O(h/2). Returns v'."""
    decay, noise_std = _ou_coefficients(step_size, friction, v)
    v = v - 0.5 * per_chain(step_size, v) * grad
    return decay * v + noise_std * _noise(rng, v)


def leapfrog_kick_drift(x: torch.Tensor, p: torch.Tensor, grad: torch.Tensor, kick_size: torch.Tensor, step_size: torch.Tensor):
    """p ← p − k∇U(x); x ← x + h p (k = h/2 on the first leapfrog step, h after). Returns (x, p)."""
    p = p - per_chain(kick_size, p) * grad
    return x + per_chain(step_size, x) * p, p


def kick(p: torch.Tensor, grad: torch.Tensor, kick_size: torch.Tensor) -> torch.Tensor:
    """p ← p − k∇U(x) (the closing half kick of a leapfrog trajectory)."""
    return p - per_chain(kick_size, p) * grad


def hmc_accept(
    x: torch.Tensor, energy: torch.Tensor, grad: torch.Tensor, p0: torch.Tensor,
    y: torch.Tensor, energy_y: torch.Tensor, grad_y: torch.Tensor, p: torch.Tensor,
    rng: torch.Tensor,
):
    """HMC accept/reject on the total energy H = U + ½|p|² (Duane et al. 1987; Neal 2011).

    A non-finite Hamiltonian is rejected; rejected chains get back their position, energy
    and cached gradient. Uniform for chain n at counter offset + n.
    Returns (x, energy, grad, accept_prob, accepted).
    """
    h0 = energy + 0.5 * _sq_norm(p0.flatten(1))
    h1 = energy_y + 0.5 * _sq_norm(p.flatten(1))
    # ∇U(y) enters p through the last kick, so a non-finite gradient makes H non-finite; y itself
    # does not enter H, so check it (an energy may stay finite at an infinite position).
    finite = torch.isfinite(y.flatten(1)).all(1)
    log_alpha = torch.where(finite, h0 - h1, torch.full_like(h0, -torch.inf))
    return _mh_select(log_alpha, rng, (x, energy, grad), (y, energy_y, grad_y))
