"""Structured chain states (tuple / list / dict of tensors) and ps.ReparamTarget (VAEBM's ε-space target)."""

import pytest
import torch

import pysampler as ps
from pysampler.structure import StateLayout

F64 = torch.float64


def _groups(n=6, dtype=F64):
    g = torch.Generator().manual_seed(0)
    return {"z": torch.randn(n, 3, generator=g, dtype=dtype), "x": torch.randn(n, 2, 2, generator=g, dtype=dtype)}


@pytest.mark.parametrize("kind", ["dict", "tuple", "list"])
def test_layout_round_trip(kind):
    groups = _groups()
    state = groups if kind == "dict" else (tuple if kind == "tuple" else list)(groups.values())
    layout = StateLayout.of(state)
    flat = layout.flatten(state)
    assert flat.shape == (6, 7) and layout.dim == 7 and layout.sizes == (3, 4)
    back = layout.unflatten(flat)
    assert type(back) is type(state)
    for a, b in zip(back.values() if kind == "dict" else back, groups.values(), strict=True):
        assert torch.equal(a, b)
    # leading dimensions (a trace (T, N, D)) pass through
    trace = torch.stack([flat, 2 * flat])
    assert layout.unflatten(trace)[("x" if kind == "dict" else 1)].shape == (2, 6, 2, 2)


def test_layout_errors_name_the_group():
    with pytest.raises(ValueError, match=r"x0\['b'\] has 5"):
        StateLayout.of({"a": torch.zeros(4, 2), "b": torch.zeros(5, 2)})
    with pytest.raises(ValueError, match="dtype and device"):
        StateLayout.of((torch.zeros(4, 2), torch.zeros(4, 2, dtype=F64)))
    with pytest.raises(TypeError, match=r"x0 must be a torch.Tensor .* x0\[1\] is a float"):
        StateLayout.of([torch.zeros(4, 2), 3.0])
    with pytest.raises(TypeError, match="non-empty"):
        StateLayout.of({})
    with pytest.raises(ValueError, match="N >= 1"):
        StateLayout.of((torch.zeros(()),))


