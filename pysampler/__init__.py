"""pysampler: a sampler engine for energy-based and diffusion generative models in PyTorch.

A *target* says what to sample (an unnormalised density exp(-U)), a *sampler* how to move
(ULA, MALA, kinetic Langevin, HMC, diffusion posterior steps), a *backend* where the
arithmetic runs (the plain-PyTorch reference, C++, and later Triton and CUDA). Every backend
draws its noise from one counter-based Philox stream (:mod:`pysampler.rng`).

    >>> import torch, pysampler as ps
    >>> res = ps.sample(lambda x: 0.5 * x.square().sum(1), torch.zeros(64, 2), ps.MALA(0.5), 100)
    >>> res.x.shape
    torch.Size([64, 2])
"""

from . import checkpoint, diagnostics, diffusion, rng
from .backends import available_backends
from .replay import ReplayBuffer
from .samplers import HMC, MALA, ULA, DualAveraging, KineticLangevin, Sampler, State, StepInfo
from .sampling import SampleResult, sample
from .structure import StateLayout
from .targets import EnergyTarget, Gaussian, GaussianMixture, LatentTarget, MLPEnergy, ReparamTarget, Target, gmm25

__version__ = "0.1.0"

__all__ = [
    "sample",
    "SampleResult",
    "available_backends",
    "Target",
    "EnergyTarget",
    "LatentTarget",
    "ReparamTarget",
    "StateLayout",
    "Gaussian",
    "GaussianMixture",
    "MLPEnergy",
    "gmm25",
    "Sampler",
    "State",
    "StepInfo",
    "ULA",
    "MALA",
    "KineticLangevin",
    "HMC",
    "DualAveraging",
    "ReplayBuffer",
    "checkpoint",
    "rng",
    "diffusion",
    "diagnostics",
]
