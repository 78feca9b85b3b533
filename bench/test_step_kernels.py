"""Time of one step op (the elementwise work of one sampler step, given the gradient), per call.

For each op in pysampler/ops.py and each size N x D (float32), in one session:

* ``eager``: the step as a hand-written PyTorch loop runs it (the reference op with torch's own
  ``torch.randn`` / ``torch.rand`` for the noise: ``pysampler.ops.<op>(..., rng=None)``);
* ``compile``: ``torch.compile`` of that same step (fullgraph, static shapes; bench/step_ops.py
  says exactly what is compiled);
* every pysampler backend available on the device that overrides the op ("triton" on CUDA,
  "cpp" on CPU for ula_step; Triton is never timed on the CPU, where it is an interpreter).

Reported per case: median time per call, GB/s (the op's bytes per element x numel / time), the
ratio to eager and to torch.compile of the same (op, size), measured in the same session (they
are parametrised first; when deselected with -k they are measured on the spot), and, for the
large sizes, the share of the device-to-device copy bandwidth measured by test_copy_bandwidth.

Timing: each call is timed in rounds of ``calls`` back-to-back calls followed by one device
synchronisation (so the launch queue cannot hide work, and the sync costs 1/calls per call);
calls alternate between two independent input sets. Compilation, Triton JIT and allocator
warm-up happen before timing. pytest-benchmark's own table shows time per call.

Run: ``python -m pytest bench/test_step_kernels.py --benchmark-only`` (see bench/README.md).
"""

from __future__ import annotations

import math
import os
import statistics
import time
import warnings

import pytest
import torch

from .step_ops import (
    SIZES,
    SIZES_ENV,
    SMALL_SIZE,
    STEP_OPS,
    backend_fn,
    backend_names,
    bind,
    compiled_eager,
    gbps,
    make_input_sets,
    mismatch,
    reference_fn,
    rng_tensor,
    selected_sizes,
)
from .step_report import BASELINES, StepRow, StepSession

DEVICE = torch.device(os.environ.get("PYSAMPLER_BENCH_DEVICE", "cpu"))
ON_CUDA = DEVICE.type == "cuda"
BUDGET_ENV = "PYSAMPLER_BENCH_STEP_BUDGET"

#: target wall time of one timed round (``calls`` back-to-back calls and one sync)
ROUND_S = 0.02 if ON_CUDA else 0.05
#: timed seconds per case: rounds = budget / round time, within [MIN_ROUNDS, MAX_ROUNDS]
BUDGET_S = float(os.environ.get(BUDGET_ENV, "1.0" if ON_CUDA else "2.0"))
MIN_ROUNDS, MAX_ROUNDS, MAX_CALLS = 3, 30, 20_000
#: a call slower than this is warm after one call; a case whose call is slower than BUDGET_S times
#: at most SLOW_CASE_S (and at least one round)
SLOW_CALL_S, SLOW_CASE_S = 1.0, 30.0
#: independent input sets the calls alternate between
N_SETS = 2
#: the copy baseline: one float32 buffer of this size copied to another (bytes read + written)
COPY_BYTES = 256 * 2**20
#: largest fraction of a backend's output elements that may differ from the reference op on the same
#: stream (see step_ops.mismatch); the baselines draw from torch's generator and are not compared
MAX_MISMATCH = 0.01

SIZE_NAMES = selected_sizes(os.environ.get(SIZES_ENV))
BACKENDS = backend_names(DEVICE)


def _implementations(op: str) -> list[str]:
    return [*BASELINES, *(b for b in BACKENDS if backend_fn(b, op, DEVICE) is not None)]


# op-major, then size; eager and compile first within each (op, size): they are the baselines
CASES = [(op, size, impl) for op in STEP_OPS for size in SIZE_NAMES for impl in _implementations(op)]


# ------------------------------------------------------------------------------------ timing


def _sync() -> None:
    if ON_CUDA:
        torch.cuda.synchronize(DEVICE)


class _Looper:
    """One call of ``fn`` on the next input set; every ``calls``-th call synchronises the device.

    pytest-benchmark times ``iterations = calls`` calls of this per round, so each round ends
    with the device idle, and reports the round's time / calls.
    """

    def __init__(self, fn, arg_sets: list[tuple], calls: int):
        self.fn, self.arg_sets, self.calls, self.i = fn, arg_sets, calls, 0

    def __call__(self):
        out = self.fn(*self.arg_sets[self.i % len(self.arg_sets)])
        self.i += 1
        if self.i % self.calls == 0:
            _sync()
        return out


def _timed(fn, args) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args)
    _sync()
    return time.perf_counter() - t0, out


def _warm_up(fn, arg_sets, compiles: bool = False) -> tuple[float, float, object]:
    """Call fn once on every input set (compiles, JITs, warms the allocator).

    Returns (first call's seconds, fastest later call's seconds, output on the first set). A call
    slower than SLOW_CALL_S (the eager reference at 16M elements on a CPU) is warm after one call,
    unless ``compiles`` (its first call includes compilation).
    """
    first_s, out0 = _timed(fn, arg_sets[0])
    if first_s > SLOW_CALL_S and not compiles:
        return first_s, first_s, out0
    later = [_timed(fn, a)[0] for a in arg_sets[1:]] or [_timed(fn, arg_sets[0])[0]]
    return first_s, min(later), out0


