"""``pysampler bench``: the whole benchmark suite in one command, a side-by-side table and a plot.

    pysampler bench --quick                          # smallest sizes, under 3 minutes on 2 CPU cores
    pysampler bench --device cuda --json run.json    # every workload at every size, on the GPU
    pysampler bench -k "W2 or W3" --plot w23.png     # a subset (pytest's -k on the case ids)
    pysampler bench --quick -- --benchmark-storage=bench/baselines --benchmark-compare=0001 \
        --benchmark-compare-fail=mean:25%            # after "--": passed to pytest (the regression guard)

It runs the pytest-benchmark files of this folder (bench/) in a child pytest process with the
settings below as ``PYSAMPLER_BENCH_*`` variables, so the numbers are the same ones
``python -m pytest bench --benchmark-only`` measures, then prints the markdown table of
:mod:`bench.suite` (workload, size, provider, throughput, vs eager, vs best peer) on stdout and
writes the plot of throughput against problem size. pytest's own output goes to a log file; one
progress line per case goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import suite

__all__ = ["add_parser", "run", "QUICK", "FULL", "bench_dir"]

#: --quick: the smallest size of every workload, one timed round, no size sweep. Chains x 0.02 (W1
#: 1311, W2 256, W3 328, W4 16 chains; 10 steps each), step ops at 64x128 only, W5 at 16 images of a
#: width-16 U-Net.
QUICK = {
    "PYSAMPLER_BENCH_SCALE": "0.02",
    "PYSAMPLER_BENCH_SWEEP": "0",
    "PYSAMPLER_BENCH_ROUNDS": "1",
    "PYSAMPLER_BENCH_STEP_SIZES": "small",
    "PYSAMPLER_BENCH_STEP_BUDGET": "0.2",
    "PYSAMPLER_BENCH_DDGAN_IMAGES": "16",
    "PYSAMPLER_BENCH_DDGAN_WIDTH": "16",
}
#: the full run: canonical sizes plus the chain-count sweep (W1-W4 at 1/64 and 1/8 of their chains)
FULL = {"PYSAMPLER_BENCH_SWEEP": "1"}
_CASE_LINE = re.compile(r"::(test_\w+\[[^\]]*\]|test_\w+) (PASSED|SKIPPED|FAILED|ERROR)")


def bench_dir() -> Path:
    """The folder of the benchmark files (installed as ``pysampler.bench``)."""
    return Path(__file__).resolve().parent


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench", help="run the benchmark suite: every workload against its peers, a table and a plot",
        description="Run pysampler's benchmark suite (bench/: step kernels, W1-W5) with every provider present "
        "(pysampler backends, eager PyTorch, torch.compile, JAX jit, BlackJAX, torchebm, posteriors; absent ones are "
        "skipped), print a markdown table (workload, size, provider, throughput, ratio to eager, ratio to the best peer) "
        "and write a PNG plot of throughput against problem size.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="smallest sizes, one round: under 3 minutes on 2 CPU cores")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda runs are synchronised before each clock stop)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the results (with machine and versions) here")
    p.add_argument("--plot", default="pysampler-bench.png", metavar="PATH", help="the throughput plot ('' to skip)")
    p.add_argument("-k", dest="select", default=None, metavar="EXPR", help="only the cases pytest -k EXPR selects")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--log", default=None, metavar="PATH", help="pytest's full output (default: a temporary file)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, metavar="-- PYTEST_ARGS",
                   help="after --: more pytest / pytest-benchmark options, e.g. --benchmark-save=NAME or "
                   "--benchmark-compare=NUM --benchmark-compare-fail=mean:25%%")
    p.set_defaults(run=run)


def _check_device(device: str) -> str:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"--device must be cpu or cuda[:N]; got {device!r}") from err
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda[:N]; got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device here")
    return str(dev)


def run(args: argparse.Namespace) -> int:
    device = _check_device(args.device)
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1; got {args.threads}")
    env = {**os.environ, **(QUICK if args.quick else FULL), "PYSAMPLER_BENCH_DEVICE": device}
    if args.threads is not None:
        env["PYSAMPLER_BENCH_THREADS"] = str(args.threads)
    scratch = tempfile.TemporaryDirectory(prefix="pysampler-bench-")
    with scratch:
        json_path = Path(scratch.name) / "results.json"  # copied to --json when the run succeeds
        log_path = Path(args.log) if args.log else Path(scratch.name) / "pytest.log"
        command = [sys.executable, "-m", "pytest", str(bench_dir()), "--benchmark-only", "-v", "-p", "no:cacheprovider",
                   "--rootdir", str(bench_dir()), f"--bench-json={json_path}"]
        if args.select:
            command += ["-k", args.select]
        extra = list(args.pytest_args or [])
        if extra and extra[0] == "--":
            extra = extra[1:]
        if extra and not extra[0].startswith("-"):
            raise ValueError(f"after --, pass pytest options (starting with -); got {extra[0]!r}")
        command += extra
        mode = "quick" if args.quick else "full"
        print(f"pysampler bench ({mode}, {device}): running {bench_dir()} ...", file=sys.stderr)
        start = time.perf_counter()
        code = _run_pytest(command, env, log_path)
        seconds = time.perf_counter() - start
        if code != 0 or not json_path.exists():
            tail = log_path.read_text(errors="replace")[-4000:] if log_path.exists() else ""
            print(tail, file=sys.stderr)
            print(f"pysampler bench: pytest exited with {code} (log: {log_path if args.log else 'above'})", file=sys.stderr)
            return code or 1
        meta, results = suite.read_json(json_path)
        machine = meta["machine"]
        print(f"pysampler bench ({mode}): {machine['device_name']} ({device}), torch {machine['torch']}, "
              f"{machine['torch_threads']} threads, {machine['date']}, {seconds:.0f} s\n")
        print(suite.markdown(results))
        print("\nThe fastest pysampler provider against the best peer, per workload and size:\n")
        print(suite.leaders_markdown(results))
        behind = suite.slower_than_best_peer(results)
        if behind:
            print("\nnot ahead of the best peer: " + "; ".join(f"{w} ({s})" for w, s in behind))
        if args.plot:
            title = f"pysampler bench ({mode}) on {machine['device_name']}, torch {machine['torch']}"
            print(f"\nplot: {suite.plot(results, args.plot, title)}")
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(json_path, args.json)
            print(f"results: {args.json}")
    return 0


def _run_pytest(command: list[str], env: dict[str, str], log_path: Path) -> int:
    """Run pytest, its output to ``log_path``, a line per finished case to stderr; its exit code."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log, subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        for line in proc.stdout:
            log.write(line)
            match = _CASE_LINE.search(line)
            if match:
                print(f"  {match.group(2).lower():<8}{match.group(1)}", file=sys.stderr, flush=True)
    return proc.returncode
