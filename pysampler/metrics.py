"""Sample-quality metrics: mode coverage for toy targets with known modes, MMD with a permutation
test, the KALE bound of a (generalised) energy-based model and the KALE divergence between two
samples, the Fréchet distance between feature distributions, and the mode histogram of
StackedMNIST-like data (each channel one classified digit)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "ModeCoverage", "mode_coverage", "median_bandwidth", "mmd2", "MMDTest", "mmd_test", "kale", "kale_divergence",
    "frechet_distance", "ModeHistogram", "stacked_modes",
]


@dataclass
class ModeCoverage:
    """counts: (K,) samples within ``radius``·σ of each mode; covered: (K,) bool;
    n_covered: modes covered; fraction_near: fraction of all samples within radius·σ of some mode."""

    counts: torch.Tensor
    covered: torch.Tensor
    n_covered: int
    fraction_near: float


def mode_coverage(
    samples: torch.Tensor, modes: torch.Tensor, std: float, radius: float = 2.0, min_share: float = 0.1
) -> ModeCoverage:
    """Mode coverage of samples (n, d) against K isotropic modes (K, d) of standard deviation ``std``.

    A sample is *near* a mode when its distance is below ``radius·std`` (for a 2-D Gaussian,
    radius 2 holds 1 − e⁻² ≈ 86.5% of its mass). A mode is *covered* when it has at least
    ``min_share`` of its fair share n/K of near samples (the 25-Gaussian convention of the GAN
    mode-collapse literature, e.g. Srivastava et al. 2017, with a share instead of a count).
    """
    if samples.ndim != 2 or modes.ndim != 2 or samples.shape[1] != modes.shape[1]:
        raise ValueError(f"samples (n, d) and modes (K, d) must agree in d; got {tuple(samples.shape)} and {tuple(modes.shape)}")
    if not std > 0:
        raise ValueError(f"std must be > 0; got {std}")
    x = samples.detach().to(torch.float64)
    dist = torch.cdist(x, modes.to(x))  # (n, K)
    nearest_d, nearest = dist.min(1)
    near = nearest_d < radius * std
    counts = torch.bincount(nearest[near], minlength=modes.shape[0])
    covered = counts >= max(1.0, min_share * x.shape[0] / modes.shape[0])
    return ModeCoverage(counts, covered, int(covered.sum()), float(near.double().mean()))


@dataclass
class ModeHistogram:
    """counts: (K,) samples per mode; n_covered: modes with at least one sample; kl: KL(p ‖ uniform)
    of the empirical mode distribution p = counts / n to the uniform one over the K modes."""

    counts: torch.Tensor
    n_covered: int
    kl: float


def stacked_modes(images: torch.Tensor, classify, n_classes: int = 10, batch: int = 1000) -> ModeHistogram:
    """The mode histogram of stacked images (N, C, H, W), each channel a digit (StackedMNIST: C = 3,
    1,000 modes): ``classify`` maps single-channel images (B, 1, H, W) to labels (B,) in
    [0, n_classes); the mode of an image is its channels' labels read as a base-``n_classes``
    number (channel 0 the most significant). Covered modes and KL(p ‖ uniform) as in Lin et al.
    (PacGAN, 2018) and the dissertation's Table 6.3 (a data set whose modes are uniform; the KL of a
    finite sample of n images has a positive bias of about (K - 1) / (2n) even for perfect samples).
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] < 1:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor (N, C, H, W) with N >= 1; got {got}")
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise ValueError(f"n_classes must be an int >= 2; got {n_classes!r}")
    n, channels = images.shape[:2]
    modes = torch.zeros(n, dtype=torch.int64)
    for c in range(channels):
        labels = torch.cat([torch.as_tensor(classify(b[:, c:c + 1])).reshape(-1).cpu().long() for b in images.split(batch)])
        if labels.shape[0] != n or int(labels.min()) < 0 or int(labels.max()) >= n_classes:
            raise ValueError(f"classify must return one label in [0, {n_classes}) per image; got {labels.shape[0]} labels "
                             f"in [{int(labels.min())}, {int(labels.max())}] for {n} images")
        modes = modes * n_classes + labels
    k = n_classes ** channels
    counts = torch.bincount(modes, minlength=k)
    p = counts[counts > 0].double() / n
    return ModeHistogram(counts, int((counts > 0).sum()), float((p * torch.log(p * k)).sum()))


