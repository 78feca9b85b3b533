"""The canonical benchmark workloads, defined once.

Every implementation (the eager loop a user would write, ``ps.sample`` on each backend, and
later Triton / CUDA / fused chains / JAX) runs these same definitions, so their numbers are
comparable. Full scale (``scale=1``) is the canonical definition and the one whose numbers
get reported; ``PYSAMPLER_BENCH_SCALE`` shrinks chains and steps for a quick run.

W1  ULA,  25-Gaussian mixture (means {-4,-2,0,2,4}², σ=0.5), h=0.01, 65,536 chains, 200 steps
W2  MALA, 100-D diagonal Gaussian, scales logspace(-1, 0, 100), h=0.01, 4,096 chains, 200 steps
W3  ULA,  MLP energy 2→128→128→1 (SiLU) + ½|x|² (ps.MLPEnergy), h=0.01, 16,384 chains, 200 steps
W4  kinetic Langevin in a GEBM's latent space: DCGAN generator (latent 128 → 3×32×32) and a
    spectrally normalised conv energy (pysampler.models.nets), ps.LatentTarget, h=0.01, γ=1,
    128 chains, 100 steps (the CUDA-graph target of the drop-in issue)
W5  DDGAN sampling, T = 4, 100 images 3×32×32 (bench/test_ddgan_sampling.py: a reverse chain,
    not a ``ps.sample`` workload, so it is defined there)

``PYSAMPLER_BENCH_SWEEP=1`` adds smaller chain counts of W1-W4 (``Workload.sweep``), the points of
the throughput-against-problem-size plot of ``pysampler bench``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

import pysampler as ps

__all__ = ["Workload", "make_mlp", "WORKLOADS", "bench_scale", "scaled_workloads", "measured_workloads", "energy_fn"]

SCALE_ENV = "PYSAMPLER_BENCH_SCALE"
SWEEP_ENV = "PYSAMPLER_BENCH_SWEEP"
#: floors applied when scaling down, so a quick run still exercises every code path
MIN_CHAINS = 256
MIN_STEPS = 10


@dataclass(frozen=True)
class Workload:
    """One benchmark workload.

    make_target(device, dtype): what ``ps.sample`` receives (a pysampler Target or an
    nn.Module energy mapping (N, event_dim) -> (N,)).
    make_x0(device, dtype, seed): initial states (n_chains, event_dim).
    make_sampler(): the pysampler sampler config (``ps.ULA(step_size)``, ``ps.MALA(step_size)``).
    algorithm: "ula", "mala" or "kinetic", what a hand-written loop (bench/baselines.py) implements
    (kinetic: OBABO with ``friction``).
    min_chains: the floor on chains when scaled down.
    """

    name: str
    description: str
    algorithm: str
    step_size: float
    make_target: Callable[[torch.device, torch.dtype], object]
    make_x0: Callable[[torch.device, torch.dtype, int, int], torch.Tensor]
    make_sampler: Callable[[], ps.Sampler]
    n_chains: int
    n_steps: int
    event_dim: int
    friction: float = 0.0
    min_chains: int = MIN_CHAINS
    #: fractions of n_chains also measured when sweeping problem sizes (steps unchanged)
    sweep: tuple[float, ...] = (1 / 64, 1 / 8)

    @property
    def chain_steps(self) -> int:
        """Work per run: chains × steps (the numerator of chain-steps/s)."""
        return self.n_chains * self.n_steps

    def x0(self, device: torch.device | str, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
        return self.make_x0(torch.device(device), dtype, seed, self.n_chains)

    def target(self, device: torch.device | str, dtype: torch.dtype = torch.float32):
        return self.make_target(torch.device(device), dtype)

    def scaled(self, scale: float) -> Workload:
        """Chains and steps each multiplied by ``scale`` (floors MIN_CHAINS, MIN_STEPS)."""
        if scale == 1.0:
            return self
        return replace(
            self,
            n_chains=max(self.min_chains, int(round(self.n_chains * scale))),
            n_steps=max(MIN_STEPS, int(round(self.n_steps * scale))),
        )

    def with_chains(self, n_chains: int) -> Workload:
        """The same workload with ``n_chains`` chains."""
        return replace(self, n_chains=n_chains)

    def sizes(self) -> list[Workload]:
        """This workload at the sweep's chain counts (at least ``min_chains``, distinct), then itself."""
        counts = {max(self.min_chains, int(round(self.n_chains * f))) for f in self.sweep} - {self.n_chains}
        return [self.with_chains(n) for n in sorted(counts)] + [self]


def energy_fn(target) -> Callable[[torch.Tensor], torch.Tensor]:
    """U as a plain callable (N, d) -> (N,): a Target's ``potential``, or the module itself."""
    return target.potential if isinstance(target, ps.Target) else target


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _uniform_box(half_width: float, dim: int):
    def make_x0(device, dtype, seed, n):
        u = torch.rand(n, dim, generator=_generator(device, seed), device=device, dtype=dtype)
        return (2.0 * u - 1.0) * half_width

    return make_x0


def _standard_normal(dim: int):
    def make_x0(device, dtype, seed, n):
        return torch.randn(n, dim, generator=_generator(device, seed), device=device, dtype=dtype)

    return make_x0


