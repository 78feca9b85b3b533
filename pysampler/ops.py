"""Reference implementations of every step op, in plain PyTorch.

Each op is the elementwise work of one sampler step given the energy gradient: what a
fused Triton / C++ / CUDA kernel does in one pass. They are the correctness oracle for
every faster backend (tested on the same inputs and the same random stream) and the
fallback when no faster implementation exists.

Conventions:
    x, v, p, grad: (N, *event); energies: (N,); step_size, friction: (N,) per chain.
    float32 and float64 compute in their own precision; float16 / bfloat16 inputs are storage
    only: the arithmetic runs in float32 and results are cast back (:func:`compute_dtype`).
    rng: int64 tensor (2,) = (seed, offset). An op's i-th normal (row-major flat index)
    is ``rng.normal(seed, offset + i)``; an op that also draws one uniform per chain takes
    them at ``offset + numel + n``. Callers advance the offset by what each op consumes
    (see :func:`counters`). ``rng=None`` draws from torch's global generator instead (the
    hand-written loop a user would write; not pysampler's stream, and not reproducible across
    backends): the benchmarks' eager and torch.compile baselines.
"""

from __future__ import annotations

import torch

from . import rng as _rng

__all__ = [
    "compute_dtype",
    "counters",
    "ula_step",
    "mala_accept",
    "kinetic_oba",
    "kinetic_bo",
    "leapfrog_kick_drift",
    "kick",
    "hmc_accept",
    "momentum",
    "q_sample",
    "posterior_sample",
    "q_sample_reference",
    "posterior_sample_reference",
]


# Philox counters each draw consumes: one per element of the state, or one per chain.
_PER_ELEMENT = frozenset({"ula_step", "kinetic_oba", "kinetic_bo", "momentum", "q_sample", "posterior_sample"})
_PER_CHAIN = frozenset({"mala_accept", "hmc_accept"})


def counters(op: str, x: torch.Tensor) -> int:
    """Number of Philox counters ``op`` consumes for a state like ``x`` (N, *event)."""
    if op in _PER_ELEMENT:
        return x.numel()
    if op in _PER_CHAIN:
        return x.shape[0]
    raise KeyError(f"unknown step op {op!r}")


HALF_DTYPES = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Arithmetic dtype for a storage dtype: float32 for float16 / bfloat16, else the dtype itself."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def _noise(rng: torch.Tensor | None, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Normals shaped like ``like`` (in ``dtype``, default like's) at counters offset, offset + 1, ...

    ``rng=None`` draws from torch's global generator instead: the step exactly as a hand-written
    loop runs it (``torch.randn``), which is what bench/ times as the eager / torch.compile baseline.
    """
    dtype = like.dtype if dtype is None else dtype
    if rng is None:
        return torch.randn(like.shape, dtype=torch.float32, device=like.device).to(dtype)
    # seed and offset stay on the device: no host sync, so a step can be captured in a CUDA graph
    return _rng.normal(rng[0], rng[1], like.shape, dtype, like.device)


def _uniform(rng: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    if rng is None:  # torch's global generator (see _noise)
        return torch.rand(n, dtype=torch.float32, device=device)
    return _rng.uniform(rng[0], rng[1], n, device)


def per_chain(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View a per-chain (N,) tensor so it broadcasts over ``like`` (N, *event)."""
    return t.reshape(t.shape[0], *([1] * (like.ndim - 1)))