def _as_rows(name: str, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[0] < 2:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor of at least 2 samples (n, *features); got {got}")
    return x.detach().reshape(x.shape[0], -1).to(torch.float64)


def _paired_rows(x: torch.Tensor, y: torch.Tensor, names: tuple[str, str] = ("x", "y")) -> tuple[torch.Tensor, torch.Tensor]:
    """Two samples as float64 rows (n, d) and (m, d), checked to have the same number of features d."""
    xr, yr = _as_rows(names[0], x), _as_rows(names[1], y)
    if xr.shape[1] != yr.shape[1]:
        raise ValueError(f"{names[0]} and {names[1]} must have the same number of features; got {xr.shape[1]} and {yr.shape[1]}")
    return xr, yr


def median_bandwidth(x: torch.Tensor, y: torch.Tensor) -> float:
    """The median heuristic: the median pairwise Euclidean distance in the pooled samples (Gretton et al. 2012)."""
    z = torch.cat([_as_rows("x", x), _as_rows("y", y)])
    d = torch.pdist(z)
    positive = d[d > 0]
    return float(positive.median()) if positive.numel() else 1.0


def _pooled_gram(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None) -> tuple[torch.Tensor, int, float]:
    """(Gaussian-kernel Gram matrix of the pooled samples (n + m, n + m), n, σ), σ the median
    heuristic unless given; x and y checked and flattened to rows."""
    xr, yr = _paired_rows(x, y)
    sigma = median_bandwidth(xr, yr) if bandwidth is None else float(bandwidth)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"bandwidth must be finite and > 0; got {bandwidth}")
    z = torch.cat([xr, yr])
    return torch.exp(-torch.cdist(z, z).square() / (2.0 * sigma**2)), xr.shape[0], sigma


