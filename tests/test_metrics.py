"""pysampler.metrics: MMD² against a direct computation, the permutation test's behaviour, KALE's
known answers, the Fréchet distance."""

from __future__ import annotations

import math

import pytest
import torch

from pysampler import metrics


def direct_mmd2(x, y, sigma):
    def k(a, b):
        return math.exp(-float((a - b).square().sum()) / (2 * sigma**2))

    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return kxx + kyy - 2 * kxy


def test_mmd2_matches_the_definition():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([[0.5, 0.5], [2.0, 1.0], [1.0, 1.0], [3.0, 0.0]])
    assert metrics.mmd2(x, y, bandwidth=1.3) == pytest.approx(direct_mmd2(x, y, 1.3), rel=1e-12)
    # the median heuristic: median of the pooled pairwise distances
    z = torch.cat([x, y]).double()
    pairs = [float((z[i] - z[j]).norm()) for i in range(len(z)) for j in range(i + 1, len(z))]
    sigma = sorted(pairs)[(len(pairs) - 1) // 2]  # torch.median takes the lower middle
    assert metrics.median_bandwidth(x, y) == pytest.approx(sigma)
    assert metrics.mmd2(x, y) == pytest.approx(direct_mmd2(x, y, sigma), rel=1e-12)
    # images are flattened
    assert metrics.mmd2(x.view(3, 1, 2), y.view(4, 1, 2), 1.3) == pytest.approx(direct_mmd2(x, y, 1.3), rel=1e-12)
    with pytest.raises(ValueError, match="same number of features"):
        metrics.mmd2(x, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="at least 2 samples"):
        metrics.mmd2(x[:1], y)


def test_permutation_test_statistic_and_power():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(150, 2, generator=g)
    y = torch.randn(150, 2, generator=g) + 2.0
    res = metrics.mmd_test(x, y, n_permutations=99, generator=g)
    assert res.mmd2 == pytest.approx(metrics.mmd2(x, y), rel=1e-12)
    assert res.p_value == pytest.approx(1 / 100)  # no relabelling comes close to a 2-sd shift


def test_permutation_test_is_calibrated_under_the_null():
    # Same distribution: p is (close to) uniform, so p < 0.05 in about 1 of 20 data sets; 5 or more
    # of 20 happens with probability 0.003 for a calibrated test.
    g = torch.Generator().manual_seed(1)
    small = sum(
        metrics.mmd_test(torch.randn(60, 2, generator=g), torch.randn(60, 2, generator=g), 99, generator=g).p_value < 0.05
        for _ in range(20)
    )
    assert small < 5


def test_kale_known_answers():
    # P = N(mu, 1), Q = N(0, 1): with E = -log dP/dQ = -(mu x - mu²/2) the bound is KL(P||Q) = mu²/2.
    mu, n = 1.0, 200_000
    g = torch.Generator().manual_seed(2)
    p = torch.randn(n, generator=g, dtype=torch.float64) + mu
    q = torch.randn(n, generator=g, dtype=torch.float64)

    def energy(t):
        return -(mu * t - mu**2 / 2)

    # Monte Carlo error: sd(E under P) = mu, sd(exp(-E) under Q) = sqrt(e^{mu²} - 1)
    se = math.sqrt((mu**2 + math.exp(mu**2) - 1) / n)
    assert abs(metrics.kale(energy(p), energy(q), log_partition=0.0) - mu**2 / 2) < 5 * se
    assert abs(metrics.kale(energy(p), energy(q)) - mu**2 / 2) < 5 * se
    # a constant energy cannot tell P from Q: 0 at the optimal c, negative at any other c
    const = torch.full((10,), 3.0)
    assert metrics.kale(const, const) == pytest.approx(0.0, abs=1e-12)
    assert metrics.kale(const, const, log_partition=0.0) < 0.0


def test_high_quality_fraction_on_gaussians25():
    from pysampler.models import data

    modes = data.gaussians25_modes()
    x = data.toy("gaussians25", 10_000, torch.Generator().manual_seed(4))
    cov = metrics.mode_coverage(x, modes, data.GAUSSIANS25_STD, radius=3.0)
    assert cov.n_covered == 25
    # within 3σ of its mode in 2-D: 1 - exp(-9/2) = 0.9889 of the mass; sd of the fraction ≈ 0.001
    assert abs(cov.fraction_near - (1 - math.exp(-4.5))) < 0.006


def test_kale_divergence_two_gaussians():
    # KALE over an RKHS ball is a lower bound of KL(P ‖ Q) = mu²/2 that approaches it for a small
    # penalty; for P = Q it is 0 up to the held-out noise. Bounds: over 10 other seeds the estimate
    # had mean 0.469, sd 0.045 (P ≠ Q) and mean -0.004, sd 0.004 (P = Q) at n = 2000; 5 sd.
    g = torch.Generator().manual_seed(0)
    p = torch.randn(2000, 1, generator=g, dtype=torch.float64)
    q = torch.randn(2000, 1, generator=g, dtype=torch.float64) + 1.0
    same = torch.randn(2000, 1, generator=g, dtype=torch.float64)
    estimate = metrics.kale_divergence(p, q, generator=torch.Generator().manual_seed(1))
    assert 0.469 - 0.225 < estimate < 0.469 + 0.225, estimate
    assert abs(metrics.kale_divergence(p, same, generator=torch.Generator().manual_seed(1)) + 0.004) < 0.02
    # a larger penalty shrinks the ball: a smaller value; the same generator state: the same value
    assert metrics.kale_divergence(p, q, penalty=1.0) < estimate
    assert metrics.kale_divergence(p, q, generator=torch.Generator().manual_seed(1)) == estimate
    # high-dimensional features with few samples stay finite (the critic's norm is penalised)
    big_p, big_q = torch.randn(100, 64, generator=g) * 5, torch.randn(100, 64, generator=g)
    assert math.isfinite(metrics.kale_divergence(big_p, big_q))
    with pytest.raises(ValueError, match="same number of features"):
        metrics.kale_divergence(p, torch.randn(10, 2))
    with pytest.raises(ValueError, match="penalty"):
        metrics.kale_divergence(p, q, penalty=0.0)


def test_frechet_distance_closed_form_and_scipy():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 4, generator=g, dtype=torch.float64) @ torch.randn(4, 4, generator=g, dtype=torch.float64)
    y = torch.randn(400, 4, generator=g, dtype=torch.float64) * 2 + 1
    # the textbook formula with scipy's matrix square root, on the same samples
    mx, my = x.mean(0).numpy(), y.mean(0).numpy()
    cx, cy = torch.cov(x.T).numpy(), torch.cov(y.T).numpy()
    root = scipy_linalg.sqrtm(cx @ cy).real
    expected = float(((mx - my) ** 2).sum() + (cx + cy - 2 * root).trace())
    assert metrics.frechet_distance(x, y) == pytest.approx(expected, rel=1e-8)
    assert metrics.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    # Gaussians N(0, I) and N(1, 4I) in d = 3: 3·1 + 3·(1 + 4 − 2·2) = 6, within sampling error
    a = torch.randn(200_000, 3, generator=g, dtype=torch.float64)
    b = torch.randn(200_000, 3, generator=g, dtype=torch.float64) * 2 + 1
    assert metrics.frechet_distance(a, b) == pytest.approx(6.0, abs=0.1)
    with pytest.raises(ValueError, match="same number of features"):
        metrics.frechet_distance(x, y[:, :3])
