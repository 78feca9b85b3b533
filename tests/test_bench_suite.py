"""The benchmark suite's harness: the side-by-side table (bench/suite.py) and ``pysampler bench``.

The suite's numbers are never asserted here (timing does not belong in unit tests); what is
checked is that the harness runs end to end on a fresh install and reports what it measured.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from pysampler.bench import suite
from pysampler.bench.command import QUICK
from pysampler.cli import main


def _result(workload, provider, throughput, size="8 chains × 2 steps"):
    return suite.Result(workload=workload, description="d", provider=provider, size=size, problem_size=8,
                        unit="chain-steps/s", throughput=throughput, seconds=16 / throughput)


def test_rank_against_eager_and_the_best_peer():
    rows = suite.rank([
        _result("W1", "eager", 10.0), _result("W1", "jax-jit", 40.0), _result("W1", "pysampler-cpp", 20.0),
        _result("W1", "pysampler-cpp-fused", 80.0), _result("W5", "generator-x4", 50.0), _result("W5", "eager", 25.0),
        _result("W5", "pysampler-auto", 20.0),
    ])
    by = {(r.workload, r.provider): r for r in rows}
    assert by["W1", "jax-jit"].best_peer == "jax-jit" and by["W1", "jax-jit"].ratio_vs_best_peer == 1.0
    assert by["W1", "pysampler-cpp"].ratio_vs_eager == 2.0 and by["W1", "pysampler-cpp"].ratio_vs_best_peer == 0.5
    assert by["W1", "pysampler-cpp-fused"].ratio_vs_best_peer == 2.0
    # a floor is neither a peer nor pysampler: the best peer of W5 is the eager loop
    assert by["W5", "pysampler-auto"].best_peer == "eager" and by["W5", "pysampler-auto"].ratio_vs_best_peer == 0.8
    assert suite.slower_than_best_peer(rows) == [("W5", "8 chains × 2 steps")]
    table = suite.markdown(rows)
    assert "| **pysampler-cpp-fused** | **80 chain-steps/s** | **8.00x** | **2.00x** |" in table
    assert "generator-x4 (floor)" in table and "1.00x (best peer)" in table
    leaders = suite.leaders_markdown(rows).splitlines()
    assert leaders[2:] == [
        "| W1 | 8 chains × 2 steps | pysampler-cpp-fused | 80 chain-steps/s | jax-jit | 40 chain-steps/s | **2.00x** | 8.00x |",
        "| W5 | 8 chains × 2 steps | pysampler-auto | 20 chain-steps/s | eager | 25 chain-steps/s | 0.80x | 0.80x |",
    ]


def test_sizes_rank_separately_and_pipes_are_escaped():
    rows = suite.rank([_result("W3", "eager", 1.0, "a"), _result("W3", "pysampler-cpp", 3.0, "a"),
                       _result("W3", "eager", 2.0, "b"), _result("W3", "pysampler-cpp", 3.0, "b")])
    assert [r.ratio_vs_eager for r in rows] == [1.0, 3.0, 1.0, 1.5]
    rows[0].description = "MLP + ½|x|²"
    assert "½\\|x\\|²" in suite.markdown(rows)


def test_json_round_trip(tmp_path):
    rows = suite.rank([_result("W1", "eager", 10.0), _result("W1", "pysampler-cpp", 30.0)])
    path = suite.write_json(rows, tmp_path / "r.json", "cpu", {"PYSAMPLER_BENCH_SCALE": "0.02"})
    meta, back = suite.read_json(path)
    assert back == rows
    assert meta["machine"]["torch"] and meta["machine"]["device"] == "cpu" and meta["settings"]["PYSAMPLER_BENCH_SCALE"]


@pytest.mark.parametrize(("argv", "message"), [
    (["bench", "--device", "tpu"], "--device must be cpu or cuda"),
    (["bench", "--threads", "0"], "--threads must be >= 1"),
])
def test_bench_command_errors(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bench_quick_end_to_end(tmp_path):
    """``pysampler bench --quick`` on a fresh machine: every workload measured, the table, the JSON, the plot."""
    json_path, plot_path = tmp_path / "quick.json", tmp_path / "quick.png"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSAMPLER_BENCH_")}
    proc = subprocess.run(
        [sys.executable, "-m", "pysampler.cli", "bench", "--quick", "--json", str(json_path), "--plot", str(plot_path),
         "--log", str(tmp_path / "pytest.log")],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| workload | size | provider | throughput | vs eager | vs best peer |" in proc.stdout
    meta, results = suite.read_json(json_path)
    assert meta["settings"] == {**QUICK, "PYSAMPLER_BENCH_DEVICE": "cpu"}
    workloads = {r.workload for r in results}
    assert {"W1", "W2", "W3", "W4", "W5"} <= workloads
    assert {f"step:{op}" for op in ("ula_step", "mala_accept", "kinetic_oba", "posterior_sample")} <= workloads
    for r in results:
        assert math.isfinite(r.throughput) and r.throughput > 0, r
        assert r.ratio_vs_eager is not None and r.best_peer is not None, r
    assert all(r.size == "64x128" for r in results if r.workload.startswith("step:"))
    providers = {r.provider for r in results}
    assert {"eager", "pysampler-torch", "pysampler-auto"} <= providers
    assert plot_path.stat().st_size > 10_000
    assert json.loads(json_path.read_text())["machine"]["cpu_count"] == os.cpu_count()
