"""W5: DDGAN sampling, T = 4, 100 images 3x32x32 (issue 8's sampling-overhead target).

``ps.diffusion.reverse_sample`` against the floor of four generator forward passes on the same
batch and the loop a user writes, measured in the same session. The sampler's own work per step
is one latent draw and one fused posterior draw (plus x_T once); the target is a sampling time
within 1.1x of the four forwards (overhead under 10%) on a GPU, where the whole T-step loop is
replayed from one CUDA graph. Providers, one group:

* ``generator-x4``: G(x_t, z, t) four times on fixed inputs (the floor);
* ``eager``: Algorithm 2 as a user writes it in eager PyTorch (torch.randn, the posterior formula);
* ``pysampler-<backend>``: ``reverse_sample(..., backend=<backend>, cuda_graph=False)`` for every
  backend available on the device;
* ``pysampler-auto``: ``reverse_sample`` with its defaults (a CUDA graph on GPU).

Throughput is in chain-steps/s like W1-W4 (an image is a chain of T steps). Each case's
``extra_info`` also has ``ratio_vs_generator`` = its mean / the floor's mean.

The generator is the DDGAN U-Net (pysampler.models.ddgan.nets) with latent 100, width
``PYSAMPLER_BENCH_DDGAN_WIDTH`` (default 64 on CUDA, 32 on CPU); ``PYSAMPLER_BENCH_DDGAN_IMAGES``
(default 100) sets the batch. Run: ``python -m pytest bench/test_ddgan_sampling.py --benchmark-only``.
"""

from __future__ import annotations

import os

import pytest
import torch

import pysampler as ps
from pysampler.diffusion import VPSchedule, reverse_sample
from pysampler.models.ddgan.nets import UNetGenerator

from .report import BenchSession, Row

DEVICE = torch.device(os.environ.get("PYSAMPLER_BENCH_DEVICE", "cpu"))
N_IMAGES = int(os.environ.get("PYSAMPLER_BENCH_DDGAN_IMAGES", "100"))
T, LATENT, SHAPE = 4, 100, (3, 32, 32)
WIDTH = int(os.environ.get("PYSAMPLER_BENCH_DDGAN_WIDTH", "64" if DEVICE.type == "cuda" else "32"))
ROUNDS = int(os.environ.get("PYSAMPLER_BENCH_ROUNDS", "10" if DEVICE.type == "cuda" else "3"))
NAME = "W5"
DESCRIPTION = f"DDGAN sampling, T = {T}, 3×32×32 U-Net (width {WIDTH})"
FLOOR = "generator-x4"
CASES = (FLOOR, "eager", *(f"pysampler-{b}" for b in ps.available_backends(DEVICE)), "pysampler-auto")


def _synced(fn):
    def run():
        out = fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize(DEVICE)
        return out

    return run


def _setup():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = UNetGenerator(SHAPE, LATENT, width=WIDTH).to(DEVICE).eval()
    sched = VPSchedule(T, dtype=torch.float32, device=DEVICE)
    return net, sched


def _case(name: str, net, sched):
    if name == FLOOR:
        x = torch.randn(N_IMAGES, *SHAPE, device=DEVICE)
        z = torch.randn(N_IMAGES, LATENT, device=DEVICE)
        steps = [torch.full((N_IMAGES,), t, device=DEVICE) for t in range(T, 0, -1)]

        @torch.no_grad()
        def run():
            for t in steps:
                out = net(x, z, t)
            return out

        return run
    if name == "eager":
        c0, ct, std = sched.posterior_mean_coef_x0, sched.posterior_mean_coef_xt, sched.posterior_std

        @torch.no_grad()
        def run():
            x = torch.randn(N_IMAGES, *SHAPE, device=DEVICE)
            for t in range(T, 0, -1):
                x0 = net(x, torch.randn(N_IMAGES, LATENT, device=DEVICE), torch.full((N_IMAGES,), t, device=DEVICE))
                x = c0[t - 1] * x0 + ct[t - 1] * x + std[t - 1] * torch.randn_like(x)
            return x

        return run
    backend = name.removeprefix("pysampler-")
    graph = "auto" if backend == "auto" else False
    return lambda: reverse_sample(net, sched, N_IMAGES, SHAPE, LATENT, seed=1, backend=backend, cuda_graph=graph).x


@pytest.mark.parametrize("case", CASES)
def test_ddgan_sampling(benchmark, bench_session: BenchSession, case):
    bench_session.device = str(DEVICE)
    net, sched = _setup()
    run = _synced(_case(case, net, sched))
    run()  # warm-up (and the capture, on CUDA)
    benchmark.group = f"{NAME}: {N_IMAGES} images {SHAPE}, T = {T}, U-Net width {WIDTH}, {DEVICE}"
    out = benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    assert out.shape == (N_IMAGES, *SHAPE) and bool(torch.isfinite(out).all())
    if benchmark.disabled:
        return
    mean_s = benchmark.stats.stats.mean
    means = {r.implementation: r.mean_s for r in bench_session.rows if r.workload == NAME}
    floor, eager = means.get(FLOOR, mean_s if case == FLOOR else None), means.get("eager", mean_s if case == "eager" else None)
    benchmark.extra_info.update(case=case, device=str(DEVICE), width=WIDTH, n_images=N_IMAGES,
                                torch_threads=torch.get_num_threads(),
                                ratio_vs_generator=None if floor is None else mean_s / floor,
                                cuda_graph=case == "pysampler-auto" and DEVICE.type == "cuda")
    bench_session.rows.append(Row(
        workload=NAME, implementation=case, device=str(DEVICE), n_chains=N_IMAGES, n_steps=T,
        rounds=ROUNDS, mean_s=mean_s, min_s=benchmark.stats.stats.min, chain_steps_per_s=N_IMAGES * T / mean_s,
        ratio_vs_eager=None if eager is None else eager / mean_s, eager_mean_s=eager,
        backend=case.removeprefix("pysampler-") if case.startswith("pysampler") else None, description=DESCRIPTION,
    ))
