"""The eager PyTorch loops a user would write by hand: the baseline every ratio is against.

No pysampler code runs here except the workload's energy U (a Target's ``potential`` or the
nn.Module), which the user has anyway. Noise comes from ``torch.randn_like`` / ``torch.rand``
(the global generator), gradients from ``torch.autograd.grad`` — also for W2's Gaussian,
whose closed-form gradient pysampler uses; that is part of what the comparison measures.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["eager_ula", "eager_mala", "eager_kinetic", "make_eager", "make_compiled"]

Energy = Callable[[torch.Tensor], torch.Tensor]


def _energy_and_grad(energy: Energy, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    u = energy(x)
    (g,) = torch.autograd.grad(u.sum(), x)
    return u.detach(), g


def eager_ula(energy: Energy, x0: torch.Tensor, step_size: float, n_steps: int) -> torch.Tensor:
    """x ← x − h∇U(x) + √(2h)·ξ, ξ = torch.randn_like(x); n_steps gradient evaluations."""
    h = step_size
    noise_std = math.sqrt(2.0 * h)
    x = x0
    for _ in range(n_steps):
        _, g = _energy_and_grad(energy, x)
        with torch.no_grad():
            x = x - h * g + noise_std * torch.randn_like(x)
    return x


def eager_mala(energy: Energy, x0: torch.Tensor, step_size: float, n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Textbook MALA with U and ∇U cached (one evaluation per step, plus one at x0).

    y = x − h∇U(x) + √(2h)ξ;  log α = U(x) − U(y) + log q(x|y) − log q(y|x),
    q(b|a) ∝ exp(−|b − a + h∇U(a)|² / 4h);  accept where log u < log α, u = torch.rand.
    Returns (final x (N, d), acceptance rate (N,)).
    """
    h = step_size
    noise_std = math.sqrt(2.0 * h)
    x = x0.detach()
    u, g = _energy_and_grad(energy, x)
    n_accepted = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    for _ in range(n_steps):
        with torch.no_grad():
            y = x - h * g + noise_std * torch.randn_like(x)
        u_y, g_y = _energy_and_grad(energy, y)
        with torch.no_grad():
            log_q_fwd = -(y - x + h * g).square().sum(1) / (4.0 * h)  # log q(y|x)
            log_q_bwd = -(x - y + h * g_y).square().sum(1) / (4.0 * h)  # log q(x|y)
            log_alpha = u - u_y + log_q_bwd - log_q_fwd
            accept = torch.rand_like(u).log() < log_alpha
            x = torch.where(accept[:, None], y, x)
            u = torch.where(accept, u_y, u)
            g = torch.where(accept[:, None], g_y, g)
            n_accepted += accept
    return x, n_accepted / max(n_steps, 1)


def eager_kinetic(energy: Energy, x0: torch.Tensor, step_size: float, friction: float, n_steps: int) -> torch.Tensor:
    """Kinetic Langevin, OBABO splitting, v₀ = torch.randn_like(x0); n_steps + 1 gradient evaluations.

    O: v ← e^{−γh/2} v + √(1 − e^{−γh}) ξ;  B: v ← v − (h/2)∇U(x);  A: x ← x + h v.
    """
    h = step_size
    decay, noise_std = math.exp(-0.5 * friction * h), math.sqrt(-math.expm1(-friction * h))
    x = x0.detach()
    v = torch.randn_like(x)
    _, g = _energy_and_grad(energy, x)
    for _ in range(n_steps):
        with torch.no_grad():
            v = decay * v + noise_std * torch.randn_like(v)
            v = v - 0.5 * h * g
            x = x + h * v
        _, g = _energy_and_grad(energy, x)
        with torch.no_grad():
            v = v - 0.5 * h * g
            v = decay * v + noise_std * torch.randn_like(v)
    return x


