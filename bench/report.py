"""Results of a benchmark session (the chain workloads W1-W5): one Row per benchmark, the eager baseline times."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Row:
    workload: str
    implementation: str
    device: str
    n_chains: int
    n_steps: int
    rounds: int
    mean_s: float
    min_s: float
    chain_steps_per_s: float
    ratio_vs_eager: float | None
    eager_mean_s: float | None = None
    backend: str | None = None
    description: str = ""


@dataclass
class BenchSession:
    """What one pytest session measured: eager baseline times and one Row per benchmark."""

    scale: float = 1.0
    device: str = "cpu"
    #: (workload, chains, device) -> mean seconds of the eager baseline, measured in this session
    baseline_s: dict[tuple[str, int, str], float] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    load_start: tuple[float, float, float] | None = None
