"""Generalized Energy-Based Models (Arbel, Zhou & Gretton, ICLR 2021) trained with KALE and
sampled through pysampler's public API (``ps.LatentTarget`` + ``ps.sample``).

* :mod:`.model`: the GEBM (generator, energy, log-partition scalar), the KALE losses, the gradient penalty;
* :mod:`.train`: the alternating schedule, atomic checkpoints with bit-identical resume, DDP;
* :mod:`.evaluate`: base and GEBM samples, the side-by-side metrics and pictures.

The command line is ``pysampler train gebm`` / ``pysampler sample gebm`` (:mod:`pysampler.cli`).
"""

from .evaluate import SamplerSettings, evaluate, make_sampler, sample_base, sample_gebm, sample_metrics
from .model import GEBM, Critic, build_networks, energy_loss, generator_loss, gradient_penalty
from .train import CHECKPOINT_NAME, GEBMConfig, Trainer, train

__all__ = [
    "GEBM", "Critic", "build_networks", "energy_loss", "generator_loss", "gradient_penalty", "GEBMConfig", "Trainer", "train",
    "CHECKPOINT_NAME", "SamplerSettings", "make_sampler", "sample_base", "sample_gebm", "sample_metrics", "evaluate",
]
