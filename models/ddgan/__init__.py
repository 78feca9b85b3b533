"""Denoising diffusion GANs (Xiao, Kreis & Vahdat, ICLR 2022; dissertation 004, chapter 6) trained and
sampled with pysampler's fused diffusion kernels (``ps.diffusion``).

* :mod:`.nets`: the toy MLPs, the AdaGN U-Net generator and the ResNet discriminator;
* :mod:`.model`: the DDGAN (generator, discriminator, EMA, schedule), its losses and R1;
* :mod:`.train`: Algorithm 1 with atomic checkpoints and bit-identical resume;
* :mod:`.evaluate`: Algorithm 2 samples, the metrics (beside a one-step GAN on 2-D data) and pictures.

The command line is ``pysampler train ddgan`` / ``pysampler sample ddgan`` (:mod:`pysampler.cli`).
"""

from .model import DDGAN, build_model, discriminator_loss, generator_loss, r1_penalty
from .train import DDGANConfig, Trainer, load_model, train

__all__ = ["DDGAN", "build_model", "discriminator_loss", "generator_loss", "r1_penalty", "DDGANConfig", "Trainer", "train",
           "load_model"]