# --- W1: ULA on the 25-Gaussian mixture -----------------------------------------------------


def _gmm25(device, dtype):
    return ps.gmm25(std=0.5, dtype=dtype, device=device)


# --- W2: MALA on an ill-conditioned 100-D diagonal Gaussian ---------------------------------

W2_DIM = 100


def _diag_gaussian(device, dtype):
    mean = torch.zeros(W2_DIM, dtype=dtype, device=device)
    scale = torch.logspace(-1, 0, W2_DIM, dtype=dtype, device=device)
    return ps.Gaussian(mean, scale)


# --- W3: ULA on a small MLP energy ----------------------------------------------------------

W3_INIT_SEED = 1234


def make_mlp(dim: int = 2, hidden: int = 128, seed: int = W3_INIT_SEED) -> nn.Sequential:
    """net = Linear(2,128)-SiLU-Linear(128,128)-SiLU-Linear(128,1), PyTorch's default init under a
    fixed seed (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))


def _mlp_energy(device, dtype):
    # U(x) = net(x) + ½|x|²: the quadratic term makes exp(-U) normalisable whatever the weights.
    # ps.MLPEnergy is that energy as a fusable target; its potential is the module's own forward.
    return ps.MLPEnergy(make_mlp().to(device=device, dtype=dtype), prior_weight=1.0)


# --- W4: kinetic Langevin in a GEBM's latent space ----------------------------------------------

W4_LATENT = 128
W4_INIT_SEED = 4321


def _gebm_latent(device, dtype):
    """ps.LatentTarget(DCGAN generator, conv energy), both in eval mode, fixed-seed init."""
    from pysampler.models.nets import ConvEnergy, DCGANGenerator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(W4_INIT_SEED)
        generator = DCGANGenerator(W4_LATENT, channels=3, size=32)
        energy = ConvEnergy(channels=3, size=32)
    generator, energy = (m.to(device=device, dtype=dtype).eval() for m in (generator, energy))
    return ps.LatentTarget(generator, energy)


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            name="W1",
            description="ULA, 25-Gaussian mixture (σ=0.5), 2-D",
            algorithm="ula",
            step_size=0.01,
            make_target=_gmm25,
            make_x0=_uniform_box(5.0, 2),
            make_sampler=lambda: ps.ULA(0.01),
            n_chains=65_536,
            n_steps=200,
            event_dim=2,
        ),
        Workload(
            name="W2",
            description="MALA, 100-D diagonal Gaussian, scales logspace(-1, 0)",
            algorithm="mala",
            step_size=0.01,
            make_target=_diag_gaussian,
            make_x0=_standard_normal(W2_DIM),
            make_sampler=lambda: ps.MALA(0.01),
            n_chains=4_096,
            n_steps=200,
            event_dim=W2_DIM,
        ),
        Workload(
            name="W3",
            description="ULA, MLP energy 2-128-128-1 (SiLU) + ½|x|²",
            algorithm="ula",
            step_size=0.01,
            make_target=_mlp_energy,
            make_x0=_standard_normal(2),
            make_sampler=lambda: ps.ULA(0.01),
            n_chains=16_384,
            n_steps=200,
            event_dim=2,
        ),
        Workload(
            name="W4",
            description="kinetic Langevin, GEBM latent (DCGAN generator + conv energy, 32×32×3)",
            algorithm="kinetic",
            step_size=0.01,
            friction=1.0,
            make_target=_gebm_latent,
            make_x0=_standard_normal(W4_LATENT),
            make_sampler=lambda: ps.KineticLangevin(0.01, friction=1.0),
            n_chains=128,
            n_steps=100,
            event_dim=W4_LATENT,
            min_chains=16,
            sweep=(1 / 8,),
        ),
    )
}


def bench_scale() -> float:
    """``PYSAMPLER_BENCH_SCALE`` (default 1.0, the canonical size), validated."""
    raw = os.environ.get(SCALE_ENV, "1.0")
    try:
        scale = float(raw)
    except ValueError:
        raise ValueError(f"{SCALE_ENV} must be a positive number such as 0.05; got {raw!r}") from None
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{SCALE_ENV} must be a positive number such as 0.05; got {raw!r}")
    return scale


def scaled_workloads(scale: float | None = None) -> dict[str, Workload]:
    """WORKLOADS at ``scale`` (default: from the environment)."""
    scale = bench_scale() if scale is None else scale
    return {name: w.scaled(scale) for name, w in WORKLOADS.items()}


def sweeping() -> bool:
    """Whether ``PYSAMPLER_BENCH_SWEEP`` asks for the problem-size sweep ("1"; default "0")."""
    raw = os.environ.get(SWEEP_ENV, "0")
    if raw not in ("0", "1"):
        raise ValueError(f"{SWEEP_ENV} must be 0 or 1; got {raw!r}")
    return raw == "1"


def measured_workloads(scale: float | None = None, sweep: bool | None = None) -> list[Workload]:
    """Every workload the session measures: each of WORKLOADS at ``scale``, and with ``sweep`` (default:
    from the environment) also at its sweep's smaller chain counts, smallest first."""
    sweep = sweeping() if sweep is None else sweep
    out = []
    for w in scaled_workloads(scale).values():
        out += w.sizes() if sweep else [w]
    return out
