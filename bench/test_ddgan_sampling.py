"""DDGAN sampling overhead (issue 8): 100 images at T = 4 by ``ps.diffusion.reverse_sample`` against
the floor of four generator forward passes on the same batch, measured in the same session.

The sampler's own work per step is one latent draw and one fused posterior draw (plus x_T once);
the target is a sampling time within 1.1x of the four forwards (overhead under 10%) on a GPU,
where the whole T-step loop is replayed from one CUDA graph. Cases, one group:

* ``generator-x4``: G(x_t, z, t) four times on fixed inputs (the floor);
* ``eager-loop``: Algorithm 2 as a user writes it in eager PyTorch (torch.randn, the posterior formula);
* ``pysampler``: ``reverse_sample`` with its defaults (CUDA graph on GPU);
* ``pysampler-plain``: ``reverse_sample(..., cuda_graph=False)``.

Each case's ``extra_info`` has ``ratio_vs_generator`` = its mean / the floor's mean.

The generator is the DDGAN U-Net (pysampler.models.ddgan.nets) on 3x32x32 images with latent 100,
width ``PYSAMPLER_BENCH_DDGAN_WIDTH`` (default 64 on CUDA, 32 on CPU). Run:
``python -m pytest bench/test_ddgan_sampling.py --benchmark-only --benchmark-json=bench/results/ddgan.json``.
"""

from __future__ import annotations

import os

import pytest
import torch

from pysampler.diffusion import VPSchedule, reverse_sample
from pysampler.models.ddgan.nets import UNetGenerator

DEVICE = torch.device(os.environ.get("PYSAMPLER_BENCH_DEVICE", "cpu"))
N_IMAGES, T, LATENT, SHAPE = 100, 4, 100, (3, 32, 32)
WIDTH = int(os.environ.get("PYSAMPLER_BENCH_DDGAN_WIDTH", "64" if DEVICE.type == "cuda" else "32"))
CASES = ("generator-x4", "eager-loop", "pysampler", "pysampler-plain")

_means: dict[str, float] = {}


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
    if name == "generator-x4":
        x = torch.randn(N_IMAGES, *SHAPE, device=DEVICE)
        z = torch.randn(N_IMAGES, LATENT, device=DEVICE)
        steps = [torch.full((N_IMAGES,), t, device=DEVICE) for t in range(T, 0, -1)]

        @torch.no_grad()
        def run():
            for t in steps:
                out = net(x, z, t)
            return out

        return run
    if name == "eager-loop":
        c0, ct, std = sched.posterior_mean_coef_x0, sched.posterior_mean_coef_xt, sched.posterior_std

        @torch.no_grad()
        def run():
            x = torch.randn(N_IMAGES, *SHAPE, device=DEVICE)
            for t in range(T, 0, -1):
                x0 = net(x, torch.randn(N_IMAGES, LATENT, device=DEVICE), torch.full((N_IMAGES,), t, device=DEVICE))
                x = c0[t - 1] * x0 + ct[t - 1] * x + std[t - 1] * torch.randn_like(x)
            return x

        return run
    graph = name == "pysampler"
    return lambda: reverse_sample(net, sched, N_IMAGES, SHAPE, LATENT, seed=1, cuda_graph="auto" if graph else False).x


@pytest.mark.parametrize("case", CASES)
def test_ddgan_sampling(benchmark, case):
    net, sched = _setup()
    run = _synced(_case(case, net, sched))
    run()  # warm-up (and the capture, on CUDA)
    benchmark.group = f"DDGAN sampling: {N_IMAGES} images {SHAPE}, T = {T}, U-Net width {WIDTH}, {DEVICE}"
    out = benchmark.pedantic(run, rounds=10 if DEVICE.type == "cuda" else 3, iterations=1, warmup_rounds=1)
    assert out.shape == (N_IMAGES, *SHAPE) and bool(torch.isfinite(out).all())
    if benchmark.disabled:
        return
    _means[case] = benchmark.stats.stats.mean
    floor = _means.get("generator-x4")
    benchmark.extra_info.update(case=case, device=str(DEVICE), width=WIDTH, torch_threads=torch.get_num_threads(),
                                ratio_vs_generator=None if floor is None else _means[case] / floor,
                                cuda_graph=case == "pysampler" and DEVICE.type == "cuda")