def momentum(rng: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Fresh standard-normal momentum shaped like ``like`` (HMC, kinetic Langevin init)."""
    return _noise(rng, like)


def _up(like: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """``tensors`` in the compute dtype of ``like`` (no copy when it already is)."""
    cdt = compute_dtype(like.dtype)
    return [t.to(cdt) for t in tensors]


def ula_step(
    x: torch.Tensor, grad: torch.Tensor, step_size: torch.Tensor, noise_scale: float, rng: torch.Tensor,
    prior_weight: float = 0.0,
) -> torch.Tensor:
    """x' = x − h(∇U(x) + w·x) + √(2h)·noise_scale·ξ (unadjusted Langevin; noise_scale=0: gradient flow).

    ``prior_weight`` w adds the gradient of a standard-normal prior w·½|x|² (a latent target's
    prior, LatentTarget) to ``grad`` inside the step, so ``grad`` need only hold the rest.
    """
    xc, g, step = _up(x, x, grad, step_size)
    h = per_chain(step, xc)
    if prior_weight != 0.0:
        g = g + prior_weight * xc
    out = xc - h * g
    if noise_scale != 0.0:
        out = out + torch.sqrt(2.0 * h) * noise_scale * _noise(rng, xc)
    return out.to(x.dtype)


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
    xc, yc, gx, gy, step, ex, ey = _up(x, x, y, grad, grad_y, step_size, energy, energy_y)
    h = per_chain(step, xc).flatten(1)
    diff = (yc - xc).flatten(1)
    fwd = _sq_norm(torch.addcmul(diff, h, gx.flatten(1)))  # |y − x + h∇U(x)|²
    bwd = _sq_norm(torch.addcmul(-diff, h, gy.flatten(1)))  # |x − y + h∇U(y)|²
    # A non-finite y or ∇U(y) makes fwd or bwd inf/NaN, hence log α non-finite: _mh_select
    # rejects it without a separate pass over the proposal.
    log_alpha = ex - ey - (bwd - fwd) / (4.0 * step)
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
    xc, vc, g, step, gamma = _up(x, x, v, grad, step_size, friction)
    decay, noise_std = _ou_coefficients(step, gamma, vc)
    h = per_chain(step, xc)
    vc = decay * vc + noise_std * _noise(rng, vc)
    vc = vc - 0.5 * h * g
    return (xc + h * vc).to(x.dtype), vc.to(v.dtype)


def kinetic_bo(
    v: torch.Tensor, grad: torch.Tensor, step_size: torch.Tensor, friction: torch.Tensor, rng: torch.Tensor
) -> torch.Tensor:
    """Second half of an OBABO step, after the gradient at the new x: B(h/2), O(h/2). Returns v'."""
    vc, g, step, gamma = _up(v, v, grad, step_size, friction)
    decay, noise_std = _ou_coefficients(step, gamma, vc)
    vc = vc - 0.5 * per_chain(step, vc) * g
    return (decay * vc + noise_std * _noise(rng, vc)).to(v.dtype)


def leapfrog_kick_drift(x: torch.Tensor, p: torch.Tensor, grad: torch.Tensor, kick_size: torch.Tensor, step_size: torch.Tensor):
    """p ← p − k∇U(x); x ← x + h p (k = h/2 on the first leapfrog step, h after). Returns (x, p)."""
    xc, pc, g, k, step = _up(x, x, p, grad, kick_size, step_size)
    pc = pc - per_chain(k, pc) * g
    return (xc + per_chain(step, xc) * pc).to(x.dtype), pc.to(p.dtype)


def kick(p: torch.Tensor, grad: torch.Tensor, kick_size: torch.Tensor) -> torch.Tensor:
    """p ← p − k∇U(x) (the closing half kick of a leapfrog trajectory)."""
    pc, g, k = _up(p, p, grad, kick_size)
    return (pc - per_chain(k, pc) * g).to(p.dtype)


def hmc_accept(
    x: torch.Tensor, energy: torch.Tensor, grad: torch.Tensor, p0: torch.Tensor,
    y: torch.Tensor, energy_y: torch.Tensor, grad_y: torch.Tensor, p: torch.Tensor,
    kick_size: torch.Tensor, rng: torch.Tensor,
):
    """HMC accept/reject on the total energy H = U + ½|p|² (Duane et al. 1987; Neal 2011).

    ``p`` is the momentum at y *before* the trajectory's closing half kick: the kick
    p − k∇U(y) is applied here, for the kinetic energy only (HMC redraws the momentum, so the
    final one is never stored). A non-finite Hamiltonian is rejected; rejected chains get back
    their position, energy and cached gradient. Uniform for chain n at counter offset + n.
    Returns (x, energy, grad, accept_prob, accepted).
    """
    p0c, pc, gy, k, ex, ey = _up(x, p0, p, grad_y, kick_size, energy, energy_y)
    p_end = pc - per_chain(k, pc) * gy
    h0 = ex + 0.5 * _sq_norm(p0c.flatten(1))
    h1 = ey + 0.5 * _sq_norm(p_end.flatten(1))
    # ∇U(y) enters p through the closing kick, so a non-finite gradient makes H non-finite; y
    # itself does not enter H, so check it (an energy may stay finite at an infinite position).
    finite = torch.isfinite(y.flatten(1)).all(1)
    log_alpha = torch.where(finite, h0 - h1, torch.full_like(h0, -torch.inf))
    return _mh_select(log_alpha, rng, (x, energy, grad), (y, energy_y, grad_y))


# ---------------------------------------------------------------------------------- diffusion
# Elementwise cores of DDPM / DDGAN noising and posterior sampling (formulas: pysampler.diffusion).


def q_sample_reference(
    x0: torch.Tensor, sqrt_ab: torch.Tensor, sqrt_1mab: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """Elementwise core of q_sample: ``sqrt_ab * x0 + sqrt_1mab * noise``.

    x0, noise: (N, *event); sqrt_ab, sqrt_1mab: (N,) per-sample coefficients broadcast over the
    event dims. Arithmetic in :func:`compute_dtype` of x0; the result has x0's dtype. Kernels
    reproduce this order of operations.
    """
    cdt = compute_dtype(x0.dtype)
    x = x0.to(cdt)
    out = per_chain(sqrt_ab.to(cdt), x) * x + per_chain(sqrt_1mab.to(cdt), x) * noise.to(cdt)
    return out.to(x0.dtype)


def posterior_sample_reference(
    x0: torch.Tensor,
    xt: torch.Tensor,
    coef_x0: torch.Tensor,
    coef_xt: torch.Tensor,
    std: torch.Tensor,
    noise: torch.Tensor,
) -> torch.Tensor:
    """Elementwise core of posterior_sample: ``(coef_x0 * x0 + coef_xt * xt) + std * noise``.

    x0, xt, noise: (N, *event); coef_x0, coef_xt, std: (N,) per-sample coefficients broadcast
    over the event dims. Arithmetic in :func:`compute_dtype` of x0; the result has x0's dtype.
    Kernels reproduce this order of operations.
    """
    cdt = compute_dtype(x0.dtype)
    a = x0.to(cdt)
    b = xt.to(cdt)
    mean = per_chain(coef_x0.to(cdt), a) * a + per_chain(coef_xt.to(cdt), a) * b
    out = mean + per_chain(std.to(cdt), a) * noise.to(cdt)
    return out.to(x0.dtype)


def q_sample(
    x0: torch.Tensor, t_index: torch.Tensor, sqrt_ab: torch.Tensor, sqrt_1mab: torch.Tensor, rng: torch.Tensor
) -> torch.Tensor:
    """x_t ~ q(x_t | x_0) with a per-sample step: the op behind ``VPSchedule.q_sample``.

    x0: (N, *event); t_index: (N,) int64 0-based step index (t − 1); sqrt_ab, sqrt_1mab: (T,)
    schedule tables, gathered per sample. Noise: normal i at counter offset + i.
    """
    cdt = compute_dtype(x0.dtype)
    return q_sample_reference(x0, sqrt_ab[t_index], sqrt_1mab[t_index], _noise(rng, x0, cdt))


def posterior_sample(
    x0: torch.Tensor, xt: torch.Tensor, t_index: torch.Tensor,
    coef_x0: torch.Tensor, coef_xt: torch.Tensor, std: torch.Tensor, rng: torch.Tensor,
) -> torch.Tensor:
    """x_{t−1} ~ q(x_{t−1} | x_t, x_0) with a per-sample step: the op behind ``diffusion.posterior_sample``.

    x0, xt: (N, *event); t_index: (N,) int64 0-based step index (t − 1); coef_x0, coef_xt, std:
    (T,) schedule tables, gathered per sample. Noise: normal i at counter offset + i.
    """
    cdt = compute_dtype(x0.dtype)
    return posterior_sample_reference(
        x0, xt, coef_x0[t_index], coef_xt[t_index], std[t_index], _noise(rng, x0, cdt)
    )
