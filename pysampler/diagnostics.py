r"""MCMC diagnostics over a recorded trace: acceptance rate, split R-hat, effective sample size.

A trace has shape ``(T, N, *event)``: ``T`` draws from each of ``N`` chains. Every function takes
torch tensors, computes in float64 on the trace's device and returns float64 tensors of shape
``(*event,)`` (one value per coordinate) unless stated otherwise.

Sources
-------
* Gelman, Carlin, Stern, Dunson, Vehtari, Rubin, *Bayesian Data Analysis*, 3rd ed. (BDA3),
  §11.4 (split R-hat: potential scale reduction computed on chains split in halves) and §11.5
  (effective sample size from the multi-chain variance estimate and autocorrelations).
* Vehtari, Gelman, Simpson, Carpenter, Bürkner (2021), "Rank-normalization, folding, and
  localization: an improved R-hat for assessing convergence of MCMC", Bayesian Analysis 16(2):
  rank normalisation ``z = Phi^{-1}((r - 3/8) / (S + 1/4))`` of the pooled draws, folded R-hat
  on ``|theta - median|``, R-hat = max(bulk, folded), bulk ESS.
* Geyer (1992), "Practical Markov chain Monte Carlo", Statistical Science 7(4): the initial
  positive sequence and initial monotone sequence estimators that truncate the autocorrelation sum.
  The truncation follows Stan's ``compute_effective_sample_size`` (and ArviZ's ``_ess``) step for
  step, including its cap ``tau >= 1 / log10(S)``, i.e. ``ESS <= S * log10(S)`` for ``S = T * N``
  pooled draws (antithetic chains can make the estimate exceed ``S``; the cap keeps it finite).

Defaults follow Vehtari et al. (2021) and ArviZ: ``split_rhat`` and ``effective_sample_size`` are
rank-normalised (``rank_normalized=True``); pass ``rank_normalized=False`` for the classic BDA3
split R-hat and the plain split-chain ESS of the draws themselves. Chains are split in halves;
for odd ``T`` the middle draw is dropped (as in ArviZ).

Coordinates whose pooled draws are all equal have undefined diagnostics and return NaN.
Bad arguments raise ``TypeError`` (not a tensor) or ``ValueError`` (wrong shape, dtype, too few
draws, non-finite values), naming the argument.
"""

from __future__ import annotations

import math

import torch

__all__ = ["acceptance_rate", "effective_sample_size", "split_rhat", "summary"]

# Upper bound on (coordinates x chains x draws) handled in one vectorised block; bounds the
# memory of the FFT buffers (complex128, twice the draws) to a few hundred MB.
_BLOCK_ELEMS = 1 << 23


