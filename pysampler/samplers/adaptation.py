"""Per-chain step-size adaptation by dual averaging."""

from __future__ import annotations

import math

import torch

__all__ = ["DualAveraging"]


class DualAveraging:
    """Nesterov's dual averaging of log h toward a target acceptance rate, one scheme per chain.

    Hoffman & Gelman 2014 (NUTS), §3.2.1, with their constants γ=0.05, t₀=10, κ=0.75 and
    μ = log(10·h₀). ``update(accept_prob)`` after each burn-in step returns the next (N,)
    step sizes; ``final()`` the averaged step size to sample with after burn-in.
    """

    def __init__(self, step_size: torch.Tensor, target_accept: float, gamma: float = 0.05, t0: float = 10.0, kappa: float = 0.75):
        self.target = target_accept
        self.gamma, self.t0, self.kappa = gamma, t0, kappa
        log_h = step_size.detach().to(torch.float64).log()
        self.mu = log_h + math.log(10.0)
        self.log_h = log_h
        self.log_h_bar = torch.zeros_like(log_h)
        self.h_bar = torch.zeros_like(log_h)
        self.t = 0
        self.dtype = step_size.dtype

    def update(self, accept_prob: torch.Tensor) -> torch.Tensor:
        self.t += 1
        t = self.t
        eta = 1.0 / (t + self.t0)
        self.h_bar = (1.0 - eta) * self.h_bar + eta * (self.target - accept_prob.detach().to(torch.float64))
        self.log_h = self.mu - math.sqrt(t) / self.gamma * self.h_bar
        w = t ** (-self.kappa)
        self.log_h_bar = w * self.log_h + (1.0 - w) * self.log_h_bar
        return self.log_h.exp().to(self.dtype)

    def final(self) -> torch.Tensor:
        """The averaged step size exp(log h̄) (N,); the current one if no update was made."""
        return (self.log_h_bar if self.t > 0 else self.log_h).exp().to(self.dtype)
