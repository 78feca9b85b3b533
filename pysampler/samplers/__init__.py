"""Samplers: one file per algorithm; each a small config with ``init`` and a pure ``step``."""

from .adaptation import DualAveraging
from .base import Sampler, State, StepInfo
from .hmc import HMC, leapfrog
from .kinetic import KineticLangevin
from .mala import MALA
from .ula import ULA

__all__ = ["Sampler", "State", "StepInfo", "ULA", "MALA", "KineticLangevin", "HMC", "DualAveraging", "leapfrog"]
