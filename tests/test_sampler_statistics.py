"""Statistical correctness of every sampler, over many independent chains.

Each test runs N independent chains long enough to forget x0 (geometric convergence at
the rates noted), then treats the N final states as iid draws. The bounds are Monte Carlo
standard errors (see conftest: Z = 5). Unadjusted samplers are checked against their
*exact* discrete-time stationary law on Gaussian targets (a discrete Lyapunov equation),
so a tolerance the size of the discretisation bias cannot hide a bug; MALA and HMC are
checked against the target itself.
"""

from __future__ import annotations

import pytest
import torch

import pysampler as ps
from conftest import (
    Z,
    assert_gaussian_moments,
    obabo_stationary_covariance,
    ula_stationary_covariance,
)

F64 = torch.float64


def overdispersed_start(n: int, d: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 2.0 * torch.randn(n, d, generator=g, dtype=F64)


# Correlated 2-D Gaussian: Σ = [[1, .8], [.8, 1]] (eigenvalues 1.8 and 0.2), mean (1, -1).
MEAN2 = torch.tensor([1.0, -1.0], dtype=F64)
COV2 = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=F64)
TARGET2 = ps.Gaussian(MEAN2, scale_tril=torch.linalg.cholesky(COV2))
PREC2 = torch.linalg.inv(COV2)

# Stiff 10-D diagonal Gaussian: scales logspace(-1, 0, 10) (condition number 100).
SCALES10 = torch.logspace(-1, 0, 10, dtype=F64)
TARGET10 = ps.Gaussian(torch.zeros(10, dtype=F64), SCALES10)
PREC10 = torch.diag(SCALES10**-2)

# Steps: enough e-folds of the slowest mode (rates in the comments) to forget the start.
CASES_2D = {
    # Steps: enough e-folds of the slowest mode that the overdispersed start's error in the
    # variance (≈ 3σ² e^{-2·rate·n}) is below 0.1 standard error.
    # ULA: slowest contraction 1 - h·λ_min(P) = 1 - 0.1/1.8 per step → 250 steps ≈ e^-14.
    "ULA": (ps.ULA(0.1), 250, ula_stationary_covariance(PREC2, 0.1)),
    "ULA-cold": (ps.ULA(0.1, noise_scale=0.5), 250, ula_stationary_covariance(PREC2, 0.1, 0.5)),
    "MALA": (ps.MALA(0.25), 300, COV2),
    # OBABO h=0.2, γ=2: slow mode (ω² = 1/1.8) overdamped, rate ≈ ω²/γ ≈ 0.28 per time unit
    # → 250 steps = 50 time units ≈ e^-14.
    "KineticLangevin": (ps.KineticLangevin(0.2, 2.0), 250, obabo_stationary_covariance(PREC2, 0.2, 2.0)[:2, :2]),
    "HMC": (ps.HMC(0.25, 5), 100, COV2),
}

CASES_10D = {
    # ULA h=0.015 (stable: h < 2σ_min² = 0.02): the σ=1 mode contracts by 1 - 0.015 per step
    # → 400 steps ≈ e^-6 on the mean, e^-12 on the variance.
    "ULA": (ps.ULA(0.015), 400, ula_stationary_covariance(PREC10, 0.015)),
    # MALA h=0.01 (acceptance ≈ 0.6): the σ=1 mode relaxes at ≈ acceptance·h per step → 1000 steps.
    "MALA": (ps.MALA(0.01), 1000, torch.diag(SCALES10**2)),
    # OBABO h=0.1 (h·ω_max = 1 < 2), γ=2: critically damped slow mode, rate ≈ 1 per time unit
    # → 250 steps = 25 time units.
    "KineticLangevin": (ps.KineticLangevin(0.1, 2.0), 250, obabo_stationary_covariance(PREC10, 0.1, 2.0)[:10, :10]),
    # HMC h=0.05 (< 2σ_min for stability), L=20: one trajectory of length 1 per step.
    "HMC": (ps.HMC(0.05, 20), 100, torch.diag(SCALES10**2)),
}