def _mmd2_from_gram(k: torch.Tensor, in_x: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD² for the split ``in_x`` (bool over the pooled samples) of one Gram matrix;
    ``in_x`` may be (P, n + m) to evaluate P splits at once."""
    in_x = in_x.to(k.dtype)
    in_y = 1.0 - in_x
    n, m = in_x.sum(-1), in_y.sum(-1)
    diag = torch.diagonal(k)
    kxx = torch.einsum("...i,ij,...j->...", in_x, k, in_x) - (in_x * diag).sum(-1)
    kyy = torch.einsum("...i,ij,...j->...", in_y, k, in_y) - (in_y * diag).sum(-1)
    kxy = torch.einsum("...i,ij,...j->...", in_x, k, in_y)
    return kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2.0 * kxy / (n * m)


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> float:
    """Unbiased MMD² between samples x (n, ...) and y (m, ...) with a Gaussian kernel
    k(a, b) = exp(−|a − b|² / 2σ²), σ the median heuristic unless given (Gretton et al., JMLR 2012, eq. 3).
    Can be slightly negative when the distributions agree."""
    k, n, _ = _pooled_gram(x, y, bandwidth)
    return float(_mmd2_from_gram(k, torch.arange(k.shape[0]) < n))


@dataclass
class MMDTest:
    """mmd2: the unbiased statistic; p_value: of the permutation test of x ~ y; bandwidth: σ used."""

    mmd2: float
    p_value: float
    bandwidth: float


def mmd_test(
    x: torch.Tensor, y: torch.Tensor, n_permutations: int = 200, bandwidth: float | None = None,
    generator: torch.Generator | None = None,
) -> MMDTest:
    """MMD² and its permutation-test p-value, (1 + #{permuted ≥ observed}) / (1 + n_permutations):
    the pooled samples are relabelled at random ``n_permutations`` times (one Gram matrix for all)."""
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, int) or n_permutations < 1:
        raise ValueError(f"n_permutations must be an int >= 1; got {n_permutations!r}")
    k, n, sigma = _pooled_gram(x, y, bandwidth)
    total = k.shape[0]
    observed = _mmd2_from_gram(k, torch.arange(total) < n)
    perms = torch.argsort(torch.rand(n_permutations, total, generator=generator), dim=1)
    splits = torch.zeros(n_permutations, total, dtype=torch.bool)
    splits.scatter_(1, perms[:, :n], True)
    permuted = torch.cat([_mmd2_from_gram(k, chunk) for chunk in splits.split(64)])
    p = (1.0 + float((permuted >= observed).sum())) / (1.0 + n_permutations)
    return MMDTest(float(observed), p, sigma)


def kale(energy_data: torch.Tensor, energy_base: torch.Tensor, log_partition: float | torch.Tensor | None = None) -> float:
    """The KALE lower bound F(P, Q; E + c) = 1 − E_P[E + c] − E_Q[exp(−E − c)] of a GEBM
    (Arbel, Zhou & Gretton, ICLR 2021; ../shared/seeds/002, "KALE and the energy function").

    energy_data: (n,) E at samples of the data P; energy_base: (m,) E at samples of the base
    generator Q. ``log_partition`` c: the model's learned scalar, or None for the optimal
    c = log E_Q[exp(−E)], where the bound is −E_P[E] − log E_Q[exp(−E)]. With E = −log dP/dQ it
    equals KL(P ‖ Q); it is 0 for E constant.
    """
    ep, eq = (t.detach().reshape(-1).to(torch.float64) for t in (energy_data, energy_base))
    if ep.numel() < 1 or eq.numel() < 1:
        raise ValueError("energy_data and energy_base must hold at least one value each")
    if log_partition is None:
        c = float(torch.logsumexp(-eq, 0)) - math.log(eq.numel())
    else:
        c = float(log_partition)
    return float(1.0 - (ep + c).mean() - torch.exp(-eq - c).mean())


def kale_divergence(
    p: torch.Tensor, q: torch.Tensor, penalty: float = 1e-3, n_features: int = 512, bandwidth: float | None = None,
    generator: torch.Generator | None = None,
) -> float:
    """An estimate of KALE(P, Q) = sup_f 1 − E_P[f] − E_Q[exp(−f)] − penalty·‖f‖²_H between samples
    p (n, ...) and q (m, ...), over an RKHS ball: the "KALE smoothie" of the GEBM slides
    (../shared/seeds/001, "The KALE divergence": H an RKHS, ‖w‖²_H penalised).

    f(x) = wᵀφ(x) + b with φ ``n_features`` random Fourier features of the Gaussian kernel
    (Rahimi & Recht 2007; bandwidth the median heuristic unless given), so |f − b| ≤ ‖w‖ and the
    estimate cannot blow up in high dimensions. The concave objective is maximised exactly (L-BFGS,
    float64) on the first half of each sample and the bound is reported on the second halves: an
    honest lower bound of the penalised divergence, ≈ 0 when P = Q (slightly negative from noise),
    approaching KL(P ‖ Q) as the penalty shrinks and the samples grow. ``generator`` draws the
    split and the features: the same generator state gives the same value.
    """
    pr, qr = _paired_rows(p, q, ("p", "q"))
    if pr.shape[0] < 4 or qr.shape[0] < 4:
        raise ValueError("p and q need at least 4 samples each (half to fit the critic, half to evaluate it)")
    if not penalty > 0:
        raise ValueError(f"penalty must be > 0; got {penalty}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    pr, qr = pr[torch.randperm(len(pr), generator=g)], qr[torch.randperm(len(qr), generator=g)]
    sigma = median_bandwidth(pr, qr) if bandwidth is None else float(bandwidth)
    omega = torch.randn(pr.shape[1], n_features, generator=g, dtype=torch.float64) / sigma
    phase = 2.0 * math.pi * torch.rand(n_features, generator=g, dtype=torch.float64)

    def features(x: torch.Tensor) -> torch.Tensor:  # (n, n_features), E[φ(x)ᵀφ(y)] = k(x, y)
        return math.sqrt(2.0 / n_features) * torch.cos(x @ omega + phase)

    (p_fit, p_eval), (q_fit, q_eval) = [features(x).tensor_split(2) for x in (pr, qr)]
    w = torch.zeros(n_features + 1, dtype=torch.float64, requires_grad=True)  # (w, b)

    def f(phi: torch.Tensor) -> torch.Tensor:
        return phi @ w[:-1] + w[-1]

    opt = torch.optim.LBFGS([w], max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = f(p_fit).mean() + torch.exp(-f(q_fit)).mean() - 1.0 + penalty * w[:-1].square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return float(1.0 - f(p_eval).mean() - torch.exp(-f(q_eval)).mean())


def frechet_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to features x (n, d) and y (m, d):
    |μx − μy|² + tr(Σx + Σy − 2 (Σx^½ Σy Σx^½)^½) (Dowson & Landau 1982; the FID of Heusel et al.
    2017 when the features are Inception's). Computed in float64 through symmetric
    eigendecompositions, so it is exact up to round-off even for singular covariances."""
    xr, yr = _paired_rows(x, y)

    def sqrt_psd(a: torch.Tensor) -> torch.Tensor:
        w, v = torch.linalg.eigh((a + a.T) / 2)
        return (v * w.clamp_min(0).sqrt()) @ v.T

    mx, my = xr.mean(0), yr.mean(0)
    cx, cy = torch.cov(xr.T).reshape(xr.shape[1], -1), torch.cov(yr.T).reshape(yr.shape[1], -1)
    root_x = sqrt_psd(cx)
    cross = torch.linalg.eigvalsh(root_x @ cy @ root_x).clamp_min(0).sqrt().sum()
    return float((mx - my).square().sum() + torch.trace(cx) + torch.trace(cy) - 2.0 * cross)
