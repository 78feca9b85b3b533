"""Training a denoising diffusion GAN (dissertation 004, Algorithm 1), with checkpoints that resume bit for bit.

One iteration, on a batch of data x_0:

1. t ~ U{1..T} per sample; the real pair (x_{t-1}, x_t) from the forward process
   (``VPSchedule.q_sample_pair``);
2. z ~ N(0, I); x'_0 = G(x_t, z, t); x'_{t-1} ~ q(x_{t-1} | x_t, x'_0) (``ps.diffusion.posterior_sample``);
3. a discriminator step on the non-saturating loss of (x_{t-1}, x_t) against (x'_{t-1}, x_t), with
   the R1 penalty (γ/2)·E|∇ D|² on the real pair every ``r1_every`` iterations (lazy regularisation,
   Karras et al. 2020: its weight multiplied by the interval, so the strength does not depend on it);
4. a generator step on E[softplus(-D(x'_{t-1}, x_t, t))] through the same x'_{t-1} (discriminator frozen);
5. the EMA of the generator.

Learning rates follow a cosine decay to ``lr_min_ratio`` of their start over ``iters`` (the
dissertation's schedule, 6.4.7), so a run's schedule is fixed by its ``iters``.

Randomness: the data batches and t come from one ``torch.Generator``; every Gaussian draw (the
forward pair, z, the posterior) from pysampler's Philox stream, whose (seed, offset) tensor is
saved with the networks, the Adam states, the EMA and the iteration: a run resumed from a
checkpoint ends with the same parameters as an uninterrupted one, bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import pysampler as ps
from pysampler.models import data as datasets
from pysampler.models import training
from pysampler.models.ddgan.model import DDGAN, build_model, discriminator_loss, generator_loss, r1_penalty
from pysampler.models.training import (
    CheckpointedTrainer,
    check_same_training,
    config_dict,
    read_checkpoint,
    saved_config,
)

__all__ = ["DDGANConfig", "Trainer", "train", "load_config", "load_model", "TRAINING_FIELDS"]

CHECKPOINT_FORMAT = 1

# Defaults that depend on the kind of data; a DDGANConfig field left as None takes them. Toy: the
# dissertation's networks (3 x 512 MLPs); 48k iterations of batch 64 (the paper: 50k of batch 512),
# about 9 minutes per model on a 2-core CPU (11 ms per iteration). Measured there (seed 0): 25/25 modes and 0.88 of the
# samples within 3σ after 48k iterations, 0.77 after 32k, 0.39-0.58 after 12-16k; at equal time
# batch 64 with Adam 1e-3 beat batch 128-512, 5e-4 and 2e-3, latent 8, data scaled to unit
# variance, and no R1 (README, "Train a denoising diffusion GAN"). Images: a small U-Net and the
# paper's CIFAR-10 / StackedMNIST optimiser settings (Table 6.8) and R1 γ, sized for a GPU.
_DEFAULTS = {
    "toy": dict(iters=48000, latent_dim=2, width=512, batch_size=64, lr_d=1e-3, lr_g=1e-3, ema=0.99, r1_gamma=0.05),
    "image": dict(iters=20000, latent_dim=100, width=32, batch_size=64, lr_d=1e-4, lr_g=1.6e-4, ema=0.999, r1_gamma=0.05),
}

#: fields that define the training run; a resumed run must agree on them
TRAINING_FIELDS = (
    "data", "T", "iters", "latent_dim", "width", "batch_size", "lr_d", "lr_g", "betas", "lr_min_ratio", "ema", "r1_gamma",
    "r1_every", "beta_min", "beta_max", "seed",
)


@dataclass
class DDGANConfig:
    """Settings of a DDGAN run. Fields left None take the defaults for the data's kind (toy: 48000
    iterations, latent 2, MLPs of width 512, batch 64, Adam 1e-3 for both, EMA 0.99; images: 20000
    iterations, latent 100, U-Net of width 32, batch 64, Adam 1e-4 (D) / 1.6e-4 (G), EMA 0.999);
    both R1 γ 0.05."""

    data: str = "gaussians25"
    T: int = 4  #: diffusion steps
    iters: int | None = None
    latent_dim: int | None = None
    width: int | None = None
    batch_size: int | None = None
    lr_d: float | None = None
    lr_g: float | None = None
    betas: tuple[float, float] = (0.5, 0.9)  #: Adam's, both optimisers (Table 6.8)
    lr_min_ratio: float = 0.1  #: the cosine decay's final fraction of each learning rate
    ema: float | None = None  #: decay of the generator's moving average
    r1_gamma: float | None = None  #: γ of the R1 penalty (γ/2)·E|∇D|² on real pairs; 0 = off
    r1_every: int = 1  #: iterations between R1 penalties (lazy regularisation)
    beta_min: float = 0.1  #: the VP schedule (eq. 6.14)
    beta_max: float = 20.0
    seed: int = 0
    device: str = "cpu"
    backend: str = "auto"  #: pysampler backend of the diffusion draws
    checkpoint_every: int = 500

    def resolved(self, kind: str) -> DDGANConfig:
        """A copy with the None fields set to the defaults for ``kind`` ("toy" or "image"), checked."""
        filled = dataclasses.replace(self, **{k: v for k, v in _DEFAULTS[kind].items() if getattr(self, k) is None})
        filled.betas = tuple(float(b) for b in filled.betas)
        for name in ("T", "iters", "latent_dim", "width", "batch_size", "r1_every", "checkpoint_every"):
            value = getattr(filled, name)
            low = 0 if name == "iters" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
        for name in ("lr_d", "lr_g"):
            if not getattr(filled, name) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(filled, name)}")
        if not 0 <= filled.lr_min_ratio <= 1:
            raise ValueError(f"lr_min_ratio must be in [0, 1]; got {filled.lr_min_ratio}")
        if not 0 <= filled.ema < 1:
            raise ValueError(f"ema must be in [0, 1); got {filled.ema}")
        if not filled.r1_gamma >= 0:
            raise ValueError(f"r1_gamma must be >= 0; got {filled.r1_gamma}")
        if len(filled.betas) != 2 or not all(0 <= b < 1 for b in filled.betas):
            raise ValueError(f"betas must be two numbers in [0, 1); got {filled.betas}")
        ps.diffusion.VPSchedule(filled.T, filled.beta_min, filled.beta_max)  # checks the schedule's settings
        return filled


class Trainer(CheckpointedTrainer):
    """The DDGAN training loop over a :class:`DDGANConfig`.

    >>> trainer = Trainer(DDGANConfig(data="gaussians25"), out="runs/g25")  # doctest: +SKIP
    >>> trainer.run(progress=True)                                           # doctest: +SKIP
    """

    def __init__(self, config: DDGANConfig, out: str | Path | None = None, dataset: datasets.Dataset | None = None):
        self.dataset = dataset if dataset is not None else datasets.load(config.data)
        self.config = cfg = config.resolved(self.dataset.kind)
        self.out = None if out is None else Path(out)
        self.device = torch.device(cfg.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = build_model(self.dataset.shape, cfg.latent_dim, cfg.T, cfg.width, cfg.beta_min, cfg.beta_max)
        self.model: DDGAN = model.to(self.device)
        # fused Adam: one kernel per parameter group instead of a dozen per tensor; on the toy MLPs the
        # per-tensor loop was a quarter of an iteration (2-core CPU: 17.6 -> 11.0 ms per iteration)
        self.opt_d = torch.optim.Adam(self.model.discriminator.parameters(), lr=cfg.lr_d, betas=cfg.betas, fused=True)
        self.opt_g = torch.optim.Adam(self.model.generator.parameters(), lr=cfg.lr_g, betas=cfg.betas, fused=True)
        self.rng = torch.Generator().manual_seed(cfg.seed)  # batches and steps t
        # the Philox stream of every Gaussian draw: (seed, offset) on the device, advanced there
        self.noise = torch.tensor([cfg.seed, 0], dtype=torch.int64, device=self.device)
        self.iteration = 0
        self.history: list[tuple[int, float, float]] = []  # (iteration, D loss, G loss)

    # ------------------------------------------------------------------ steps
    def _normal(self, shape: tuple[int, ...]) -> torch.Tensor:
        x = ps.rng.normal(self.noise[0], self.noise[1], shape, device=self.device)
        self.noise[1] += x.numel()
        return x

    def _learning_rates(self) -> None:
        cfg = self.config
        decay = 0.5 * (1.0 + math.cos(math.pi * self.iteration / max(cfg.iters, 1)))
        factor = cfg.lr_min_ratio + (1.0 - cfg.lr_min_ratio) * decay
        for opt, lr in ((self.opt_d, cfg.lr_d), (self.opt_g, cfg.lr_g)):
            for group in opt.param_groups:
                group["lr"] = lr * factor

    def iterate(self) -> tuple[float, float]:
        """One iteration of Algorithm 1; returns (discriminator loss without R1, generator loss)."""
        cfg, model = self.config, self.model
        self._learning_rates()
        n = cfg.batch_size
        x0 = self.dataset.batch(n, self.rng).to(self.device)
        t = torch.randint(1, cfg.T + 1, (n,), generator=self.rng).to(self.device)
        x_prev, x_t = model.schedule.q_sample_pair(x0, t, rng=self.noise, backend=cfg.backend)
        self.noise[1] += 2 * x0.numel()
        z = self._normal((n, cfg.latent_dim))
        fake_prev = model.denoise(x_t, t, z, self.noise, backend=cfg.backend)
        self.noise[1] += x_t.numel()

        # discriminator: real pair against the generated one (detached), R1 on the real x_{t-1}
        penalise = cfg.r1_gamma > 0 and self.iteration % cfg.r1_every == 0
        x_prev.requires_grad_(penalise)
        real_logits = model.discriminator(x_prev, x_t, t)
        loss_d = discriminator_loss(real_logits, model.discriminator(fake_prev.detach(), x_t, t))
        total_d = loss_d
        if penalise:
            total_d = total_d + 0.5 * cfg.r1_gamma * cfg.r1_every * r1_penalty(real_logits, x_prev)
        self.opt_d.zero_grad(set_to_none=True)
        total_d.backward()
        self.opt_d.step()

        # generator: through the same x'_{t-1} and the updated discriminator, whose parameters stay out of it
        model.discriminator.requires_grad_(False)
        try:
            loss_g = generator_loss(model.discriminator(fake_prev, x_t, t))
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
        finally:
            model.discriminator.requires_grad_(True)
        self.opt_g.step()
        model.update_ema(cfg.ema)
        self.iteration += 1
        return float(loss_d.detach()), float(loss_g.detach())

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "kind": "ddgan",
            "config": config_dict(self.config),
            "data_shape": list(self.dataset.shape),
            "iteration": self.iteration,
            "model": self.model.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "rng": self.rng.get_state(),
            "noise": self.noise.cpu().clone(),
            "history": [list(h) for h in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "ddgan" or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a DDGAN checkpoint of format {CHECKPOINT_FORMAT} "
                             f"(kind {state.get('kind')!r}, format {state.get('format')!r})")
        check_same_training(self.config, state["config"], TRAINING_FIELDS)
        self.model.load_state_dict(state["model"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.rng.set_state(state["rng"])
        self.noise.copy_(state["noise"])
        self.iteration = int(state["iteration"])
        self.history = [(int(i), float(d), float(g)) for i, d, g in state["history"]]

    # ------------------------------------------------------------------- loop
    def run(self, progress: bool = False, desc: str = "DDGAN") -> DDGAN:
        """Train up to ``config.iters`` iterations, checkpointing every ``checkpoint_every`` and at the end."""
        from tqdm.auto import tqdm

        cfg = self.config
        self.model.train()
        start = time.perf_counter()
        bar = tqdm(total=cfg.iters, initial=self.iteration, disable=not progress, desc=desc, unit="it")
        while self.iteration < cfg.iters:
            loss_d, loss_g = self.iterate()
            self.history.append((self.iteration, loss_d, loss_g))
            bar.update(1)
            if self.iteration % 10 == 0:
                bar.set_postfix(loss_d=f"{loss_d:.3f}", loss_g=f"{loss_g:.3f}", refresh=False)
            if self.iteration % cfg.checkpoint_every == 0 and self.iteration < cfg.iters:
                self.save()
        bar.close()
        self.train_seconds = time.perf_counter() - start
        self.save()
        return self.model


def train(config: DDGANConfig, out: str | Path | None = None, resume: bool = False, progress: bool = False) -> Trainer:
    """Build a :class:`Trainer`, resume it from OUT/checkpoint.pt when asked, and run it."""
    return training.train(Trainer(config, out), resume, progress)


def load_config(path: str | Path) -> DDGANConfig:
    """The (resolved) configuration a checkpoint (file, or the folder holding checkpoint.pt) was trained with."""
    return saved_config(read_checkpoint(path, "ddgan"), DDGANConfig)


def load_model(path: str | Path, device: str = "cpu") -> tuple[DDGAN, DDGANConfig, int]:
    """(model in eval mode, its configuration, iterations trained) from a checkpoint file or folder."""
    state = read_checkpoint(path, "ddgan")
    config = saved_config(state, DDGANConfig)
    model = build_model(tuple(state["data_shape"]), config.latent_dim, config.T, config.width, config.beta_min,
                        config.beta_max)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config, int(state["iteration"])
