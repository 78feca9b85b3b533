"""Tests for pysampler.diagnostics: ESS, split R-hat, acceptance, summary.

Statistical checks use draws from a fixed torch.Generator and generous bounds (stated per test);
exact checks compare against an independent, loop-by-loop NumPy port of the Stan / BDA3 formulas.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import scipy.special
import scipy.stats
import torch

from pysampler import diagnostics

# --------------------------------------------------------------------------------------------
# Independent NumPy reference: one coordinate at a time, direct-sum autocovariances (no FFT),
# Stan's while loops written out literally, scipy's rankdata / ndtri for rank normalisation.
# --------------------------------------------------------------------------------------------


def _np_split(chains: np.ndarray) -> np.ndarray:
    """(N, T) -> (2N, T // 2), middle draw dropped for odd T."""
    T = chains.shape[1]
    half = T // 2
    return np.concatenate([chains[:, :half], chains[:, T - half :]], axis=0)


def _np_z_scale(chains: np.ndarray) -> np.ndarray:
    r = scipy.stats.rankdata(chains, method="average").reshape(chains.shape)
    return scipy.special.ndtri((r - 0.375) / (chains.size + 0.25))


def _np_rhat(chains: np.ndarray) -> float:
    """BDA3 eq. 11.1-11.4 on (M, n) chains."""
    m, n = chains.shape
    means = chains.mean(axis=1)
    B = n / (m - 1) * np.sum((means - means.mean()) ** 2)
    W = np.mean([np.sum((c - c.mean()) ** 2) / (n - 1) for c in chains])
    var_plus = (n - 1) / n * W + B / n
    return math.sqrt(var_plus / W)


def _np_rhat_rank(chains: np.ndarray) -> float:
    bulk = _np_rhat(_np_z_scale(_np_split(chains)))
    folded = np.abs(chains - np.median(chains))
    tail = _np_rhat(_np_z_scale(_np_split(folded)))
    return max(bulk, tail)


def _np_ess(chains: np.ndarray) -> float:
    """Stan's compute_effective_sample_size on (M, n) chains, written as in the Stan manual."""
    m, n = chains.shape
    acov = np.empty((m, n))
    for j in range(m):
        xc = chains[j] - chains[j].mean()
        for t in range(n):
            acov[j, t] = np.dot(xc[: n - t], xc[t:]) / n
    chain_mean = chains.mean(axis=1)
    mean_var = acov[:, 0].mean() * n / (n - 1)
    var_plus = mean_var * (n - 1) / n
    if m > 1:
        var_plus += np.var(chain_mean, ddof=1)
    rho_t = np.zeros(n)
    rho_even = 1.0
    rho_t[0] = rho_even
    rho_odd = 1.0 - (mean_var - acov[:, 1].mean()) / var_plus
    rho_t[1] = rho_odd
    t = 1
    while t < n - 3 and rho_even + rho_odd > 0.0:
        rho_even = 1.0 - (mean_var - acov[:, t + 1].mean()) / var_plus
        rho_odd = 1.0 - (mean_var - acov[:, t + 2].mean()) / var_plus
        if rho_even + rho_odd >= 0:
            rho_t[t + 1] = rho_even
            rho_t[t + 2] = rho_odd
        t += 2
    max_t = t - 2
    if rho_even > 0:
        rho_t[max_t + 1] = rho_even
    t = 1
    while t <= max_t - 2:
        if rho_t[t + 1] + rho_t[t + 2] > rho_t[t - 1] + rho_t[t]:
            rho_t[t + 1] = (rho_t[t - 1] + rho_t[t]) / 2.0
            rho_t[t + 2] = rho_t[t + 1]
        t += 2
    S = m * n
    tau = -1.0 + 2.0 * np.sum(rho_t[: max_t + 1]) + np.sum(rho_t[max_t + 1 : max_t + 2])
    tau = max(tau, 1.0 / np.log10(S))
    return S / tau


def _np_reference(trace: np.ndarray, fn) -> np.ndarray:
    """Apply fn((N, T) chains) to every coordinate of a (T, N, *event) trace."""
    T, N = trace.shape[:2]
    event = trace.shape[2:]
    flat = trace.reshape(T, N, -1)
    return np.array([fn(flat[:, :, c].T) for c in range(flat.shape[2])]).reshape(event)


# --------------------------------------------------------------------------------------------
# Trace generators (fixed torch.Generator seeds; never tuned).
# --------------------------------------------------------------------------------------------


def _iid(T, N, *event, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((T, N, *event), generator=g, dtype=torch.float64)


def _ar1(T, N, rho, *event, seed=0):
    """Stationary AR(1) chains x_t = rho x_{t-1} + e_t, e_t ~ N(0, 1), along dim 0."""
    g = torch.Generator().manual_seed(seed)
    e = torch.randn((T, N, *event), generator=g, dtype=torch.float64).numpy()
    e[0] /= math.sqrt(1.0 - rho * rho)  # start in the stationary law N(0, 1 / (1 - rho^2))
    x = scipy.signal.lfilter([1.0], [1.0, -rho], e, axis=0)
    return torch.from_numpy(np.ascontiguousarray(x))


# --------------------------------------------------------------------------------------------
# Statistical behaviour
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rank_normalized", [True, False])
def test_iid_draws_ess_near_total_and_rhat_near_one(rank_normalized):
    T, N = 1000, 8
    trace = _iid(T, N, 3, seed=1)
    ess = diagnostics.effective_sample_size(trace, rank_normalized=rank_normalized)
    rhat = diagnostics.split_rhat(trace, rank_normalized=rank_normalized)
    assert ess.shape == (3,) and rhat.shape == (3,)
    assert ess.dtype == torch.float64
    # For iid draws the ESS estimate has a relative sd of a few percent at S = 8000; 30% is
    # a bound far in the tail, and R-hat fluctuates around 1 by ~1e-3.
    assert torch.all((ess - T * N).abs() < 0.3 * T * N), ess
    assert torch.all(rhat < 1.01), rhat
    assert torch.all(rhat > 0.99), rhat


@pytest.mark.parametrize("rank_normalized", [True, False])
def test_ar1_ess_matches_theory(rank_normalized):
    T, N, rho = 4000, 16, 0.9
    trace = _ar1(T, N, rho, 2, seed=2)
    ess = diagnostics.effective_sample_size(trace, rank_normalized=rank_normalized)
    truth = T * N * (1 - rho) / (1 + rho)  # integrated autocorrelation time (1 + rho) / (1 - rho)
    # The relative sd of the ESS estimate for this chain is ~5%; 25% is a generous bound.
    assert torch.all((ess / truth - 1).abs() < 0.25), (ess, truth)
    assert torch.all(diagnostics.split_rhat(trace, rank_normalized=rank_normalized) < 1.01)


@pytest.mark.parametrize("rank_normalized", [True, False])
def test_chains_stuck_at_different_means_give_large_rhat(rank_normalized):
    trace = _iid(500, 4, seed=3)
    trace = trace + torch.tensor([0.0, 0.0, 3.0, 3.0], dtype=torch.float64)
    rhat = diagnostics.split_rhat(trace, rank_normalized=rank_normalized)
    assert rhat.shape == ()
    assert rhat > 1.5
    assert diagnostics.effective_sample_size(trace, rank_normalized=rank_normalized) < 0.1 * 2000


def test_folded_rhat_detects_scale_differences():
    """Chains with equal means but different scales: classic split R-hat misses it, the
    rank-normalised folded R-hat (Vehtari et al. 2021, §4.2) catches it."""
    trace = _iid(1000, 4, seed=4) * torch.tensor([1.0, 1.0, 4.0, 4.0], dtype=torch.float64)
    assert diagnostics.split_rhat(trace, rank_normalized=False) < 1.05
    assert diagnostics.split_rhat(trace, rank_normalized=True) > 1.1


def test_trending_chain_detected_by_split():
    """Split R-hat sees a drift within one chain even when all chains agree (BDA3 §11.4)."""
    T, N = 400, 4
    drift = torch.linspace(-3.0, 3.0, T, dtype=torch.float64)[:, None]
    trace = _iid(T, N, seed=5) + drift
    assert diagnostics.split_rhat(trace, rank_normalized=False) > 1.5


def test_antithetic_chain_ess_is_capped():
    """ESS <= S log10 S (Stan's / ArviZ's cap on tau)."""
    T, N = 200, 2
    sign = torch.tensor([(-1.0) ** i for i in range(T)], dtype=torch.float64)[:, None]
    trace = sign + 1e-3 * _iid(T, N, seed=6)
    S = T * N
    for rank_normalized in (True, False):
        ess = diagnostics.effective_sample_size(trace, rank_normalized=rank_normalized)
        assert ess <= S * math.log10(S) * (1 + 1e-12)
        assert ess > S  # antithetic: more information than S independent draws


# --------------------------------------------------------------------------------------------
# Exact agreement with the NumPy reference
# --------------------------------------------------------------------------------------------

_CASES = {
    "iid": lambda: _iid(100, 4, 2, seed=10),
    "ar1": lambda: _ar1(300, 3, 0.8, 3, seed=11),
    "ar1_neg": lambda: _ar1(101, 2, -0.7, seed=12),
    "stuck": lambda: _iid(50, 4, seed=13) + torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64),
    "one_chain_odd": lambda: _ar1(77, 1, 0.5, 2, seed=14),
    "ar1_strong": lambda: _ar1(30, 2, 0.99, seed=25),  # pair sums stay positive to the last lag
    "short_T4": lambda: _iid(4, 3, 2, seed=15),
    "short_T5": lambda: _iid(5, 3, seed=16),
    "short_T9": lambda: _ar1(9, 2, 0.3, 2, seed=17),
    "ties": lambda: torch.round(2.0 * _iid(60, 3, 2, seed=18)),
    "antithetic": lambda: torch.tensor([(-1.0) ** i for i in range(40)], dtype=torch.float64)[:, None, None]
    + 0.1 * _iid(40, 2, 2, seed=19),
}


@pytest.mark.parametrize("case", sorted(_CASES))
def test_matches_numpy_reference(case):
    trace = _CASES[case]()
    x = trace.numpy()
    ess_raw = diagnostics.effective_sample_size(trace, rank_normalized=False).numpy()
    ess_bulk = diagnostics.effective_sample_size(trace, rank_normalized=True).numpy()
    rhat_raw = diagnostics.split_rhat(trace, rank_normalized=False).numpy()
    rhat_rank = diagnostics.split_rhat(trace, rank_normalized=True).numpy()
    np.testing.assert_allclose(ess_raw, _np_reference(x, lambda c: _np_ess(_np_split(c))), rtol=1e-9)
    np.testing.assert_allclose(ess_bulk, _np_reference(x, lambda c: _np_ess(_np_z_scale(_np_split(c)))), rtol=1e-9)
    np.testing.assert_allclose(rhat_raw, _np_reference(x, lambda c: _np_rhat(_np_split(c))), rtol=1e-12)
    np.testing.assert_allclose(rhat_rank, _np_reference(x, _np_rhat_rank), rtol=1e-12)


def test_blocked_evaluation_matches_single_block(monkeypatch):
    trace = _ar1(64, 3, 0.5, 5, 2, seed=20).to(torch.float32)
    full = (diagnostics.effective_sample_size(trace), diagnostics.split_rhat(trace))
    monkeypatch.setattr(diagnostics, "_BLOCK_ELEMS", 200)  # a few coordinates per block
    blocked = (diagnostics.effective_sample_size(trace), diagnostics.split_rhat(trace))
    assert full[0].shape == (5, 2) and full[0].dtype == torch.float64
    for a, b in zip(full, blocked, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


def test_noncontiguous_trace():
    trace = _ar1(80, 3, 0.5, 4, 3, seed=21)
    tt = trace.transpose(2, 3)
    assert not tt.is_contiguous()
    torch.testing.assert_close(diagnostics.effective_sample_size(tt), diagnostics.effective_sample_size(trace).T)
    torch.testing.assert_close(diagnostics.split_rhat(tt), diagnostics.split_rhat(trace).T)


def test_constant_coordinate_is_nan():
    trace = _iid(50, 3, 2, seed=22)
    trace[..., 1] = 1.5
    for rank_normalized in (True, False):
        ess = diagnostics.effective_sample_size(trace, rank_normalized=rank_normalized)
        rhat = diagnostics.split_rhat(trace, rank_normalized=rank_normalized)
        assert torch.isfinite(ess[0]) and torch.isnan(ess[1])
        assert torch.isfinite(rhat[0]) and torch.isnan(rhat[1])


def test_arviz_agreement_if_installed():
    az = pytest.importorskip("arviz")
    trace = _ar1(200, 4, 0.6, 3, seed=23)
    draws = trace.permute(1, 0, 2).numpy()  # ArviZ: (chain, draw, *shape)
    for c in range(3):
        np.testing.assert_allclose(
            diagnostics.effective_sample_size(trace)[c].item(), az.ess(draws[:, :, c], method="bulk"), rtol=1e-8
        )
        np.testing.assert_allclose(diagnostics.split_rhat(trace)[c].item(), az.rhat(draws[:, :, c]), rtol=1e-8)


# --------------------------------------------------------------------------------------------
# acceptance_rate and summary
# --------------------------------------------------------------------------------------------


def test_acceptance_rate():
    acc = torch.tensor([[True, False], [True, True], [False, False], [True, False]])
    torch.testing.assert_close(diagnostics.acceptance_rate(acc), torch.tensor([0.75, 0.25], dtype=torch.float64))
    probs = torch.tensor([[0.5, 1.0], [0.25, 0.0]], dtype=torch.float32)
    torch.testing.assert_close(diagnostics.acceptance_rate(probs), torch.tensor([0.375, 0.5], dtype=torch.float64))
    torch.testing.assert_close(
        diagnostics.acceptance_rate(acc.to(torch.int64)), torch.tensor([0.75, 0.25], dtype=torch.float64)
    )


def test_summary():
    trace = _ar1(400, 4, 0.5, 2, seed=24)
    acc = torch.ones(400, 4, dtype=torch.bool)
    s = diagnostics.summary(trace, acc)
    assert set(s) == {"mean", "sd", "ess", "ess_mean", "mcse_mean", "rhat", "acceptance"}
    for k in ("mean", "sd", "ess", "ess_mean", "mcse_mean", "rhat"):
        assert s[k].shape == (2,) and s[k].dtype == torch.float64, k
    torch.testing.assert_close(s["mean"], trace.reshape(-1, 2).mean(0))
    torch.testing.assert_close(s["sd"], trace.reshape(-1, 2).std(0))
    torch.testing.assert_close(s["ess"], diagnostics.effective_sample_size(trace))
    torch.testing.assert_close(s["rhat"], diagnostics.split_rhat(trace))
    torch.testing.assert_close(s["acceptance"], torch.ones(4, dtype=torch.float64))
    assert "acceptance" not in diagnostics.summary(trace)


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [diagnostics.split_rhat, diagnostics.effective_sample_size, diagnostics.summary])
@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(10), "at least 2 dims"),
        (torch.zeros(3, 4), "at least 4 draws"),
        (torch.zeros(10, 4, dtype=torch.int64), "floating"),
        (torch.full((10, 2), float("nan")), "finite"),
        (torch.zeros(10, 0), "at least one chain"),
    ],
)
def test_bad_trace_raises(fn, bad, match):
    with pytest.raises(ValueError, match=f"trace.*{match}"):
        fn(bad)
    with pytest.raises(TypeError, match="trace.*torch.Tensor"):
        fn(np.zeros((10, 4)))


def test_bad_accepted_raises():
    with pytest.raises(TypeError, match="accepted.*torch.Tensor"):
        diagnostics.acceptance_rate([[True, False]])
    with pytest.raises(ValueError, match="accepted.*shape"):
        diagnostics.acceptance_rate(torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="accepted.*outside"):
        diagnostics.acceptance_rate(torch.tensor([[0.5, 1.5]]))
    with pytest.raises(ValueError, match="accepted.*N = 4"):
        diagnostics.summary(_iid(10, 4, seed=0), torch.ones(10, 3, dtype=torch.bool))
