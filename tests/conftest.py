"""Shared test helpers: tolerance table, Monte Carlo moment checks, exact stationary laws.

Statistical tests compare estimates over many *independent* chains against the truth with a
bound of Z standard errors. Z = 5 gives a two-sided false-failure probability of 5.7e-7
per check; the suite makes a few hundred such checks, so a spurious failure has probability
below 1e-3 per full run. Seeds are fixed for reproducibility and never tuned.
"""

from __future__ import annotations

import os

import torch

# The Triton kernels run on CPU tensors through Triton's interpreter, which reads TRITON_INTERPRET
# when @triton.jit runs (pysampler imports its kernels lazily, after this). With a GPU the tests
# run the compiled kernels on CUDA instead. Either way backend="triton" is tested.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

#: Where the Triton kernels run in this test session.
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

Z = 5.0

# dtype -> (atol, rtol) for one op, two implementations, noise included. The normals are float32
# Box-Muller values on every backend; libm's logf/cosf and torch's vectorised log/cos differ by an
# ulp or two, so a float64 result agrees only up to float32 ulps of the noise term.
# Half-precision storage (float32 arithmetic): results agree to one ulp of the storage dtype, since
# float32 values an ulp apart can round to neighbouring half values.
TOLERANCES = {
    torch.float32: (2e-6, 2e-6),
    torch.float64: (1e-6, 1e-7),
    torch.bfloat16: (1e-5, 2.0**-7),
    torch.float16: (1e-5, 2.0**-10),
}
# dtype -> (atol, rtol) without noise: the same operations in the same order.
TOLERANCES_NO_NOISE = {
    torch.float32: (1e-6, 1e-6),
    torch.float64: (1e-12, 1e-12),
    torch.bfloat16: (1e-6, 2.0**-7),
    torch.float16: (1e-6, 2.0**-10),
}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, table: dict = TOLERANCES) -> None:
    atol, rtol = table[expected.dtype]
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)


def assert_close_compiled_noise(actual, expected, tol=1e-5, rare=1e-3, loose=1e-3):
    """Noise-bearing results of compiled Triton kernels against the reference on a GPU.

    Compiled Triton evaluates tl.randn's log and cos through libdevice (accurate), but its sqrt,
    exp and float32 division are the GPU's approximate instructions and it contracts a·b + c into
    FMAs, so results sit a float32 ulp or so from torch's; Box-Muller's radius sqrt(-2 log u)
    amplifies such errors for the rare draws with u near 1, and a float32 ulp can flip the rounding
    of a half-precision store. All elements must agree to ``loose`` (or one storage ulp, whichever
    is larger); all but a fraction ``rare`` to ``tol`` (or the conftest table). A wrong index or
    formula breaks most elements, so the check keeps its power. The interpreter (NumPy arithmetic)
    is held to the conftest table.
    """
    lo, rel = TOLERANCES[expected.dtype]
    a, e = actual.double(), expected.double()
    err = (a - e).abs()
    bound = max(tol, lo) + max(tol, rel) * e.abs()
    assert bool((err <= max(loose, lo) + max(loose, rel) * e.abs()).all()), f"max error {err.max():.3g}"
    frac = float((err > bound).double().mean())
    assert frac <= rare, f"{frac:.2%} of elements beyond {tol:g}: max error {err.max():.3g}"


def assert_gaussian_moments(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, z: float = Z) -> None:
    """Check sample mean and covariance of iid rows x (n, d) against a Gaussian N(mean, cov).

    SE of a mean entry: sqrt(Σ_ii / n). SE of a covariance entry for Gaussian data:
    sqrt((Σ_ii Σ_jj + Σ_ij²) / n).
    """
    x = x.detach().to(torch.float64)
    mean = mean.to(torch.float64)
    cov = cov.to(torch.float64)
    n = x.shape[0]
    m = x.mean(0)
    se_mean = (torch.diagonal(cov) / n).sqrt()
    dev = (m - mean).abs() / se_mean
    assert bool((dev < z).all()), f"mean {m.tolist()} vs {mean.tolist()}: {dev.max():.2f} standard errors off"
    c = torch.cov(x.T).reshape(cov.shape)
    var = torch.diagonal(cov)
    se_cov = ((var[:, None] * var[None, :] + cov.square()) / n).sqrt()
    dev = (c - cov).abs() / se_cov
    assert bool((dev < z).all()), f"covariance\n{c}\nvs\n{cov}\n: {dev.max():.2f} standard errors off"


def stationary_covariance(transition: torch.Tensor, noise_cov: torch.Tensor) -> torch.Tensor:
    """Σ solving Σ = A Σ Aᵀ + Q (discrete Lyapunov) by doubling: Σ = Σ_k A^k Q A^kᵀ."""
    a, s = transition.clone(), noise_cov.clone()
    for _ in range(64):
        s = s + a @ s @ a.T
        a = a @ a
    return s


def ula_stationary_covariance(precision: torch.Tensor, h: float, noise_scale: float = 1.0) -> torch.Tensor:
    """Exact stationary covariance of ULA on U = ½ xᵀPx: x' = (I − hP)x + √(2h)·s·ξ."""
    d = precision.shape[0]
    eye = torch.eye(d, dtype=torch.float64)
    return stationary_covariance(eye - h * precision, 2 * h * noise_scale**2 * eye)


def obabo_stationary_covariance(precision: torch.Tensor, h: float, friction: float) -> torch.Tensor:
    """Exact stationary covariance of (x, v) under one OBABO step on U = ½ xᵀPx; (2d, 2d)."""
    d = precision.shape[0]
    eye, zero = torch.eye(d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64)
    a = torch.exp(torch.tensor(-0.5 * friction * h, dtype=torch.float64))
    s = torch.sqrt(-torch.expm1(torch.tensor(-friction * h, dtype=torch.float64)))

    def block(xx, xv, vx, vv):
        return torch.cat([torch.cat([xx, xv], 1), torch.cat([vx, vv], 1)], 0)

    o = block(eye, zero, zero, a * eye)
    b = block(eye, zero, -0.5 * h * precision, eye)
    drift = block(eye, h * eye, zero, eye)
    noise = block(zero, zero, zero, s * eye)  # O-step noise enters v only
    first = b @ drift @ b @ o  # map applied after the first O's noise: B A B O
    m = o @ first
    # z' = m z + (o B A B) n1 + n2, with n1, n2 the two O-step noises.
    q = (o @ b @ drift @ b) @ noise @ noise.T @ (o @ b @ drift @ b).T + noise @ noise.T
    return stationary_covariance(m, q)


def assert_same_state(a: dict, b: dict) -> None:
    """Two checkpoint dicts equal entry by entry, tensors bit for bit (nested dicts and lists too)."""
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        elif isinstance(a[key], dict):
            assert_same_state(a[key], b[key])
        elif isinstance(a[key], list):
            assert len(a[key]) == len(b[key]), key
            for u, v in zip(a[key], b[key], strict=True):
                if isinstance(u, dict):
                    assert_same_state(u, v)
                elif isinstance(u, torch.Tensor):
                    assert torch.equal(u, v), key
                else:
                    assert u == v, key
        else:
            assert a[key] == b[key], key
