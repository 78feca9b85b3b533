"""Tests for pysampler.diffusion: VP schedule (eq. 6.14-6.15), q_sample (eq. 2.46),
posterior coefficients and posterior_sample (eq. 2.50-2.51).

Monte Carlo checks use the Philox stream at fixed seeds (never tuned) and bounds of z = 5
standard errors: each two-sided check fails by chance with probability 5.7e-7, and the 22
checks in this file (mean and variance for 3 + 8 steps) together with probability < 1.3e-5.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pysampler import diffusion, rng

Z = 5.0  # standard errors; P(|N(0,1)| > 5) = 5.7e-7 per check
STEPS = [1, 2, 4, 8, 1000]
TOL = {torch.float32: {"atol": 1e-6, "rtol": 1e-5}, torch.float64: {"atol": 1e-12, "rtol": 1e-12}}


# --------------------------------------------------------------------------------------------
# Independent float64 NumPy formulas
# --------------------------------------------------------------------------------------------


def _np_sigma2(tp, beta_min, beta_max):
    """eq. 6.14."""
    return 1.0 - np.exp(-beta_min * tp - 0.5 * (beta_max - beta_min) * tp**2)


def _np_betas(T, beta_min, beta_max):
    """eq. 6.15."""
    t = np.arange(1, T + 1, dtype=np.float64)
    return 1.0 - np.exp(-beta_min / T - 0.5 * (beta_max - beta_min) * (2 * t - 1) / T**2)


def _np_posterior(T, beta_min=0.1, beta_max=20.0):
    """Posterior coefficients from the Gaussian conditional of the joint (x_{t-1}, x_t) | x_0.

    x_{t-1} | x_0 ~ N(a x_0, v), a = sqrt(abar_{t-1}), v = 1 - abar_{t-1};
    x_t | x_{t-1} ~ N(sqrt(alpha_t) x_{t-1}, beta_t).  Then
    Cov(x_{t-1}, x_t | x_0) = sqrt(alpha_t) v, Var(x_t | x_0) = alpha_t v + beta_t, and
    E[x_{t-1} | x_t, x_0] = a x_0 + k (x_t - sqrt(alpha_t) a x_0), k = sqrt(alpha_t) v / Var(x_t | x_0),
    Var[x_{t-1} | x_t, x_0] = v - k sqrt(alpha_t) v.  Valid at t = 1 (v = 0) as well.
    """
    t = np.arange(1, T + 1, dtype=np.float64)
    ab = 1.0 - _np_sigma2(t / T, beta_min, beta_max)
    ab_prev = 1.0 - _np_sigma2((t - 1) / T, beta_min, beta_max)
    alpha = ab / ab_prev
    beta = 1.0 - alpha
    a, v = np.sqrt(ab_prev), 1.0 - ab_prev
    var_xt = alpha * v + beta
    k = np.sqrt(alpha) * v / var_xt
    return {"coef_x0": a - k * np.sqrt(alpha) * a, "coef_xt": k, "var": v - k * np.sqrt(alpha) * v, "var_xt": var_xt, "ab": ab}


# --------------------------------------------------------------------------------------------
# Schedule
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", STEPS)
@pytest.mark.parametrize("beta_min, beta_max", [(0.1, 20.0), (0.5, 3.0), (1.0, 1.0)])
def test_schedule_closed_forms(T, beta_min, beta_max):
    s = diffusion.VPSchedule(T, beta_min, beta_max)
    assert s.n_steps == T
    for name in ("betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev", "posterior_mean_coef_x0",
                 "posterior_mean_coef_xt", "posterior_variance", "posterior_std"):
        value = getattr(s, name)
        assert value.shape == (T,) and value.dtype == torch.float64, name
    t = np.arange(1, T + 1, dtype=np.float64)
    np.testing.assert_allclose(s.betas.numpy(), _np_betas(T, beta_min, beta_max), rtol=1e-12)
    np.testing.assert_allclose(s.alphas.numpy(), 1.0 - _np_betas(T, beta_min, beta_max), rtol=1e-12)
    np.testing.assert_allclose(s.alphas_cumprod.numpy(), 1.0 - _np_sigma2(t / T, beta_min, beta_max), rtol=1e-12)
    # The closed form agrees with the cumulative product of alpha_t (eq. 2.46).
    torch.testing.assert_close(s.alphas_cumprod, torch.cumprod(s.alphas, 0), rtol=1e-12, atol=0)
    torch.testing.assert_close(s.alphas_cumprod_prev[1:], s.alphas_cumprod[:-1], rtol=0, atol=0)
    assert s.alphas_cumprod_prev[0] == 1.0
    torch.testing.assert_close(s.sqrt_alphas_cumprod.square(), s.alphas_cumprod, rtol=1e-14, atol=0)
    torch.testing.assert_close(
        s.sqrt_one_minus_alphas_cumprod.square(), 1.0 - s.alphas_cumprod, rtol=1e-12, atol=1e-15
    )
    # beta_t in (0, 1), increasing in t.
    assert torch.all((s.betas > 0) & (s.betas < 1))
    assert torch.all(s.betas[1:] > s.betas[:-1]) or beta_min == beta_max


@pytest.mark.parametrize("T", STEPS)
def test_posterior_coefficients_match_bayes(T):
    s = diffusion.VPSchedule(T)
    ref = _np_posterior(T)
    np.testing.assert_allclose(ref["var_xt"], 1.0 - ref["ab"], rtol=1e-10)  # consistency of the derivation
    np.testing.assert_allclose(s.posterior_mean_coef_x0.numpy(), ref["coef_x0"], rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(s.posterior_mean_coef_xt.numpy(), ref["coef_xt"], rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(s.posterior_variance.numpy(), ref["var"], rtol=1e-9, atol=1e-13)
    torch.testing.assert_close(s.posterior_std.square(), s.posterior_variance, rtol=1e-14, atol=0)
    # t = 1: the posterior is the point mass at x0, exactly.
    assert s.posterior_variance[0] == 0.0
    assert s.posterior_mean_coef_x0[0] == 1.0
    assert s.posterior_mean_coef_xt[0] == 0.0
    assert torch.all(s.posterior_variance[1:] > 0)


def test_schedule_to():
    s = diffusion.VPSchedule(8, 0.2, 10.0)
    s32 = s.to(dtype=torch.float32)
    assert s32.n_steps == 8 and (s32.beta_min, s32.beta_max) == (0.2, 10.0)
    for name in ("betas", "alphas_cumprod", "posterior_mean_coef_x0", "posterior_variance"):
        assert getattr(s32, name).dtype == torch.float32
        torch.testing.assert_close(getattr(s32, name), getattr(s, name).float(), rtol=0, atol=0)
    meta = s.to(device="meta")
    assert meta.betas.device.type == "meta" and meta.betas.dtype == torch.float64
    assert s.betas.dtype == torch.float64  # the original is unchanged


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_steps": 0}, "n_steps"),
        ({"n_steps": 2.0}, "n_steps"),
        ({"n_steps": True}, "n_steps"),
        ({"n_steps": 4, "beta_min": 0.0}, "beta_min"),
        ({"n_steps": 4, "beta_min": -1.0}, "beta_min"),
        ({"n_steps": 4, "beta_min": float("nan")}, "beta_min"),
        ({"n_steps": 4, "beta_min": 2.0, "beta_max": 1.0}, "beta_max"),
        ({"n_steps": 4, "beta_max": float("inf")}, "beta_max"),
        ({"n_steps": 4, "dtype": torch.int64}, "dtype"),
    ],
)
def test_schedule_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        diffusion.VPSchedule(**kwargs)


# --------------------------------------------------------------------------------------------
# Monte Carlo: posterior_sample and q_sample marginals
# --------------------------------------------------------------------------------------------


def _check_standardised(z: torch.Tensor, label: str) -> None:
    """z should be iid N(0, 1): mean within Z / sqrt(n), variance within Z sqrt(2 / (n - 1))."""
    n = z.numel()
    mean, var = z.mean().item(), z.var().item()
    assert abs(mean) < Z / math.sqrt(n), f"{label}: mean {mean} (n = {n})"
    assert abs(var - 1.0) < Z * math.sqrt(2.0 / (n - 1)), f"{label}: variance {var} (n = {n})"


def test_posterior_sample_monte_carlo():
    T, N = 4, 200_000
    s = diffusion.VPSchedule(T)
    g = torch.Generator().manual_seed(0)
    x0 = 4.0 * torch.rand(N, generator=g, dtype=torch.float64) - 2.0
    xt = 4.0 * torch.rand(N, generator=g, dtype=torch.float64) - 2.0
    t = torch.arange(N) % T + 1
    out = diffusion.posterior_sample(s, x0, xt, t, seed=1234, offset=99)
    ref = _np_posterior(T)
    idx = (t - 1).numpy()
    mean = torch.from_numpy(ref["coef_x0"][idx]) * x0 + torch.from_numpy(ref["coef_xt"][idx]) * xt
    std = torch.from_numpy(np.sqrt(ref["var"][idx]))
    first = t == 1
    assert torch.equal(out[first], x0[first])
    for step in range(2, T + 1):
        m = t == step
        _check_standardised((out[m] - mean[m]) / std[m], f"posterior t={step}")


def test_q_sample_monte_carlo():
    T, N = 8, 200_000
    s = diffusion.VPSchedule(T)
    x0 = torch.linspace(-1.5, 1.5, N, dtype=torch.float64)
    t = torch.arange(N) % T + 1
    out = s.q_sample(x0, t, seed=7, offset=5)
    ab = torch.from_numpy(1.0 - _np_sigma2(np.arange(1, T + 1) / T, 0.1, 20.0))[t - 1]
    z = (out - ab.sqrt() * x0) / (1.0 - ab).sqrt()
    for step in range(1, T + 1):
        _check_standardised(z[t == step], f"q_sample t={step}")


# --------------------------------------------------------------------------------------------
# Exactness: reference parity, determinism, counters
# --------------------------------------------------------------------------------------------


def _inputs(shape, dtype, seed=0, noncontiguous=False):
    g = torch.Generator().manual_seed(seed)
    if noncontiguous:  # same logical shape, transposed storage of the last two dims
        shape_t = shape[:-2] + (shape[-1], shape[-2])
        x0 = torch.randn(shape_t, generator=g, dtype=torch.float64).transpose(-1, -2)
        xt = torch.randn(shape_t, generator=g, dtype=torch.float64).transpose(-1, -2)
        assert not x0.is_contiguous()
    else:
        x0 = torch.randn(shape, generator=g, dtype=torch.float64)
        xt = torch.randn(shape, generator=g, dtype=torch.float64)
    return x0.to(dtype), xt.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "shape, noncontiguous",
    [((1,), False), ((7,), False), ((1023,), False), ((1025, 1), False), ((7, 3, 5), False), ((7, 3, 5), True)],
)
def test_posterior_sample_equals_reference_with_rng_noise(dtype, shape, noncontiguous):
    T = 4
    s = diffusion.VPSchedule(T)
    x0, xt = _inputs(shape, dtype, noncontiguous=noncontiguous)
    t = torch.arange(shape[0]) % T + 1
    # The reference backend is the formula; the fast backends are held to it in test_backends.py.
    out = diffusion.posterior_sample(s, x0, xt, t, seed=11, offset=123, backend="torch")
    assert out.shape == x0.shape and out.dtype == dtype
    noise = rng.normal(11, 123, x0.shape, dtype)
    i = t - 1
    ref = diffusion.posterior_sample_reference(
        x0, xt, s.posterior_mean_coef_x0[i], s.posterior_mean_coef_xt[i], s.posterior_std[i], noise
    )
    assert torch.equal(out, ref)
    # Against an independent float64 evaluation of eq. 2.51 with the same noise.
    p = _np_posterior(T)
    bshape = (-1,) + (1,) * (len(shape) - 1)
    c0 = torch.from_numpy(p["coef_x0"])[i].reshape(bshape)
    ct = torch.from_numpy(p["coef_xt"])[i].reshape(bshape)
    sd = torch.from_numpy(np.sqrt(p["var"]))[i].reshape(bshape)
    expect = c0 * x0.double() + ct * xt.double() + sd * noise.double()
    torch.testing.assert_close(out, expect.to(dtype), **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_q_sample_equals_reference(dtype):
    s = diffusion.VPSchedule(8)
    x0, _ = _inputs((1025, 3), dtype, seed=1)
    t = torch.arange(1025) % 8 + 1
    out = s.q_sample(x0, t, seed=3, offset=17, backend="torch")
    noise = rng.normal(3, 17, x0.shape, dtype)
    i = t - 1
    ref = diffusion.q_sample_reference(x0, s.sqrt_alphas_cumprod[i], s.sqrt_one_minus_alphas_cumprod[i], noise)
    assert torch.equal(out, ref)
    ab = s.alphas_cumprod[i][:, None]
    torch.testing.assert_close(out, (ab.sqrt() * x0.double() + (1 - ab).sqrt() * noise.double()).to(dtype), **TOL[dtype])
    # Explicit noise is used as given.
    given = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    torch.testing.assert_close(
        s.q_sample(x0, t, given),
        diffusion.q_sample_reference(x0, s.sqrt_alphas_cumprod[i], s.sqrt_one_minus_alphas_cumprod[i], given),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_storage_float32_arithmetic(dtype):
    s = diffusion.VPSchedule(4)
    x0, xt = _inputs((9, 4), dtype, seed=2)
    t = torch.arange(9) % 4 + 1
    out = diffusion.posterior_sample(s, x0, xt, t, seed=5, offset=8)
    assert out.dtype == dtype
    assert torch.equal(out, diffusion.posterior_sample(s, x0.float(), xt.float(), t, seed=5, offset=8).to(dtype))
    assert torch.equal(s.q_sample(x0, t, seed=5), s.q_sample(x0.float(), t, seed=5).to(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_t_equal_one_returns_x0_exactly(dtype):
    s = diffusion.VPSchedule(4)
    x0, xt = _inputs((33, 2, 3), dtype, seed=3)
    assert torch.equal(diffusion.posterior_sample(s, x0, xt, 1, seed=1), x0)
    assert torch.equal(diffusion.posterior_sample(s, x0, xt, torch.ones(33, dtype=torch.int32), seed=1), x0)
    assert torch.equal(diffusion.posterior_sample(s.to(dtype=torch.float32), x0, xt, 1, seed=1), x0)


def test_determinism_and_counters():
    s = diffusion.VPSchedule(4)
    x0, xt = _inputs((6, 2, 5), torch.float32, seed=4)
    t = torch.tensor([2, 3, 4, 2, 3, 4])
    a = diffusion.posterior_sample(s, x0, xt, t, seed=9, offset=40)
    assert torch.equal(a, diffusion.posterior_sample(s, x0, xt, t, seed=9, offset=40))
    assert not torch.any(a == diffusion.posterior_sample(s, x0, xt, t, seed=9, offset=41))
    assert not torch.any(a == diffusion.posterior_sample(s, x0, xt, t, seed=10, offset=40))
    # Row-major counters: row i uses offset + i * prod(event) ...
    event = 2 * 5
    tail = diffusion.posterior_sample(s, x0[2:], xt[2:], t[2:], seed=9, offset=40 + 2 * event)
    assert torch.equal(tail, a[2:])
    # q_sample: same counters.
    q = s.q_sample(x0, t, seed=9, offset=40)
    assert torch.equal(q[3:], s.q_sample(x0[3:], t[3:], seed=9, offset=40 + 3 * event))
    assert not torch.equal(q, s.q_sample(x0, t, seed=9, offset=0))


def test_scalar_t_broadcasts():
    s = diffusion.VPSchedule(8)
    x0, xt = _inputs((5, 3), torch.float64, seed=5)
    full = torch.full((5,), 6)
    assert torch.equal(
        diffusion.posterior_sample(s, x0, xt, 6, seed=2), diffusion.posterior_sample(s, x0, xt, full, seed=2)
    )
    assert torch.equal(
        diffusion.posterior_sample(s, x0, xt, torch.tensor(6), seed=2), diffusion.posterior_sample(s, x0, xt, full, seed=2)
    )
    assert torch.equal(s.q_sample(x0, 6, seed=2), s.q_sample(x0, full, seed=2))


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------


def _bad_posterior_cases():
    x0 = torch.zeros(4, 3)
    t = torch.tensor([1, 2, 3, 4])
    return [
        ({"x0": x0, "xt": torch.zeros(4, 2), "t": t}, ValueError, "xt.*shape"),
        ({"x0": x0.long(), "xt": x0.long(), "t": t}, ValueError, "x0.*floating"),
        ({"x0": x0, "xt": x0.long(), "t": t}, ValueError, "xt.*floating"),
        ({"x0": x0, "xt": x0.double(), "t": t}, ValueError, "xt.*dtype"),
        ({"x0": x0, "xt": x0.to("meta"), "t": t}, ValueError, "xt.*device"),
        ({"x0": torch.tensor(1.0), "xt": torch.tensor(1.0), "t": 1}, ValueError, "x0.*0-d"),
        ({"x0": x0, "xt": x0, "t": torch.tensor([0, 1, 2, 3])}, ValueError, "t must be in 1..4"),
        ({"x0": x0, "xt": x0, "t": torch.tensor([1, 2, 3, 5])}, ValueError, "t must be in 1..4"),
        ({"x0": x0, "xt": x0, "t": 0}, ValueError, "t must be in 1..4"),
        ({"x0": x0, "xt": x0, "t": 5}, ValueError, "t must be in 1..4"),
        ({"x0": x0, "xt": x0, "t": t.float()}, ValueError, "t.*integer dtype"),
        ({"x0": x0, "xt": x0, "t": t.bool()}, ValueError, "t.*integer dtype"),
        ({"x0": x0, "xt": x0, "t": True}, TypeError, "t.*bool"),
        ({"x0": x0, "xt": x0, "t": 2.0}, TypeError, "t must be an int"),
        ({"x0": x0, "xt": x0, "t": t[:3]}, ValueError, r"t must have shape \(4,\)"),
        ({"x0": x0, "xt": x0, "t": t[:, None]}, ValueError, r"t must have shape \(4,\)"),
        ({"x0": x0, "xt": x0, "t": t.to("meta")}, ValueError, "t.*device"),
        ({"x0": x0.numpy(), "xt": x0, "t": t}, TypeError, "x0.*torch.Tensor"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_posterior_cases())))
def test_posterior_sample_bad_inputs(case):
    kwargs, exc, match = _bad_posterior_cases()[case]
    with pytest.raises(exc, match=match):
        diffusion.posterior_sample(diffusion.VPSchedule(4), **kwargs)


def test_q_sample_and_sched_bad_inputs():
    s = diffusion.VPSchedule(4)
    x0 = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="noise.*shape"):
        s.q_sample(x0, 2, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="noise.*floating"):
        s.q_sample(x0, 2, torch.zeros(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="noise.*device"):
        s.q_sample(x0, 2, torch.zeros(4, 3, device="meta"))
    with pytest.raises(ValueError, match="x0.*floating"):
        s.q_sample(x0.long(), 2)
    with pytest.raises(ValueError, match="t must be in 1..4"):
        s.q_sample(x0, torch.tensor([1, 2, 3, 9]))
    with pytest.raises(TypeError, match="noise.*torch.Tensor"):
        s.q_sample(x0, 2, [0.0] * 12)
    with pytest.raises(TypeError, match="sched"):
        diffusion.posterior_sample("schedule", x0, x0, 1)


def test_rng_tensor_is_the_seed_and_offset():
    # a (2,) int64 (seed, offset) tensor draws what the ints draw (and is not advanced)
    sched = diffusion.VPSchedule(4)
    x0, xt = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    t = torch.tensor([1, 2, 3, 4, 2])
    stream = torch.tensor([7, 40], dtype=torch.int64)
    for backend in ("torch", "cpp"):
        assert torch.equal(diffusion.posterior_sample(sched, x0, xt, t, rng=stream, backend=backend),
                           diffusion.posterior_sample(sched, x0, xt, t, 7, 40, backend=backend))
        assert torch.equal(sched.q_sample(x0, t, rng=stream, backend=backend), sched.q_sample(x0, t, seed=7, offset=40,
                                                                                              backend=backend))
        # the pair: x_{t-1} from offset .. offset + n - 1, x_t from the next n counters
        x_prev, x_t = sched.q_sample_pair(x0, t, rng=stream, backend=backend)
        noise = rng.normal(7, 40, (2, 5, 3), dtype=torch.float64)
        ab_prev = sched.alphas_cumprod_prev[t - 1][:, None]
        torch.testing.assert_close(x_prev, ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * noise[0], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(x_t, sched.sqrt_alphas[t - 1][:, None] * x_prev + sched.sqrt_betas[t - 1][:, None] * noise[1],
                                   atol=1e-6, rtol=1e-6)
    assert stream.tolist() == [7, 40]
    with pytest.raises(ValueError, match="either rng or seed"):
        diffusion.posterior_sample(sched, x0, xt, t, 3, rng=stream)
    with pytest.raises(ValueError, match="int64 tensor of shape"):
        sched.q_sample(x0, t, rng=torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="either noise or rng"):
        sched.q_sample(x0, t, torch.randn_like(x0), rng=stream)