def _plan(fn, arg_sets, warm_s: float) -> tuple[int, int]:
    """(calls per round, rounds) so that a round takes about ROUND_S and a case about BUDGET_S."""
    per_call = warm_s
    if warm_s < ROUND_S / 2:  # too short to trust one call: time a batch
        n = 10
        while True:
            t0 = time.perf_counter()
            for i in range(n):
                fn(*arg_sets[i % len(arg_sets)])
            _sync()
            t = time.perf_counter() - t0
            if t >= ROUND_S / 2 or n >= MAX_CALLS:
                break
            n = min(MAX_CALLS, n * 10)
        per_call = t / n
    calls = max(1, min(MAX_CALLS, math.ceil(ROUND_S / max(per_call, 1e-9))))
    round_s = calls * per_call
    if round_s > BUDGET_S:  # a slow call (CPU eager at 16M: ~20 s): as many rounds as fit SLOW_CASE_S, >= 1
        return calls, max(1, min(MIN_ROUNDS, int(SLOW_CASE_S / round_s)))
    return calls, max(MIN_ROUNDS, min(MAX_ROUNDS, int(BUDGET_S / round_s)))


def _measure_plain(fn, arg_sets) -> float:
    """Median seconds per call without pytest-benchmark (a baseline measured on the spot)."""
    _, warm_s, _ = _warm_up(fn, arg_sets, compiles=True)  # (compiles or not: warm every input set)
    calls, rounds = _plan(fn, arg_sets, warm_s)
    loop = _Looper(fn, arg_sets, calls)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            loop()
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


# ------------------------------------------------------------------------------------ inputs

_CACHE: dict = {}


def _input_sets(op: str, size: str) -> list[tuple]:
    """The (op, size) input sets (RNG placeholders in), built once and shared by every implementation."""
    if _CACHE.get("key") != (op, size):
        _CACHE.clear()  # one (op, size) at a time: the 16M sets take a few hundred MiB
        _CACHE.update(key=(op, size), sets=make_input_sets(STEP_OPS[op], size, DEVICE, N_SETS), reference=None)
    return _CACHE["sets"]


def _reference_output(op: str, size: str):
    sets = _input_sets(op, size)
    if _CACHE["reference"] is None:
        _CACHE["reference"] = reference_fn(op)(*bind(sets[0], rng_tensor(DEVICE)))
    return _CACHE["reference"]


def _implementation(op: str, impl: str):
    """(callable, what goes in the rng argument) for ``impl`` of ``op``."""
    if impl == "eager":
        return reference_fn(op), None
    if impl == "compile":
        return compiled_eager(op), None
    if impl == "reference":
        return reference_fn(op), rng_tensor(DEVICE)
    fn = backend_fn(impl, op, DEVICE)
    if fn is None:
        pytest.skip(f"backend {impl!r} does not override {op} (it would run the reference)")
    return fn, rng_tensor(DEVICE)


def _baseline_seconds(session: StepSession, op: str, size: str, impl: str) -> float | None:
    """Median eager / compile time of (op, size) in this session; measured now if not yet.

    None when it failed (e.g. torch.compile could not compile the reference): the rows of (op, size)
    then lack that ratio, and the baseline's own case reports the error.
    """
    key = (op, size, impl)
    if key not in session.baseline_s and key not in session.baseline_errors:
        try:
            fn, rng = _implementation(op, impl)
            session.baseline_s[key] = _measure_plain(fn, [bind(a, rng) for a in _input_sets(op, size)])
        except Exception as exc:
            session.baseline_errors[key] = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"{op} {size}: the {impl} baseline failed ({session.baseline_errors[key]})", stacklevel=1)
    return session.baseline_s.get(key)


# -------------------------------------------------------------------------------------- copy