def _linear_vae(dtype=F64):
    """T(ε) = A ε_z + s ε_x + b (a linear-Gaussian decoder), E(x) = ½ c |x − μ|²."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4, 3, generator=g, dtype=dtype) / 2
    b = torch.randn(4, generator=g, dtype=dtype)
    mu = torch.randn(4, generator=g, dtype=dtype)
    s, c = 0.7, 1.5

    def transform(eps):
        return eps["z"] @ a.T + s * eps["x"].flatten(1) + b

    def energy(x):
        return 0.5 * c * (x - mu).square().sum(1)

    # U(ε) = ½|ε|² + ½c|Mε + b − μ|², M = [A, sI]: Gaussian with precision I + c MᵀM
    m = torch.cat([a, s * torch.eye(4, dtype=dtype)], dim=1)
    precision = torch.eye(7, dtype=dtype) + c * m.T @ m
    cov = torch.linalg.inv(precision)
    mean = -cov @ (c * m.T @ (b - mu))
    return transform, energy, mean, cov


def test_reparam_energy_and_grad_matches_autograd():
    transform, energy, _, _ = _linear_vae()
    target = ps.ReparamTarget(transform, energy)
    eps = {"z": _groups()["z"], "x": _groups()["x"].reshape(6, 4, 1)}
    u, g = target.energy_and_grad(eps)
    leaves = {k: v.clone().requires_grad_(True) for k, v in eps.items()}
    ref = target.potential(leaves)
    gz, gx = torch.autograd.grad(ref.sum(), [leaves["z"], leaves["x"]])
    torch.testing.assert_close(u, ref.detach())
    torch.testing.assert_close(g["z"], gz)
    torch.testing.assert_close(g["x"], gx)
    assert set(g) == {"z", "x"} and g["x"].shape == (6, 4, 1)
    # a plain tensor state works the same way
    flat = torch.cat([eps["z"], eps["x"].flatten(1)], 1)
    t2 = ps.ReparamTarget(lambda e: transform({"z": e[:, :3], "x": e[:, 3:]}), energy)
    u2, g2 = t2.energy_and_grad(flat)
    torch.testing.assert_close(u2, u)
    torch.testing.assert_close(g2, torch.cat([g["z"], g["x"].flatten(1)], 1))


def test_reparam_log_likelihood_and_create_graph():
    transform, energy, _, _ = _linear_vae()
    w = torch.tensor(0.8, dtype=F64, requires_grad=True)
    target = ps.ReparamTarget(transform, energy, log_likelihood=lambda e: -w * e["z"].square().sum(1))
    eps = {"z": _groups()["z"].requires_grad_(True), "x": _groups()["x"].reshape(6, 4)}
    u, g = target.energy_and_grad(eps, create_graph=True)
    # U gains w|ε_z|², so ∇_z gains 2w ε_z; the graph reaches w and ε_z
    base = ps.ReparamTarget(transform, energy).energy_and_grad({k: v.detach() for k, v in eps.items()})[1]
    torch.testing.assert_close(g["z"].detach(), base["z"] + 2 * 0.8 * eps["z"].detach())
    (dw,) = torch.autograd.grad(g["z"].sum(), w)
    torch.testing.assert_close(dw, 2 * eps["z"].detach().sum())


def test_reparam_errors():
    with pytest.raises(TypeError, match="transform must be"):
        ps.ReparamTarget(3, lambda x: x.sum(1))
    with pytest.raises(TypeError, match="energy must be"):
        ps.ReparamTarget(lambda e: e, None)
    with pytest.raises(TypeError, match="log_likelihood must be"):
        ps.ReparamTarget(lambda e: e, lambda x: x.sum(1), log_likelihood=1.0)
    bad = ps.ReparamTarget(lambda e: e, lambda x: x)  # energy returns (N, d)
    with pytest.raises(ValueError, match=r"energy\(transform\(eps\)\) must return a tensor of shape \(N,\)"):
        ps.sample(bad, torch.zeros(4, 2), ps.ULA(0.1), 1)


@pytest.mark.parametrize("kind", ["dict", "tuple", "list"])
def test_structured_run_equals_flat_run(kind):
    # The chains of a structured state are those of the concatenated flat state, same seed:
    # one Philox stream over the flat layout, one step size across the groups.
    transform, energy, _, _ = _linear_vae()
    groups = {"z": torch.zeros(64, 3, dtype=F64), "x": torch.zeros(64, 2, 2, dtype=F64)}
    x0 = groups if kind == "dict" else (tuple if kind == "tuple" else list)(groups.values())

    def as_dict(e):
        return e if isinstance(e, dict) else {"z": e[0], "x": e[1]}

    structured = ps.ReparamTarget(lambda e: transform({"z": as_dict(e)["z"], "x": as_dict(e)["x"]}), energy)
    flat_target = ps.ReparamTarget(lambda e: transform({"z": e[:, :3], "x": e[:, 3:]}), energy)
    flat0 = torch.zeros(64, 7, dtype=F64)
    for sampler in (ps.ULA(0.05), ps.MALA(0.2), ps.KineticLangevin(0.1, friction=1.0), ps.HMC(0.1, n_leapfrog=3)):
        a = ps.sample(structured, x0, sampler, 12, seed=5, record=True, thin=4)
        b = ps.sample(flat_target, flat0, sampler, 12, seed=5, record=True, thin=4)
        xa = as_dict(a.x)
        assert type(a.x) is type(x0) and xa["x"].shape == (64, 2, 2)
        torch.testing.assert_close(torch.cat([xa["z"], xa["x"].flatten(1)], 1), b.x, rtol=1e-12, atol=1e-12)
        assert as_dict(a.trace)["z"].shape == (3, 64, 3)
        torch.testing.assert_close(a.accept_rate, b.accept_rate, rtol=0, atol=0)
        assert a.layout is not None and b.layout is None


def test_generic_energy_on_a_structured_state():
    # Any callable energy takes the structure too; its gradient is autograd through the views.
    def energy(e):
        return 0.5 * (e[0].square().sum(1) / 4 + e[1].flatten(1).square().sum(1))

    x0 = (torch.zeros(2000, 1, dtype=F64), torch.zeros(2000, 2, 1, dtype=F64))
    res = ps.sample(energy, x0, ps.MALA(0.5), 150, burn_in=150, seed=3)
    var0, var1 = res.x[0].var(), res.x[1].var()
    # N(0, 4) and N(0, 1): the variance estimate's sd is about var·sqrt(2/N) (independent chains)
    assert abs(var0 - 4) < 5 * 4 * (2 / 2000) ** 0.5
    assert abs(var1 - 1) < 5 * (2 / 4000) ** 0.5


def test_linear_gaussian_vae_posterior():
    # MALA in ε-space of a linear-Gaussian "VAE" tilted by a quadratic energy: the exact law is
    # Gaussian (precision I + c MᵀM). Final states of 4096 independent chains, Monte Carlo bounds.
    transform, energy, mean, cov = _linear_vae()
    target = ps.ReparamTarget(transform, energy)
    n = 4096
    x0 = {"z": torch.zeros(n, 3, dtype=F64), "x": torch.zeros(n, 4, dtype=F64)}
    res = ps.sample(target, x0, ps.MALA(0.25), 1, burn_in=300, seed=11)
    eps = torch.cat([res.x["z"], res.x["x"]], 1)
    z = 5.0
    se_mean = (cov.diagonal() / n).sqrt()
    assert bool(((eps.mean(0) - mean).abs() < z * se_mean).all()), (eps.mean(0), mean)
    emp = torch.cov(eps.T)
    se_cov = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / n).sqrt()
    assert bool(((emp - cov).abs() < z * se_cov).all())
    # the data-space samples are T(ε)
    torch.testing.assert_close(target.decode(res.x), transform(res.x))


def test_diagnostics_with_a_trace():
    res = ps.sample(lambda x: 0.5 * x.square().sum(1), torch.zeros(64, 2), ps.MALA(0.8), 200, record=True, seed=1)
    d = res.diagnostics
    assert set(d) >= {"mean", "sd", "ess", "ess_mean", "mcse_mean", "rhat", "acceptance"}
    assert d["rhat"].shape == (2,) and d["acceptance"].shape == (64,)
    assert bool((d["rhat"] < 1.05).all()) and bool((d["ess"] > 500).all())
    assert ps.sample(lambda x: x.square().sum(1), torch.zeros(8, 2), ps.ULA(0.1), 5).diagnostics is None