def make_eager(
    energy: Energy, x0: torch.Tensor, algorithm: str, step_size: float, n_steps: int, friction: float = 1.0
) -> Callable[[], torch.Tensor]:
    """A zero-arg function running the hand-written loop for ``algorithm`` ("ula" / "mala" / "kinetic")."""
    if algorithm == "ula":
        return lambda: eager_ula(energy, x0, step_size, n_steps)
    if algorithm == "mala":
        return lambda: eager_mala(energy, x0, step_size, n_steps)[0]
    if algorithm == "kinetic":
        return lambda: eager_kinetic(energy, x0, step_size, friction, n_steps)
    raise ValueError(f"algorithm must be 'ula', 'mala' or 'kinetic'; got {algorithm!r}")


def make_compiled(
    energy: Energy, x0: torch.Tensor, algorithm: str, step_size: float, n_steps: int, friction: float = 1.0
) -> Callable[[], torch.Tensor]:
    """The same chains with one step under ``torch.compile``, called ``n_steps`` times from Python.

    What a user gets by compiling their step: ∇U through ``torch.func.grad_and_value`` (which
    Dynamo traces; ``torch.autograd.grad`` would break the graph), the update and the MH test in
    one Inductor graph, noise from ``torch.randn_like`` / ``torch.rand_like`` as in the eager loop.
    The first call compiles (the benchmark's untimed warm-up round).
    """
    h = step_size
    noise_std = math.sqrt(2.0 * h)

    def total(x):
        u = energy(x)
        return u.sum(), u

    grad_and_energy = torch.func.grad_and_value(total, has_aux=True)

    def energy_and_grad(x):
        g, (_, u) = grad_and_energy(x)
        return u, g

    if algorithm == "ula":

        @torch.compile(dynamic=False)
        def ula_step(x):
            _, g = energy_and_grad(x)
            return x - h * g + noise_std * torch.randn_like(x)

        @torch.no_grad()  # no graph to the module's parameters (grad_and_value still differentiates in x)
        def run() -> torch.Tensor:
            x = x0.detach()
            for _ in range(n_steps):
                x = ula_step(x)
            return x

        return run
    if algorithm == "mala":

        @torch.compile(dynamic=False)
        def mala_step(x, u, g):
            y = x - h * g + noise_std * torch.randn_like(x)
            u_y, g_y = energy_and_grad(y)
            log_q_fwd = -(y - x + h * g).square().sum(1) / (4.0 * h)
            log_q_bwd = -(x - y + h * g_y).square().sum(1) / (4.0 * h)
            accept = torch.rand_like(u).log() < u - u_y + log_q_bwd - log_q_fwd
            return (torch.where(accept[:, None], y, x), torch.where(accept, u_y, u),
                    torch.where(accept[:, None], g_y, g))

        def run() -> torch.Tensor:
            x = x0.detach()
            u, g = _energy_and_grad(energy, x)
            with torch.no_grad():  # no graph to the module's parameters (grad_and_value still differentiates in x)
                for _ in range(n_steps):
                    x, u, g = mala_step(x, u, g)
            return x

        return run
    if algorithm == "kinetic":
        decay, o_std = math.exp(-0.5 * friction * h), math.sqrt(-math.expm1(-friction * h))

        @torch.compile(dynamic=False)
        def obabo_step(x, v, g):  # as eager_kinetic: O B A, then the gradient at the new x, B O
            v = decay * v + o_std * torch.randn_like(v) - 0.5 * h * g
            x = x + h * v
            _, g = energy_and_grad(x)
            v = decay * (v - 0.5 * h * g) + o_std * torch.randn_like(v)
            return x, v, g

        def run() -> torch.Tensor:
            x = x0.detach()
            v = torch.randn_like(x)
            _, g = _energy_and_grad(energy, x)
            with torch.no_grad():
                for _ in range(n_steps):
                    x, v, g = obabo_step(x, v, g)
            return x

        return run
    raise ValueError(f"algorithm must be 'ula', 'mala' or 'kinetic'; got {algorithm!r}")