# every step-wise backend, and the whole-chain fused kernels where the native library is built
BACKENDS_2D = ps.available_backends("cpu") + (["cpp-fused"] if "cpp" in ps.available_backends("cpu") else [])


@pytest.mark.parametrize("backend", BACKENDS_2D)
@pytest.mark.parametrize("name", list(CASES_2D))
def test_correlated_2d_gaussian(name, backend):
    sampler, n_steps, cov = CASES_2D[name]
    x0 = overdispersed_start(8000, 2)
    res = ps.sample(TARGET2, x0, sampler, n_steps, seed=11, backend=backend)
    assert res.backend == backend
    assert_gaussian_moments(res.x, MEAN2, cov)


@pytest.mark.parametrize("name", list(CASES_10D))
def test_stiff_10d_gaussian(name):
    sampler, n_steps, cov = CASES_10D[name]
    x0 = overdispersed_start(3000, 10) * SCALES10
    res = ps.sample(TARGET10, x0, sampler, n_steps, seed=12, backend="torch")
    assert_gaussian_moments(res.x, torch.zeros(10, dtype=F64), cov)


def test_kinetic_langevin_velocity_marginal():
    # The velocity's stationary law under OBABO is exactly N(0, I) for a Gaussian target.
    x0 = overdispersed_start(8000, 2)
    sampler = ps.KineticLangevin(0.2, 2.0)
    res = ps.sample(TARGET2, x0, sampler, 250, seed=13, backend="torch")
    full = obabo_stationary_covariance(PREC2, 0.2, 2.0)
    torch.testing.assert_close(full[2:, 2:], torch.eye(2, dtype=F64), atol=1e-9, rtol=0)
    assert_gaussian_moments(res.state.v, torch.zeros(2, dtype=F64), full[2:, 2:])


def test_adjusted_samplers_unbiased_where_ula_is_biased():
    # N(0, I₂) with h = 0.4: ULA's stationary variance is 1/(1 - h/2) = 1.25, a 25% bias,
    # which is > 15 standard errors with 10,000 chains. MALA and HMC at the same h are exact.
    target = ps.Gaussian(torch.zeros(2, dtype=F64), 1.0)
    x0 = overdispersed_start(10_000, 2)
    n = x0.shape[0]
    se_var = (2.0 / (n - 1)) ** 0.5
    ula = ps.sample(target, x0, ps.ULA(0.4), 200, seed=3, backend="torch").x
    ula_var = ula.var(0)
    torch.testing.assert_close(ula_var, torch.full((2,), 1.25, dtype=F64), atol=Z * 1.25 * se_var, rtol=0)
    assert bool(((ula_var - 1.0) / se_var > 10).all()), "ULA's bias should be visible at this step size"
    for sampler, steps in ((ps.MALA(0.4), 300), (ps.HMC(0.4, 3), 100)):
        x = ps.sample(target, x0, sampler, steps, seed=3, backend="torch").x
        assert_gaussian_moments(x, torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64))


class _LinearGenerator(torch.nn.Module):
    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.lin = torch.nn.Linear(a.shape[1], a.shape[0], dtype=F64)
        with torch.no_grad():
            self.lin.weight.copy_(a)
            self.lin.bias.copy_(b)

    def forward(self, z):
        return self.lin(z)


class _QuadraticEnergy(torch.nn.Module):
    def __init__(self, center: torch.Tensor, scale: float):
        super().__init__()
        self.center = torch.nn.Parameter(center.clone())
        self.scale = scale

    def forward(self, x):
        return 0.5 * ((x - self.center) / self.scale).square().sum(1)


