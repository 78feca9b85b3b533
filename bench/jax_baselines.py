"""JAX and BlackJAX versions of the workloads: the strongest thing a JAX user runs today.

* ``jax-jit``: the chain written as JAX users write it: the potential as a function of one
  chain's state, ``jax.grad`` of it, ``jax.vmap`` over chains, ``jax.lax.scan`` over steps, all
  under ``jax.jit`` (XLA fuses the step; ``jax.random`` draws the noise). ULA for W1 / W3,
  textbook MALA for W2.
* ``blackjax``: ``blackjax.mala`` (the library's kernel, vmapped over chains and scanned) for the
  MALA workload; BlackJAX has no plain ULA kernel, so W1 / W3 are skipped for it.

Both are compiled when the implementation is made (outside the timed region) and return the
final states as a torch tensor (``torch.from_dlpack``) after ``block_until_ready``. The energies
are the workloads' own, rebuilt in jax.numpy from the torch target's parameters (float32).
Optional: install the ``bench`` extra (``pip install jax blackjax``); without JAX these are skipped.
"""

from __future__ import annotations

import math

import torch

import pysampler as ps

from .workloads import Workload

__all__ = ["jax_jit", "blackjax_mala"]


def _jax(device: torch.device):
    from .implementations import Unavailable  # the registry's exception (imported late: no cycle)

    try:
        import jax
        import jax.numpy as jnp
    except ImportError as exc:
        raise Unavailable(f"JAX is not installed ({exc}); pip install jax blackjax") from None
    platform = "gpu" if device.type == "cuda" else "cpu"
    try:
        jax_device = jax.devices(platform)[0]
    except RuntimeError:
        raise Unavailable(f"JAX has no {platform} device here") from None
    return jax, jnp, jax_device


def _potential(target, jnp, jax):
    """U of one chain, x (d,) -> (), in jax.numpy, from the workload's torch target."""
    from .implementations import Unavailable

    def arr(t: torch.Tensor):
        return jnp.asarray(t.detach().cpu().numpy())

    if isinstance(target, ps.GaussianMixture):
        mu, sd, logw = arr(target.means), arr(target.stds), arr(target.weights.log())
        log_norm = -jnp.log(sd).sum(-1) - 0.5 * mu.shape[1] * math.log(2 * math.pi) + logw

        def potential(x):
            return -jax.nn.logsumexp(-0.5 * (((x - mu) / sd) ** 2).sum(-1) + log_norm)

        return potential
    if isinstance(target, ps.Gaussian) and target.scale_tril is None:
        mean, scale = arr(target.mean), arr(target.scale)

        def potential(x):
            return 0.5 * (((x - mean) / scale) ** 2).sum()

        return potential
    if isinstance(target, ps.MLPEnergy):  # W3: net(x) + ½·prior_weight·|x|²
        net, prior = target.module, target.prior_weight
        layers = []
        for m in net:
            if isinstance(m, torch.nn.Linear):
                layers.append(("linear", arr(m.weight), arr(m.bias)))
            elif isinstance(m, torch.nn.SiLU):
                layers.append(("silu", None, None))
            else:
                raise Unavailable(f"no JAX version of {type(m).__name__}")

        def potential(x):
            h = x
            for kind, w, b in layers:
                h = h @ w.T + b if kind == "linear" else jax.nn.silu(h)
            return h[0] + 0.5 * prior * (x * x).sum()

        return potential
    raise Unavailable(f"no JAX version of the target {type(target).__name__}")


def _finish(run_jit, x0, jax, jax_device):
    """Compile and warm up now; return the timed ``run`` (final states as a torch tensor)."""
    key = jax.device_put(jax.random.PRNGKey(0), jax_device)
    x0 = jax.device_put(x0, jax_device)
    run_jit(x0, key).block_until_ready()

    def run() -> torch.Tensor:
        out = run_jit(x0, key)
        out.block_until_ready()
        return torch.from_dlpack(out)

    return run


def jax_jit(workload: Workload, device: torch.device):
    """ULA (W1, W3) or MALA (W2) as jit(scan(vmap(grad)))."""
    from .implementations import Unavailable

    if workload.algorithm not in ("ula", "mala"):
        raise Unavailable(f"no JAX loop for {workload.algorithm}")
    jax, jnp, jax_device = _jax(device)
    potential = _potential(workload.target("cpu", torch.float32), jnp, jax)
    x0 = jnp.asarray(workload.x0("cpu", torch.float32).numpy())
    h, n_steps = workload.step_size, workload.n_steps
    value_and_grad = jax.vmap(jax.value_and_grad(potential))

    if workload.algorithm == "ula":

        def step(x, key):
            _, g = value_and_grad(x)
            return x - h * g + math.sqrt(2 * h) * jax.random.normal(key, x.shape, x.dtype), None

        @jax.jit
        def run(x0, key):
            return jax.lax.scan(step, x0, jax.random.split(key, n_steps))[0]

    else:  # textbook MALA with cached U, ∇U (the same algorithm as bench/baselines.py)

        def step(carry, key):
            x, u, g = carry
            k_noise, k_accept = jax.random.split(key)
            y = x - h * g + math.sqrt(2 * h) * jax.random.normal(k_noise, x.shape, x.dtype)
            uy, gy = value_and_grad(y)
            fwd = ((y - x + h * g) ** 2).sum(1)
            bwd = ((x - y + h * gy) ** 2).sum(1)
            log_alpha = u - uy - (bwd - fwd) / (4 * h)
            accept = jnp.log(jax.random.uniform(k_accept, u.shape, u.dtype)) < log_alpha
            pick = accept[:, None]
            return (jnp.where(pick, y, x), jnp.where(accept, uy, u), jnp.where(pick, gy, g)), None

        @jax.jit
        def run(x0, key):
            u0, g0 = value_and_grad(x0)
            return jax.lax.scan(step, (x0, u0, g0), jax.random.split(key, n_steps))[0][0]

    return _finish(run, x0, jax, jax_device)


def blackjax_mala(workload: Workload, device: torch.device):
    """``blackjax.mala`` vmapped over chains, scanned over steps, jitted (MALA workloads only)."""
    from .implementations import Unavailable

    if workload.algorithm != "mala":
        raise Unavailable("BlackJAX has no plain ULA kernel; it is measured on the MALA workload")
    jax, jnp, jax_device = _jax(device)
    try:
        import blackjax
    except ImportError as exc:
        raise Unavailable(f"BlackJAX is not installed ({exc}); pip install blackjax") from None
    potential = _potential(workload.target("cpu", torch.float32), jnp, jax)
    x0 = jnp.asarray(workload.x0("cpu", torch.float32).numpy())
    n_chains, n_steps = x0.shape[0], workload.n_steps
    # BlackJAX's MALA proposes x + h ∇log π + √(2h) ξ: the same step-size convention as pysampler.
    kernel = blackjax.mala(lambda x: -potential(x), workload.step_size)

    def step(states, key):
        states, _ = jax.vmap(kernel.step)(jax.random.split(key, n_chains), states)
        return states, None

    @jax.jit
    def run(x0, key):
        states = jax.vmap(kernel.init)(x0)
        return jax.lax.scan(step, states, jax.random.split(key, n_steps))[0].position

    return _finish(run, x0, jax, jax_device)
