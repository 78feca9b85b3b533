"""Training a GEBM: the alternating KALE schedule, checkpoints that resume bit for bit, DDP.

One *iteration* is ``energy_steps`` updates of the energy and c (``warmup_energy_steps`` during
the first ``warmup_iters`` iterations, so the energy is near its optimum before the generator
follows it, as WGAN-style critics are trained), then one generator update. After ``iters``
iterations, ``refine_steps`` more energy updates with the generator fixed (gradient penalty
``refine_penalty``, learning rate decaying linearly to 0) bring the energy near the optimum E*
for the final base, the energy the slides' theorem and the GEBM's sampling assume (the paper's
experiments likewise train the critic further for a fixed generator). A strong penalty during the alternating phase keeps the
energy smooth, which gives the generator useful gradients far from the data; a weak one at the
end lets the energy resolve what the base still gets wrong. Only base samples
B(z), z ~ N(0, I) enter training (KALE needs no MCMC); the Markov chains run at evaluation and
in ``pysampler sample gebm``, through ``ps.LatentTarget`` and ``ps.sample``.

All randomness of training comes from one ``torch.Generator`` per process, saved in the
checkpoint with the networks, both Adam states and the iteration, so a run resumed from a
checkpoint ends with the same parameters as an uninterrupted one, bit for bit.

Under ``torchrun`` (WORLD_SIZE > 1) the generator and the critic are wrapped in
DistributedDataParallel (gloo on CPU, NCCL on CUDA); each process draws its own batches
(``batch_size`` per process) and rank 0 writes checkpoints, metrics and pictures.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from pysampler.models import data as datasets
from pysampler.models import training
from pysampler.models.gebm.model import GEBM, build_networks, energy_loss, generator_loss, gradient_penalty, interpolate
from pysampler.models.training import (
    CHECKPOINT_NAME,
    CheckpointedTrainer,
    check_same_training,
    config_dict,
    read_checkpoint,
    saved_config,
)

__all__ = ["GEBMConfig", "Trainer", "train", "CHECKPOINT_NAME", "load_config", "load_model"]

CHECKPOINT_FORMAT = 1

# Defaults that depend on the kind of data; a GEBMConfig field left as None takes them.
_DEFAULTS = {
    "toy": dict(latent_dim=2, width=128, batch_size=256, lr_energy=1e-3, lr_generator=1e-3, gradient_penalty=1.0,
                refine_steps=2000, refine_penalty=0.1),
    "image": dict(latent_dim=64, width=32, batch_size=64, lr_energy=2e-4, lr_generator=2e-4, gradient_penalty=0.0,
                  refine_steps=1500, refine_penalty=0.0),
}

#: fields that define the training run; a resumed run must agree on them (``iters`` may grow)
TRAINING_FIELDS = (
    "data", "latent_dim", "width", "batch_size", "energy_steps", "warmup_iters", "warmup_energy_steps", "lr_energy",
    "lr_generator", "betas", "gradient_penalty", "refine_steps", "refine_penalty", "seed",
)


@dataclass
class GEBMConfig:
    """Settings of a GEBM run. Fields left None take the defaults for the data's kind
    (toy: latent 2, MLPs of width 128, batch 256, Adam lr 1e-3, gradient penalty 1, then 2000
    refinement steps at penalty 0.1; images: latent 64, DCGAN networks of width 32, batch 64,
    lr 2e-4, spectral norm instead of a penalty, 1500 refinement steps)."""

    data: str = "gaussians25"
    iters: int = 3000  #: generator updates
    latent_dim: int | None = None
    width: int | None = None
    batch_size: int | None = None  #: per process
    energy_steps: int = 5  #: energy updates per generator update
    warmup_iters: int = 50  #: first iterations that use warmup_energy_steps
    warmup_energy_steps: int = 20
    lr_energy: float | None = None
    lr_generator: float | None = None
    betas: tuple[float, float] = (0.5, 0.999)  #: Adam's, for both optimisers
    gradient_penalty: float | None = None  #: λ of λ·E|∇E(x̂)|² at data-base interpolates; 0 = off
    refine_steps: int | None = None  #: energy updates with the generator fixed, after the iterations
    refine_penalty: float | None = None  #: the gradient penalty's λ during those
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 500  #: iterations between checkpoints (and one at the end)

    def resolved(self, kind: str) -> GEBMConfig:
        """A copy with the None fields set to the defaults for ``kind`` ("toy" or "image"), checked."""
        filled = dataclasses.replace(self, **{k: v for k, v in _DEFAULTS[kind].items() if getattr(self, k) is None})
        filled.betas = tuple(float(b) for b in filled.betas)
        positive_ints = ("iters", "latent_dim", "width", "batch_size", "energy_steps", "warmup_energy_steps", "checkpoint_every")
        for name in positive_ints:
            value = getattr(filled, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "iters" else 1):
                raise ValueError(f"{name} must be an int >= {0 if name == 'iters' else 1}; got {value!r}")
        for name in ("warmup_iters", "refine_steps"):
            value = getattr(filled, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0; got {value!r}")
        for name in ("lr_energy", "lr_generator"):
            if not getattr(filled, name) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(filled, name)}")
        for name in ("gradient_penalty", "refine_penalty"):
            if not getattr(filled, name) >= 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(filled, name)}")
        if len(filled.betas) != 2 or not all(0 <= b < 1 for b in filled.betas):
            raise ValueError(f"betas must be two numbers in [0, 1); got {filled.betas}")
        return filled


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str) -> tuple[int, int, str]:
    """Join the process group torchrun describes (WORLD_SIZE > 1 in the environment), once.
    Returns (rank, world size, this process's device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    rank, world = _rank_world()
    if world > 1 and device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return rank, world, device


class Trainer(CheckpointedTrainer):
    """The GEBM training loop over a :class:`GEBMConfig`.

    >>> trainer = Trainer(GEBMConfig(data="gaussians25", iters=2000), out="runs/g25")  # doctest: +SKIP
    >>> trainer.run(progress=True)                                                       # doctest: +SKIP
    """

    def __init__(self, config: GEBMConfig, out: str | Path | None = None, dataset: datasets.Dataset | None = None):
        self.dataset = dataset if dataset is not None else datasets.load(config.data)
        self.config = config.resolved(self.dataset.kind)
        self.out = None if out is None else Path(out)
        self.rank, self.world, self.device = init_distributed(self.config.device)
        cfg = self.config
        # Same initial networks on every rank (DDP also broadcasts rank 0's at wrapping).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.model: GEBM = build_networks(self.dataset.shape, cfg.latent_dim, cfg.width).to(self.device)
        self.opt_energy = torch.optim.Adam(self.model.critic.parameters(), lr=cfg.lr_energy, betas=cfg.betas)
        self.opt_generator = torch.optim.Adam(self.model.generator.parameters(), lr=cfg.lr_generator, betas=cfg.betas)
        # one stream per process: batches, latents and interpolation points
        self.rng = torch.Generator().manual_seed((cfg.seed << 16) + self.rank)
        self.iteration = 0
        self.refined = 0  # energy refinement steps done (after the iterations)
        self.history: list[tuple[int, float]] = []  # (iterations + refinement steps, the last energy batch's KALE bound)
        if self.world > 1:
            ids = None if self.device == "cpu" else [torch.device(self.device).index]
            self.generator = DistributedDataParallel(self.model.generator, device_ids=ids)
            self.critic = DistributedDataParallel(self.model.critic, device_ids=ids)
        else:
            self.generator, self.critic = self.model.generator, self.model.critic

    # ------------------------------------------------------------------ steps
    def _latents(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.config.latent_dim, generator=self.rng).to(self.device)

    def energy_step(self, penalty: float | None = None) -> float:
        """One Adam step of the energy and c on −F (+ the gradient penalty, ``config.gradient_penalty``
        unless given); returns the batch's F."""
        cfg = self.config
        penalty = cfg.gradient_penalty if penalty is None else penalty
        n = cfg.batch_size
        x = self.dataset.batch(n, self.rng).to(self.device)
        with torch.no_grad():
            base = self.generator(self._latents(n))
        parts = [x, base]
        if penalty > 0:
            parts.append(interpolate(x, base, self.rng).requires_grad_(True))
        # one forward over all parts: DDP expects one forward per backward
        out = self.critic(torch.cat(parts)).split(n)
        loss = energy_loss(out[0], out[1])
        bound = -float(loss.detach())
        if penalty > 0:
            loss = loss + penalty * gradient_penalty(out[2], parts[2])
        self.opt_energy.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_energy.step()
        return bound

    def generator_step(self) -> None:
        """One Adam step of the generator on −E_z[exp(−E(B(z)) − c)] (energy and c held fixed)."""
        z = self._latents(self.config.batch_size)
        # the bare critic: its gradients here are discarded (zeroed before its next step)
        loss = generator_loss(self.model.critic(self.generator(z)))
        self.opt_generator.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_generator.step()

    def iterate(self) -> float:
        cfg = self.config
        k = cfg.warmup_energy_steps if self.iteration < cfg.warmup_iters else cfg.energy_steps
        for _ in range(k):
            bound = self.energy_step()
        self.generator_step()
        self.iteration += 1
        return bound

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        rng_states = [self.rng.get_state()]
        if self.world > 1:
            gathered: list[Any] = [None] * self.world
            dist.all_gather_object(gathered, rng_states[0])
            rng_states = gathered
        return {
            "format": CHECKPOINT_FORMAT,
            "kind": "gebm",
            "config": config_dict(self.config),
            "data_shape": list(self.dataset.shape),
            "iteration": self.iteration,
            "refined": self.refined,
            "model": self.model.state_dict(),
            "opt_energy": self.opt_energy.state_dict(),
            "opt_generator": self.opt_generator.state_dict(),
            "rng": rng_states,
            "history": [list(h) for h in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "gebm" or state.get("format") != CHECKPOINT_FORMAT:
            found = f"kind {state.get('kind')!r}, format {state.get('format')!r}"
            raise ValueError(f"not a GEBM checkpoint of format {CHECKPOINT_FORMAT} ({found})")
        check_same_training(self.config, state["config"], TRAINING_FIELDS)
        if len(state["rng"]) != self.world:
            raise ValueError(f"the checkpoint was written by {len(state['rng'])} process(es); this run has {self.world}")
        self.model.load_state_dict(state["model"])
        self.opt_energy.load_state_dict(state["opt_energy"])
        self.opt_generator.load_state_dict(state["opt_generator"])
        self.rng.set_state(state["rng"][self.rank])
        self.iteration = int(state["iteration"])
        self.refined = int(state["refined"])
        if self.refined > 0 and self.iteration < self.config.iters:
            raise ValueError(
                f"the checkpoint's run finished its {self.iteration} iterations and began refining the energy; "
                f"it cannot go on to iters={self.config.iters} (start a new run for a longer one)"
            )
        self.history = [(int(i), float(b)) for i, b in state["history"]]

    # ------------------------------------------------------------------- loop
    def run(self, progress: bool = False) -> GEBM:
        """Train ``config.iters`` iterations, then ``config.refine_steps`` energy refinement steps,
        checkpointing every ``checkpoint_every`` iterations (or refinement steps) and at the end."""
        from tqdm.auto import tqdm

        cfg = self.config
        self.model.train()
        start = time.perf_counter()
        total = cfg.iters + cfg.refine_steps
        bar = tqdm(total=total, initial=self.iteration + self.refined, disable=not progress or self.rank != 0, desc="GEBM",
                   unit="it")

        def after_step(done: int, phase: str, bound: float) -> None:
            self.history.append((self.iteration + self.refined, bound))
            bar.update(1)
            if done % 10 == 0:
                bar.set_postfix(phase=phase, kale=f"{bound:.3f}", c=f"{self.model.log_partition.item():.2f}", refresh=False)
            if done % cfg.checkpoint_every == 0 and self.iteration + self.refined < total:
                self.save()

        while self.iteration < cfg.iters:
            bound = self.iterate()
            after_step(self.iteration, "train", bound)
        self.model.generator.eval()  # refine against the base as it is sampled (batch norm's running statistics)
        while self.refined < cfg.refine_steps:
            # the learning rate decays linearly to 0 over the refinement, so the energy settles
            # instead of ending on one noisy step (a function of the step count: resumes exactly)
            for group in self.opt_energy.param_groups:
                group["lr"] = cfg.lr_energy * (1.0 - self.refined / cfg.refine_steps)
            bound = self.energy_step(cfg.refine_penalty)
            self.refined += 1
            after_step(self.refined, "refine", bound)
        bar.close()
        self.train_seconds = time.perf_counter() - start
        self.save()
        return self.model


def train(config: GEBMConfig, out: str | Path | None = None, resume: bool = False, progress: bool = False) -> Trainer:
    """Build a :class:`Trainer`, resume it from OUT/checkpoint.pt when asked, and run it."""
    return training.train(Trainer(config, out), resume, progress)


def load_config(path: str | Path) -> GEBMConfig:
    """The (resolved) configuration a checkpoint (file, or the folder holding checkpoint.pt) was trained with."""
    return saved_config(read_checkpoint(path, "gebm"), GEBMConfig)


def load_model(path: str | Path, device: str = "cpu") -> tuple[GEBM, GEBMConfig, int]:
    """(model in eval mode, its configuration, iterations trained) from a checkpoint file or folder."""
    state = read_checkpoint(path, "gebm")
    config = saved_config(state, GEBMConfig)
    model = build_networks(tuple(state["data_shape"]), config.latent_dim, config.width)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config, int(state["iteration"])
