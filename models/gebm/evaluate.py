"""Sampling a trained GEBM through the engine, and the base-versus-GEBM report.

GEBM samples: latent chains z on π(z) ∝ N(z; 0, I) exp(−T·E(B(z))) (``ps.LatentTarget``) started
from the prior, run by ``ps.sample`` with any sampler and backend, then x = B(z). Base samples:
x = B(z) with z ~ N(0, I). Both are compared with the held-out data by the same metrics
(:func:`sample_metrics`), so the report shows what the energy adds to its generator.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import pysampler as ps
from pysampler.models import data as datasets
from pysampler.models.evaluation import Reference, classifier_for, classifier_report, plot_samples, pyplot, sample_metrics
from pysampler.models.gebm.model import GEBM

__all__ = [
    "SAMPLERS", "SamplerSettings", "make_sampler", "sample_base", "sample_gebm", "Reference", "sample_metrics", "evaluate",
    "plot_samples", "plot_energy",  # the shared ones re-exported from pysampler.models.evaluation
]

#: sampler names of the command line -> class
SAMPLERS = {"ula": ps.ULA, "mala": ps.MALA, "kla": ps.KineticLangevin, "hmc": ps.HMC}
#: default step sizes and chain lengths on the latent posterior, by kind of data. The image
#: energies vary faster along the latent directions (through a convolutional generator), and
#: long chains drift where the energy was never trained (measured on mnist: FD 145 at h = 0.02,
#: 100 steps; 157 at h = 0.05, 300 steps; base 153)
DEFAULT_STEP = {"toy": {"ula": 0.01, "mala": 0.05, "kla": 0.05, "hmc": 0.05},
                "image": {"ula": 0.005, "mala": 0.01, "kla": 0.02, "hmc": 0.02}}
DEFAULT_CHAIN_LENGTH = {"toy": 300, "image": 100}


@dataclass
class SamplerSettings:
    """How GEBM samples are drawn: sampler name (ula, mala, kla, hmc), step size, friction (kla),
    leapfrog steps (hmc), chain length, temperature T, backend. ``step_size`` and ``steps`` left
    None take the defaults for the kind of data (:meth:`resolved`)."""

    name: str = "kla"
    step_size: float | None = None
    friction: float = 1.0
    n_leapfrog: int = 10
    steps: int | None = None
    temperature: float = 1.0
    backend: str = "auto"

    def resolved(self, kind: str) -> SamplerSettings:
        """A copy with the defaults for ``kind`` ("toy" or "image") filled in, checked."""
        if self.name not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}; got {self.name!r}")
        steps = DEFAULT_CHAIN_LENGTH[kind] if self.steps is None else self.steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an int >= 0; got {steps!r}")
        step_size = DEFAULT_STEP[kind][self.name] if self.step_size is None else float(self.step_size)
        return dataclasses.replace(self, step_size=step_size, steps=steps)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "step_size": self.step_size, "friction": self.friction if self.name == "kla" else None,
                "n_leapfrog": self.n_leapfrog if self.name == "hmc" else None, "steps": self.steps,
                "temperature": self.temperature, "backend": self.backend}


def make_sampler(settings: SamplerSettings) -> ps.Sampler:
    """The pysampler sampler for resolved settings."""
    if settings.step_size is None or settings.steps is None:
        raise ValueError("resolve the sampler settings for the kind of data first (SamplerSettings.resolved)")
    if settings.name == "kla":
        return ps.KineticLangevin(settings.step_size, settings.friction)
    if settings.name == "hmc":
        return ps.HMC(settings.step_size, settings.n_leapfrog)
    return SAMPLERS[settings.name](settings.step_size)


def _prior_draws(model: GEBM, n: int, seed: int) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.randn(n, model.latent_dim, generator=torch.Generator().manual_seed(seed)).to(device)


@torch.no_grad()
def sample_base(model: GEBM, n: int, seed: int = 0) -> torch.Tensor:
    """(n, *data) samples of the base generator alone, B(z) with z ~ N(0, I) (eval mode)."""
    model.eval()
    return model.generator(_prior_draws(model, n, seed))


def sample_gebm(model: GEBM, n: int, settings: SamplerSettings, seed: int = 0, progress: bool = False):
    """(x (n, *data), ps.SampleResult): GEBM samples by latent chains from the prior draws of ``sample_base``
    with the same seed, so each chain starts at the base sample it refines. ``settings`` resolved."""
    sampler = make_sampler(settings)
    model.eval()
    target = model.latent_target(settings.temperature)
    res = ps.sample(target, _prior_draws(model, n, seed), sampler, settings.steps, seed=seed,
                    backend=settings.backend, progress=progress)
    return target.decode(res.x), res


def evaluate(model: GEBM, dataset: datasets.Dataset, settings: SamplerSettings, n: int = 2000, seed: int = 0,
             out: str | Path | None = None, progress: bool = False) -> dict[str, Any]:
    """The base-versus-GEBM report: {"base": metrics, "gebm": metrics, "sampler": ..., "classifier": ...};
    with ``out``, also the pictures base.png, gebm.png (and energy.png for 2-D data)."""
    start = time.perf_counter()
    settings = settings.resolved(dataset.kind)
    classifier = classifier_for(dataset)
    report: dict[str, Any] = {}
    if classifier is not None:
        report["classifier"] = classifier_report(classifier)
    base = sample_base(model, n, seed)
    sample_start = time.perf_counter()
    gebm, res = sample_gebm(model, n, settings, seed, progress)
    sample_seconds = time.perf_counter() - sample_start
    reference = Reference.of(dataset, classifier)
    report["base"] = sample_metrics(base, dataset, seed=seed, reference=reference)
    report["gebm"] = sample_metrics(gebm, dataset, seed=seed, reference=reference)
    report["sampler"] = {**settings.as_dict(), "backend_used": res.backend, "acceptance": float(res.accept_rate.mean()),
                         "seconds": sample_seconds}
    report["n_samples"] = n
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        reference = dataset.held_out if dataset.kind == "toy" else None
        plot_samples(base, out / "base.png", "base generator B(z), z ~ N(0, I)", reference)
        plot_samples(gebm, out / "gebm.png", f"GEBM ({settings.name}, {settings.steps} steps)", reference)
        if dataset.kind == "toy":
            plot_energy(model, dataset, out / "energy.png")
    report["eval_seconds"] = time.perf_counter() - start
    return report


@torch.no_grad()
def plot_energy(model: GEBM, dataset: datasets.Dataset, path: str | Path, resolution: int = 200) -> None:
    """2-D data: the learned energy E(x) over [-6, 6]² with the held-out data on top."""
    plt = pyplot()
    model.eval()
    axis = torch.linspace(-6, 6, resolution)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    device = next(model.parameters()).device
    e = model.energy(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1).to(device)).cpu().view(resolution, resolution)
    fig, ax = plt.subplots(figsize=(5.6, 5))
    mesh = ax.contourf(xx.numpy(), yy.numpy(), e.numpy(), levels=40, cmap="viridis")
    fig.colorbar(mesh, ax=ax, label="E(x)")
    held = dataset.held_out[:1000]
    ax.scatter(held[:, 0], held[:, 1], s=1, c="white", alpha=0.5)
    ax.set(aspect="equal", title="learned energy E(x) (low = more mass)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
