"""Benchmark session plumbing: the shared record of results, the summary table, --bench-save."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from . import machine, suite
from .report import BenchSession
from .step_report import StepSession, write_summary

RESULTS_DIR = Path(__file__).parent / "results"

_KEY = pytest.StashKey[BenchSession]()
_STEP_KEY = pytest.StashKey[StepSession]()  # bench/test_step_kernels.py


def pytest_addoption(parser):
    parser.addoption(
        "--bench-save", action="store_true", default=False,
        help="write the pysampler benchmark summary as JSON to bench/results/",
    )
    parser.addoption(
        "--bench-json", default=None, metavar="PATH",
        help="write the side-by-side table of every workload and provider (bench/suite.py) as JSON to PATH",
    )


THREADS_ENV = "PYSAMPLER_BENCH_THREADS"


def pytest_configure(config):
    threads = os.environ.get(THREADS_ENV)
    if threads:  # e.g. 1 on a loaded machine, where OpenMP threads waiting on a busy core stall
        torch.set_num_threads(int(threads))
    config.stash[_KEY] = BenchSession(load_start=machine.load_average())
    config.stash[_STEP_KEY] = StepSession(load_start=machine.load_average())


@pytest.fixture(scope="session")
def bench_session(request) -> BenchSession:
    return request.config.stash[_KEY]


@pytest.fixture(scope="session")
def step_session(request) -> StepSession:
    return request.config.stash[_STEP_KEY]


def _suite_summary(tr, config) -> None:
    """The side-by-side table of everything measured (markdown), and its JSON with --bench-json."""
    chains, steps = config.stash.get(_KEY, None), config.stash.get(_STEP_KEY, None)
    if steps is not None:
        steps.finish()
    results = suite.collect(chains.rows if chains else [], steps.rows if steps else [])
    if not results:
        return
    tr.section("pysampler suite: every workload and provider; vs best peer = this throughput / the fastest peer's")
    for line in suite.markdown(results).splitlines():
        tr.write_line(line)
    path = config.getoption("--bench-json")
    if path:
        device = chains.device if chains and chains.rows else steps.device
        settings = {k: v for k, v in os.environ.items() if k.startswith("PYSAMPLER_BENCH_")}
        tr.write_line(f"saved {suite.write_json(results, path, device, settings)}")


def _fmt_rate(v: float) -> str:
    return f"{v / 1e6:,.2f} M" if v >= 1e6 else f"{v / 1e3:,.1f} k"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    _suite_summary(terminalreporter, config)
    write_summary(  # the step-op table (and its JSON with --bench-save); nothing when no step op ran
        terminalreporter, config.stash.get(_STEP_KEY, None), save=config.getoption("--bench-save"),
        results_dir=RESULTS_DIR, load_end=machine.load_average(),
    )
    session = config.stash.get(_KEY, None)
    if session is None or not session.rows:
        return
    tr = terminalreporter
    load_end = machine.load_average()
    tr.section("pysampler throughput: chain-steps/s from the mean time; vs eager = eager mean / this mean, same session")
    tr.write_line(
        f"scale={session.scale:g}  device={session.device}  torch={torch.__version__}  "
        f"threads={torch.get_num_threads()}  cpus={os.cpu_count()}  "
        f"loadavg start={session.load_start} end={load_end}"
    )
    header = (
        f"{'workload':<9}{'implementation':<24}{'chains':>8}{'steps':>7}{'rounds':>7}"
        f"{'mean s':>10}{'min s':>10}{'chain-steps/s':>16}{'vs eager':>10}"
    )
    tr.write_line(header)
    tr.write_line("-" * len(header))
    for r in session.rows:
        ratio = f"{r.ratio_vs_eager:.2f}x" if r.ratio_vs_eager is not None else "-"
        name = r.implementation + (f" ({r.backend})" if r.implementation.endswith("auto") and r.backend else "")
        tr.write_line(
            f"{r.workload:<9}{name:<24}{r.n_chains:>8}{r.n_steps:>7}{r.rounds:>7}"
            f"{r.mean_s:>10.3f}{r.min_s:>10.3f}{_fmt_rate(r.chain_steps_per_s):>16}{ratio:>10}"
        )
    if config.getoption("--bench-save"):
        RESULTS_DIR.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = RESULTS_DIR / f"{stamp}-{session.device}-scale{session.scale:g}.json"
        payload = {
            "scale": session.scale,
            "device": session.device,
            "machine": machine.machine_info(session.device),
            "loadavg_start": session.load_start,
            "loadavg_end": load_end,
            "rows": [asdict(r) for r in session.rows],
        }
        path.write_text(json.dumps(payload, indent=2) + "\n")
        tr.write_line(f"saved {path}")