def _copy_buffers():
    src = torch.randn(COPY_BYTES // 4, device=DEVICE, dtype=torch.float32)
    return [(torch.empty_like(src), src)]


def _copy(dst: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    return dst.copy_(src)


def _fresh_output(n: int, d: int) -> torch.Tensor:
    """Allocate one (n, d) float32 state and touch every element: the least an op returning it costs."""
    return torch.empty(n, d, device=DEVICE, dtype=torch.float32).fill_(0.0)


def _record_copy(session: StepSession, median_s: float) -> None:
    session.copy_bytes = 2 * COPY_BYTES
    session.copy_median_s = median_s
    session.copy_gbps = gbps(session.copy_bytes, 1, median_s)


def test_copy_bandwidth(benchmark, step_session: StepSession):
    """Device-to-device copy of a 256 MiB float32 buffer: the bandwidth the step ops are compared to."""
    step_session.device = str(DEVICE)
    sets = _copy_buffers()
    _, warm_s, _ = _warm_up(_copy, sets)
    measuring = not benchmark.disabled
    calls, rounds = _plan(_copy, sets, warm_s) if measuring else (1, 1)
    benchmark.group = "copy"
    benchmark.pedantic(_Looper(_copy, sets, calls), rounds=rounds, iterations=calls, warmup_rounds=0)
    _sync()
    torch.testing.assert_close(sets[0][0], sets[0][1], rtol=0, atol=0)
    if not measuring:
        return
    _record_copy(step_session, benchmark.stats.stats.median)
    benchmark.extra_info.update(
        device=str(DEVICE), bytes_per_call=step_session.copy_bytes, calls_per_round=calls, rounds=rounds,
        median_s=step_session.copy_median_s, gbps=step_session.copy_gbps,
    )


# ---------------------------------------------------------------------------------- step ops


@pytest.mark.parametrize(("op", "size", "impl"), CASES, ids=[f"{o}-{s}-{i}" for o, s, i in CASES])
def test_step_kernel(benchmark, step_session: StepSession, op: str, size: str, impl: str):
    step_session.device = str(DEVICE)
    spec = STEP_OPS[op]
    n, d = SIZES[size]
    measuring = not benchmark.disabled

    if measuring:  # baselines first (measured on the spot only when their cases were deselected)
        if impl != "eager":
            _baseline_seconds(step_session, op, size, "eager")
        if impl not in BASELINES:
            _baseline_seconds(step_session, op, size, "compile")
            _baseline_seconds(step_session, op, size, "reference")
        if size != SMALL_SIZE and step_session.copy_gbps is None:
            _record_copy(step_session, _measure_plain(_copy, _copy_buffers()))
        if size not in step_session.fresh_output_s:
            step_session.fresh_output_s[size] = _measure_plain(_fresh_output, [(n, d)])

    fn, rng = _implementation(op, impl)
    sets = [bind(a, rng) for a in _input_sets(op, size)]
    try:
        first_s, warm_s, out = _warm_up(fn, sets, compiles=impl == "compile")
    except Exception as exc:
        if impl in BASELINES:  # the other implementations of (op, size) then go without this ratio
            step_session.baseline_errors[(op, size, impl)] = f"{type(exc).__name__}: {exc}"
        raise
    # Backends must do the reference's work on the same stream; eager and compile use torch's generator.
    bad = 0.0 if impl in BASELINES else mismatch(_reference_output(op, size), out)
    del out

    calls, rounds = _plan(fn, sets, warm_s) if measuring else (1, 1)
    benchmark.group = f"{op} {size}"
    benchmark.pedantic(_Looper(fn, sets, calls), rounds=rounds, iterations=calls, warmup_rounds=0)
    _sync()
    if not measuring:  # --benchmark-disable: ran once as a smoke test
        assert bad <= MAX_MISMATCH, f"{op} {size} {impl}: {100 * bad:.2f}% of outputs differ from the reference op"
        return

    stats = benchmark.stats.stats
    median_s = stats.median
    if impl in BASELINES:
        step_session.baseline_s[(op, size, impl)] = median_s
    row = StepRow(
        op=op, size=size, n=n, d=d, implementation=impl, device=str(DEVICE), outputs=spec.outputs,
        calls_per_round=calls, rounds=rounds, median_s=median_s, min_s=stats.min, mean_s=stats.mean, iqr_s=stats.iqr,
        bytes_per_elem=spec.bytes_per_elem, gbps=gbps(spec.bytes_per_elem, n * d, median_s),
        mismatch_vs_reference=bad, compile_s=first_s if impl == "compile" else None,
    )
    eager_s = step_session.baseline_s.get((op, size, "eager"))
    compile_s = step_session.baseline_s.get((op, size, "compile"))
    row.ratio_vs_eager = eager_s / median_s if eager_s else None
    row.ratio_vs_compile = compile_s / median_s if compile_s else None
    row.pct_copy = 100.0 * row.gbps / step_session.copy_gbps if step_session.copy_gbps else None
    step_session.rows.append(row)
    benchmark.extra_info.update(
        op=op, size=size, n=n, d=d, numel=n * d, implementation=impl, device=str(DEVICE),
        calls_per_round=calls, rounds=rounds, median_s_per_call=median_s,
        bytes_per_elem=spec.bytes_per_elem, gbps=row.gbps,
        ratio_vs_eager=row.ratio_vs_eager, ratio_vs_compile=row.ratio_vs_compile,
        eager_median_s=eager_s, compile_median_s=compile_s,
        copy_gbps=step_session.copy_gbps, pct_copy=row.pct_copy,
        fresh_output_s=step_session.fresh_output_s.get(size), outputs=spec.outputs,
        compile_s=row.compile_s, mismatch_vs_reference=bad, torch_threads=torch.get_num_threads(),
    )
    assert math.isfinite(median_s) and median_s > 0
    if bad > MAX_MISMATCH:
        pytest.fail(f"{op} {size} {impl}: {100 * bad:.2f}% of output elements differ from the reference op on the same stream")
