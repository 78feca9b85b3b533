"""Throughput of every implementation on every canonical workload, in chain-steps per second.

Each benchmark also reports its ratio to the eager PyTorch loop (bench/baselines.py) on the
same workload, measured in the same session: ratio = eager mean time / this mean time
(> 1 is faster than the loop a user would write). The eager case of each workload is
parametrised first; when it was deselected (``-k``), it is measured on the spot.

Run: ``python -m pytest bench/ --benchmark-only`` (see bench/README.md).
"""

from __future__ import annotations

import math
import os
import time

import pytest
import torch

from .implementations import BASELINE, IMPLEMENTATIONS, Unavailable
from .report import BenchSession, Row
from .workloads import Workload, bench_scale, measured_workloads

DEVICE_ENV = "PYSAMPLER_BENCH_DEVICE"
ROUNDS_ENV = "PYSAMPLER_BENCH_ROUNDS"
#: at most this many timed rounds per benchmark (after one warm-up round) ...
MAX_ROUNDS = int(os.environ.get(ROUNDS_ENV, "3"))
#: ... and fewer when the warm-up round shows they would take longer than this in total (>= 1 round)
ROUND_BUDGET_S = 120.0

SCALE = bench_scale()
DEVICE = torch.device(os.environ.get(DEVICE_ENV, "cpu"))
WORKLOADS = measured_workloads(SCALE)
# workload-major (each size of a workload in turn), eager first within each
CASES = [(w, i) for w in WORKLOADS for i in IMPLEMENTATIONS]
assert next(iter(IMPLEMENTATIONS)) == BASELINE


def _synced(run):
    """On CUDA, time until the device is done, not until the launches are queued."""
    if DEVICE.type != "cuda":
        return run

    def run_synced():
        out = run()
        torch.cuda.synchronize(DEVICE)
        return out

    return run_synced


def _rounds(warmup_s: float) -> int:
    return max(1, min(MAX_ROUNDS, int(ROUND_BUDGET_S // max(warmup_s, 1e-9))))


def _time_once(run) -> float:
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def _baseline_seconds(session: BenchSession, workload: Workload) -> float:
    """Mean eager time of ``workload`` in this session; measured now if it has not been yet."""
    key = (workload.name, workload.n_chains, str(DEVICE))
    if key not in session.baseline_s:
        run = _synced(IMPLEMENTATIONS[BASELINE](workload, DEVICE))
        rounds = _rounds(_time_once(run))
        session.baseline_s[key] = sum(_time_once(run) for _ in range(rounds)) / rounds
    return session.baseline_s[key]


@pytest.mark.parametrize(("workload", "impl_name"), CASES, ids=[f"{w.name}-{w.n_chains}-{i}" for w, i in CASES])
def test_throughput(benchmark, bench_session: BenchSession, workload: Workload, impl_name: str):
    bench_session.scale, bench_session.device = SCALE, str(DEVICE)
    try:
        raw_run = IMPLEMENTATIONS[impl_name](workload, DEVICE)
    except Unavailable as exc:
        pytest.skip(str(exc))
    run = _synced(raw_run)
    measuring = not benchmark.disabled
    baseline_s = None if (impl_name == BASELINE or not measuring) else _baseline_seconds(bench_session, workload)

    benchmark.group = f"{workload.name}: {workload.description}, {workload.n_chains} chains"
    # one untimed warm-up round (caches, allocator, lazy init); its time also picks the round count
    rounds = _rounds(_time_once(run)) if measuring else 1
    x = benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0)

    n_bad = int((~torch.isfinite(x.detach().reshape(x.shape[0], -1)).all(1)).sum())
    assert n_bad == 0, f"{workload.name}/{impl_name}: {n_bad} chains ended non-finite"
    if not measuring:  # --benchmark-disable: ran once as a smoke test, nothing to record
        return

    stats = benchmark.stats.stats
    mean_s = stats.mean
    if impl_name == BASELINE:
        bench_session.baseline_s[(workload.name, workload.n_chains, str(DEVICE))] = mean_s
        ratio, baseline_s = 1.0, mean_s
    else:
        ratio = baseline_s / mean_s
    rate = workload.chain_steps / mean_s
    backend = getattr(raw_run, "backend", None)
    benchmark.extra_info.update(
        workload=workload.name,
        implementation=impl_name,
        backend=backend,
        device=str(DEVICE),
        scale=SCALE,
        n_chains=workload.n_chains,
        n_steps=workload.n_steps,
        chain_steps_per_s=rate,
        ratio_vs_eager=ratio,
        eager_mean_s=baseline_s,
        torch_threads=torch.get_num_threads(),
    )
    assert math.isfinite(rate)
    bench_session.rows.append(
        Row(
            workload=workload.name, implementation=impl_name, device=str(DEVICE),
            n_chains=workload.n_chains, n_steps=workload.n_steps, rounds=rounds,
            mean_s=mean_s, min_s=stats.min, chain_steps_per_s=rate,
            ratio_vs_eager=ratio, eager_mean_s=baseline_s, backend=backend, description=workload.description,
        )
    )