@pytest.mark.parametrize(
    "sampler,n_steps,backend",
    [(ps.MALA(0.15), 400, "torch"), (ps.HMC(0.15, 8), 100, "torch"), (ps.ULA(0.05), 300, "torch"), (ps.ULA(0.05), 300, "auto")],
)
def test_latent_target_posterior_closed_form(sampler, n_steps, backend):
    # z ∈ R³, x = A z + b ∈ R⁴, E(x) = ½|x - c|²/s², temperature T:
    # π(z) ∝ N(z; 0, I)·exp(-T E(Az + b)) is Gaussian with precision I + (T/s²)AᵀA
    # and mean P⁻¹ (T/s²) Aᵀ(c - b). ULA (which adds the prior's gradient z inside its update
    # kernel) samples its own stationary law: the same mean, the covariance of the linear recursion.
    g = torch.Generator().manual_seed(5)
    a = torch.randn(4, 3, generator=g, dtype=F64)
    b = torch.randn(4, generator=g, dtype=F64)
    c = torch.randn(4, generator=g, dtype=F64)
    s, temp = 0.8, 1.5
    gen, energy = _LinearGenerator(a, b), _QuadraticEnergy(c, s)
    target = ps.LatentTarget(gen, energy, temperature=temp)
    prec = torch.eye(3, dtype=F64) + (temp / s**2) * a.T @ a
    cov = torch.linalg.inv(prec)
    mean = cov @ ((temp / s**2) * a.T @ (c - b))
    if isinstance(sampler, ps.ULA):
        cov = ula_stationary_covariance(prec, sampler.step_size)
    res = ps.sample(target, overdispersed_start(6000, 3), sampler, n_steps, seed=21, backend=backend)
    assert res.state.prior_weight == (1.0 if isinstance(sampler, ps.ULA) else 0.0)
    assert_gaussian_moments(res.x, mean, cov)
    torch.testing.assert_close(target.decode(res.x[:5]), res.x[:5] @ a.T + b)
    assert all(p.grad is None for p in list(gen.parameters()) + list(energy.parameters()))


def test_mala_rejects_non_finite_energies():
    # Hard wall: U = ½|x|² for x₀ < 0.5, +inf beyond. No chain may cross, acceptance drops below 1.
    def walled(x):
        u = 0.5 * x.square().sum(1)
        return torch.where(x[:, 0] < 0.5, u, torch.full_like(u, float("inf")))

    x0 = torch.zeros(500, 2, dtype=F64) - 0.5
    for sampler in (ps.MALA(0.5), ps.HMC(0.3, 4)):
        res = ps.sample(walled, x0, sampler, 100, seed=4, backend="torch")
        assert bool(torch.isfinite(res.x).all())
        assert bool((res.x[:, 0] < 0.5).all())
        assert 0.1 < float(res.accept_rate.mean()) < 0.99


def test_dual_averaging_reaches_target_acceptance():
    # Per-chain dual averaging from step sizes 100x too small and 10x too large must land
    # on the same step sizes and near the target acceptance. The realised rate sits somewhat
    # above the target (the averaged step is a geometric mean of noisy iterates; Stan shows
    # the same), hence the 0.15 band.
    x0 = overdispersed_start(400, 10) * SCALES10
    for make in (lambda h: ps.MALA(h, adapt_step_size=True), lambda h: ps.HMC(h, 5, adapt_step_size=True)):
        adapted = []
        for h0 in (1e-4, 0.1):
            sampler = make(h0)
            res = ps.sample(TARGET10, x0, sampler, 200, burn_in=500, seed=9, backend="torch")
            rate = float(res.accept_rate.mean())
            assert abs(rate - sampler.target_accept) < 0.15, (sampler.name, h0, rate)
            assert res.step_size.shape == (400,)
            adapted.append(res.step_size.median())
        ratio = float(adapted[0] / adapted[1])
        assert 0.5 < ratio < 2.0, (sampler.name, adapted)


def test_diagnostics_on_sampler_trace():
    res = ps.sample(TARGET2, overdispersed_start(16, 2), ps.MALA(0.25), 2000, burn_in=200, seed=2, record=True, backend="torch")
    rhat = ps.diagnostics.split_rhat(res.trace)
    ess = ps.diagnostics.effective_sample_size(res.trace)
    assert rhat.shape == (2,) and bool((rhat < 1.05).all())
    assert bool((ess > 500).all()) and bool((ess < res.trace.shape[0] * res.trace.shape[1] * 1.5).all())
