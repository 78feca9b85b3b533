"""The registry of implementations every workload is measured with.

An implementation is ``make(workload, device) -> run``: it builds everything a run needs
(target, x0, sampler) outside the timed region and returns a zero-argument ``run`` that does
the whole ``workload.n_steps``-step chain and returns the final states (N, d). It raises
:class:`Unavailable` when it cannot run on ``device`` (the benchmark is then skipped).

Adding a backend is one line in IMPLEMENTATIONS, e.g.::

    "pysampler-triton": pysampler_backend("triton"),

(or any other ``make`` function: a fused-chain kernel, a JAX/BlackJAX loop that converts
its result back to a tensor). "eager" must stay first: it is the baseline of the ratios.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

import pysampler as ps
from pysampler.fused import FUSED_BACKEND, FUSED_BACKENDS, TRITON_FUSED_BACKEND, fused_backend_for, why_not_fused
from pysampler.samplers.base import as_target

from .baselines import make_compiled, make_eager
from .jax_baselines import blackjax_mala, jax_jit
from .peers import posteriors_sgmcmc, torchebm_langevin
from .workloads import Workload, energy_fn

__all__ = ["Unavailable", "IMPLEMENTATIONS", "BASELINE", "DTYPE", "eager", "pysampler_backend"]

#: dtype of every workload's state and target
DTYPE = torch.float32

Run = Callable[[], torch.Tensor]
Make = Callable[[Workload, torch.device], Run]


class Unavailable(Exception):
    """This implementation cannot run here (backend not built, no GPU, library missing)."""


def eager(workload: Workload, device: torch.device) -> Run:
    """The hand-written PyTorch loop (bench/baselines.py)."""
    target = workload.target(device, DTYPE)
    x0 = workload.x0(device, DTYPE)
    return make_eager(energy_fn(target), x0, workload.algorithm, workload.step_size, workload.n_steps, workload.friction)


def pysampler_backend(backend: str, cuda_graph: bool | str = "auto") -> Make:
    """``ps.sample(target, x0, sampler, n_steps, backend=backend, cuda_graph=cuda_graph)``; "auto"
    picks as users get it. ``cuda_graph=True`` needs a CUDA device and a workload it can capture
    (the GEBM latent chain); its chains are checked against the plain loop's before timing."""

    def make(workload: Workload, device: torch.device) -> Run:
        if cuda_graph is True and device.type != "cuda":
            raise Unavailable("CUDA graphs need a GPU")
        present = ps.available_backends(device)
        if backend not in ("auto", *FUSED_BACKENDS) and backend not in present:
            raise Unavailable(f"backend {backend!r} is not available on {device} (available: {present})")
        if backend in ("triton", TRITON_FUSED_BACKEND) and device.type != "cuda":
            raise Unavailable("Triton on the CPU is its interpreter: a correctness tool, not timed")
        target = workload.target(device, DTYPE)
        x0 = workload.x0(device, DTYPE)
        sampler = workload.make_sampler()
        fused_backend = backend if backend in FUSED_BACKENDS else fused_backend_for(device)
        why = why_not_fused(as_target(target), sampler, x0, create_graph=False, callback=None, backend=fused_backend)
        if backend in FUSED_BACKENDS and why is not None:
            raise Unavailable(f"no fused path: {why}")

        def sample(graph: bool | str) -> ps.SampleResult:
            return ps.sample(target, x0, sampler, workload.n_steps, seed=0, backend=backend, cuda_graph=graph)

        def run() -> torch.Tensor:
            return sample(cuda_graph).x

        # what "auto" resolves to (the fused path when it can run, as ps.sample decides)
        fused = backend in FUSED_BACKENDS or (backend == "auto" and why is None)
        run.backend = fused_backend if fused else ps.backends.resolve(backend, device).name
        if cuda_graph is True:
            graphed = sample(True)  # also the capture, outside the timed rounds (then cached)
            if not graphed.cuda_graph:
                raise Unavailable(f"no CUDA-graph path: {graphed.cuda_graph_reason}")
            if not torch.equal(graphed.x, sample(False).x):
                raise AssertionError(f"{workload.name}: the CUDA-graph chains differ from the plain loop's")
            run.backend += "+graph"
        return run

    return make


def compiled(workload: Workload, device: torch.device) -> Run:
    """The hand-written loop with one step under ``torch.compile`` (bench/baselines.py)."""
    target = workload.target(device, DTYPE)
    x0 = workload.x0(device, DTYPE)
    return make_compiled(energy_fn(target), x0, workload.algorithm, workload.step_size, workload.n_steps,
                         workload.friction)


IMPLEMENTATIONS: dict[str, Make] = {
    "eager": eager,
    "torch-compile": compiled,
    # explicit step-wise backends run the plain loop (cuda_graph=False): pysampler-graph shows the graphs
    "pysampler-torch": pysampler_backend("torch", cuda_graph=False),
    "pysampler-cpp": pysampler_backend("cpp", cuda_graph=False),
    "pysampler-triton": pysampler_backend("triton", cuda_graph=False),
    "pysampler-cpp-fused": pysampler_backend(FUSED_BACKEND),
    "pysampler-triton-fused": pysampler_backend(TRITON_FUSED_BACKEND),
    "pysampler-auto": pysampler_backend("auto"),
    "pysampler-graph": pysampler_backend("auto", cuda_graph=True),
    "jax-jit": jax_jit,
    "blackjax": blackjax_mala,
    "torchebm": torchebm_langevin,
    "posteriors": posteriors_sgmcmc,
}

BASELINE = "eager"