def _check_trace(trace: torch.Tensor, name: str = "trace") -> None:
    if not isinstance(trace, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (T, N, *event); got {type(trace).__name__}")
    if not trace.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating tensor; got {trace.dtype}")
    if trace.dim() < 2:
        raise ValueError(f"{name} must have shape (T, N, *event) with at least 2 dims; got {tuple(trace.shape)}")
    if trace.shape[0] < 4:
        raise ValueError(f"{name} must have at least 4 draws per chain (T = shape[0] >= 4); got T = {trace.shape[0]}")
    if trace.shape[1] < 1:
        raise ValueError(f"{name} must have at least one chain (N = shape[1] >= 1); got N = 0")
    bad = int((~torch.isfinite(trace)).sum())
    if bad:
        raise ValueError(f"{name} must be finite; {bad} entries are NaN or infinite")


def _chains(trace: torch.Tensor) -> torch.Tensor:
    """(T, N, *event) -> (C, N, T) float64, coordinates first."""
    T, N = trace.shape[:2]
    C = math.prod(trace.shape[2:])
    return trace.to(torch.float64).reshape(T, N, C).permute(2, 1, 0)


def _split(x: torch.Tensor) -> torch.Tensor:
    """(C, N, T) -> (C, 2N, T // 2): each chain split in halves (middle draw dropped for odd T)."""
    T = x.shape[-1]
    half = T // 2
    return torch.cat([x[..., :half], x[..., T - half :]], dim=1)


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (1..S, ties averaged) along the last dim of a (C, S) tensor."""
    s, _ = torch.sort(x, dim=-1)
    below = torch.searchsorted(s, x.contiguous(), right=False)
    upto = torch.searchsorted(s, x.contiguous(), right=True)
    return (below + upto + 1).to(torch.float64) / 2.0


def _rank_normalize(x: torch.Tensor) -> torch.Tensor:
    """Rank-normalise (C, M, n) draws over the pooled M * n draws of each coordinate (Vehtari 2021)."""
    C, M, n = x.shape
    S = M * n
    r = _ranks(x.reshape(C, S))
    return torch.special.ndtri((r - 0.375) / (S + 0.25)).reshape(C, M, n)


def _fold(x: torch.Tensor) -> torch.Tensor:
    """|x - median| with the median of the pooled draws (average of the middle two for even S)."""
    C, M, n = x.shape
    S = M * n
    s, _ = torch.sort(x.reshape(C, S), dim=-1)
    med = s[:, (S - 1) // 2] if S % 2 else 0.5 * (s[:, S // 2 - 1] + s[:, S // 2])
    return (x - med[:, None, None]).abs()


def _rhat_classic(x: torch.Tensor) -> torch.Tensor:
    """Potential scale reduction (BDA3 eq. 11.1-11.4) of (C, M, n) chains -> (C,)."""
    n = x.shape[-1]
    chain_mean = x.mean(dim=-1)
    W = x.var(dim=-1, correction=1).mean(dim=-1)
    B_over_n = chain_mean.var(dim=-1, correction=1)
    var_plus = (n - 1) / n * W + B_over_n
    return torch.sqrt(var_plus / W)


def _autocov(x: torch.Tensor) -> torch.Tensor:
    """Biased autocovariance (divided by n) along the last dim of (..., n), lags 0..n-1, via FFT."""
    n = x.shape[-1]
    xc = x - x.mean(dim=-1, keepdim=True)
    f = torch.fft.rfft(xc, n=2 * n, dim=-1)
    return torch.fft.irfft(f.real.square() + f.imag.square(), n=2 * n, dim=-1)[..., :n] / n


def _ess_block(x: torch.Tensor) -> torch.Tensor:
    """Multi-chain ESS (Stan / BDA3 §11.5 with Geyer's truncation) of (C, M, n) chains -> (C,)."""
    C, M, n = x.shape
    acov = _autocov(x)  # (C, M, n)
    chain_mean = x.mean(dim=-1)
    W = acov[..., 0].mean(dim=-1) * n / (n - 1)  # mean within-chain variance
    var_plus = W * (n - 1) / n
    if M > 1:
        var_plus = var_plus + chain_mean.var(dim=-1, correction=1)
    rho = 1.0 - (W[:, None] - acov.mean(dim=1)) / var_plus[:, None]  # (C, n)
    rho[:, 0] = 1.0

    k_max = max((n - 3) // 2, 0)  # last pair (rho[2k], rho[2k+1]) Stan's loop can reach
    pairs = rho[:, 0 : 2 * k_max + 2].reshape(C, k_max + 1, 2).sum(dim=-1)  # P_0 .. P_kmax
    idx = torch.arange(k_max + 1, device=x.device)
    # Initial positive sequence: stop at the first pair whose sum is <= 0, or at the last pair.
    K = torch.where(pairs <= 0, idx, k_max).min(dim=-1).values  # (C,)
    # Initial monotone sequence: running minimum of the pair sums before the stopping pair.
    mono = torch.cummin(pairs, dim=-1).values
    head = (mono * (idx[None, :] < K[:, None])).sum(dim=-1)
    # Stan adds the even autocorrelation of the stopping pair: kept as is when that pair was
    # accepted (sum >= 0), and only if positive when it was rejected.
    last_even = rho.gather(1, (2 * K)[:, None]).squeeze(1)
    p_K = pairs.gather(1, K[:, None]).squeeze(1)
    tail = torch.where(p_K >= 0, last_even, last_even.clamp_min(0.0))
    S = M * n
    tau = (-1.0 + 2.0 * head + tail).clamp_min(1.0 / math.log10(S))
    ess = S / tau
    return torch.where(var_plus > 0, ess, torch.full_like(ess, float("nan")))


def _blocked(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply fn to (C, M, n) in blocks of coordinates, bounding the memory of the FFT buffers."""
    C, M, n = x.shape
    if C == 0:
        return torch.empty(0, dtype=torch.float64, device=x.device)
    step = max(1, _BLOCK_ELEMS // max(1, M * n))
    return torch.cat([fn(x[i : i + step]) for i in range(0, C, step)])


def acceptance_rate(accepted: torch.Tensor) -> torch.Tensor:
    """Per-chain acceptance rate.

    accepted: (T, N) bool (accept / reject), or integer 0/1, or floating acceptance
    probabilities in [0, 1]. Returns (N,) float64 means over the T steps.
    """
    if not isinstance(accepted, torch.Tensor):
        raise TypeError(f"accepted must be a torch.Tensor of shape (T, N); got {type(accepted).__name__}")
    if accepted.dim() != 2 or accepted.shape[0] < 1:
        raise ValueError(f"accepted must have shape (T, N) with T >= 1; got {tuple(accepted.shape)}")
    if accepted.dtype.is_complex:
        raise ValueError(f"accepted must be bool, integer or floating; got {accepted.dtype}")
    a = accepted.to(torch.float64)
    if accepted.dtype != torch.bool:
        bad = int(((a < 0) | (a > 1) | torch.isnan(a)).sum())
        if bad:
            raise ValueError(f"accepted must hold 0/1 flags or probabilities in [0, 1]; {bad} entries are outside")
    return a.mean(dim=0)


def split_rhat(trace: torch.Tensor, rank_normalized: bool = True) -> torch.Tensor:
    """Split R-hat per coordinate: (T, N, *event) -> (*event,) float64.

    Each chain is split in halves and the potential scale reduction
    ``sqrt(((n-1)/n W + B/n) / W)`` is computed on the 2N half-chains (BDA3 §11.4). With
    ``rank_normalized=True`` (default; Vehtari et al. 2021) it is the maximum of the bulk R-hat
    (on rank-normalised draws) and the folded R-hat (on rank-normalised ``|theta - median|``).
    Values near 1 (Vehtari et al. recommend < 1.01) indicate mixing.
    """
    _check_trace(trace)
    x = _chains(trace)
    if rank_normalized:
        # The folding median is over all T * N draws (before splitting), as in ArviZ.

        def fn(b: torch.Tensor) -> torch.Tensor:
            bulk = _rhat_classic(_rank_normalize(_split(b)))
            tail = _rhat_classic(_rank_normalize(_split(_fold(b))))
            return torch.maximum(bulk, tail)

    else:

        def fn(b: torch.Tensor) -> torch.Tensor:
            return _rhat_classic(_split(b))

    return _blocked(fn, x).reshape(trace.shape[2:])


def effective_sample_size(trace: torch.Tensor, rank_normalized: bool = True) -> torch.Tensor:
    """Multi-chain effective sample size per coordinate: (T, N, *event) -> (*event,) float64.

    Chains are split in halves; per-chain autocovariances (FFT) are combined with the
    between/within-chain variance estimate ``var+`` into ``rho_t = 1 - (W - mean_chains acov_t) /
    var+`` (BDA3 §11.5), the sum of autocorrelations is truncated with Geyer's initial positive
    and initial monotone sequences (Stan's algorithm), and ``ESS = S / tau`` with
    ``tau >= 1 / log10(S)`` (so ``ESS <= S log10 S``, Stan's and ArviZ's cap).
    ``rank_normalized=True`` (default) gives the bulk ESS of Vehtari et al. (2021), computed on
    rank-normalised draws; ``False`` gives the ESS of the raw draws (the one that sets the Monte
    Carlo error of the mean).
    """
    _check_trace(trace)
    x = _chains(trace)

    def fn(b: torch.Tensor) -> torch.Tensor:
        b = _split(b)
        return _ess_block(_rank_normalize(b) if rank_normalized else b)

    return _blocked(fn, x).reshape(trace.shape[2:])


def summary(trace: torch.Tensor, accepted: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Posterior summary of a trace (T, N, *event).

    Returns a dict of float64 tensors: ``mean`` and ``sd`` (pooled over all T * N draws, sd with
    ddof 1) of shape (*event,), ``ess`` (bulk, rank-normalised), ``ess_mean`` (raw draws; with
    ``sd`` it gives the Monte Carlo standard error of the mean, ``mcse_mean = sd / sqrt(ess_mean)``),
    ``rhat`` (rank-normalised split R-hat), and, when ``accepted`` (T, N) is given,
    ``acceptance`` (N,) per chain.
    """
    _check_trace(trace)
    x = trace.to(torch.float64)
    pooled = x.reshape((-1,) + tuple(trace.shape[2:]))
    out = {
        "mean": pooled.mean(dim=0),
        "sd": pooled.std(dim=0, correction=1),
        "ess": effective_sample_size(trace, rank_normalized=True),
        "ess_mean": effective_sample_size(trace, rank_normalized=False),
        "rhat": split_rhat(trace, rank_normalized=True),
    }
    out["mcse_mean"] = out["sd"] / torch.sqrt(out["ess_mean"])
    if accepted is not None:
        rate = acceptance_rate(accepted)
        if rate.shape[0] != trace.shape[1]:
            raise ValueError(
                f"accepted must have shape (T, N) with N = {trace.shape[1]} chains as in trace; "
                f"got {tuple(accepted.shape)}"
            )
        out["acceptance"] = rate
    return out
