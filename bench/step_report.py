"""Results of the step-op benchmarks (bench/test_step_kernels.py): rows, summary table, JSON.

Ratios and the share of copy bandwidth are computed from the baselines measured in the same
session (eager and torch.compile of each (op, size), and one device-to-device copy), at the end
of the session, so every row gets every ratio whatever order the cases ran in.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import machine

__all__ = ["StepRow", "StepSession", "TARGETS", "write_summary"]

#: the issue's GPU targets (information only: never asserted)
TARGETS = {
    "pct_copy_ops": ("ula_step", "kinetic_oba", "kinetic_bo"),
    "pct_copy_size": "4096x4096",
    "pct_copy_min": 85.0,
    "vs_eager_min": 3.0,
    "vs_compile_min": 1.5,
    # the native backend issue's CPU target: every step op >= 3x the reference backend at 4096x3072
    "cpu_vs_reference_size": "4096x3072",
    "cpu_vs_reference_min": 3.0,
}
#: measured first for every (op, size): the hand-written step (eager), torch.compile of it, and
#: pysampler's reference backend ("torch": the same step on pysampler's Philox stream)
BASELINES = ("eager", "compile", "reference")


@dataclass
class StepRow:
    op: str
    size: str
    n: int
    d: int
    implementation: str
    device: str
    #: fresh (N, D) tensors the op returns
    outputs: int
    calls_per_round: int
    rounds: int
    median_s: float  # per call
    min_s: float
    mean_s: float
    iqr_s: float
    bytes_per_elem: int
    gbps: float
    #: largest fraction of output elements differing from the reference op on the same stream (0 for baselines)
    mismatch_vs_reference: float
    compile_s: float | None = None
    ratio_vs_eager: float | None = None
    ratio_vs_compile: float | None = None
    ratio_vs_reference: float | None = None
    pct_copy: float | None = None
    #: outputs x the time to allocate and first-touch one fresh (N, D) tensor: what returning the
    #: op's outputs costs before any arithmetic (on a CPU, mostly page faults)
    fresh_output_floor_s: float | None = None


@dataclass
class StepSession:
    device: str = "cpu"
    load_start: tuple[float, float, float] | None = None
    #: (op, size, "eager" | "compile") -> median seconds per call, measured in this session
    baseline_s: dict[tuple[str, str, str], float] = field(default_factory=dict)
    #: (op, size, "eager" | "compile") -> why that baseline could not be measured
    baseline_errors: dict[tuple[str, str, str], str] = field(default_factory=dict)
    copy_gbps: float | None = None
    copy_bytes: int | None = None
    copy_median_s: float | None = None
    #: size -> median seconds of torch.empty(N, D).fill_(0) (allocation + first touch of one output)
    fresh_output_s: dict[str, float] = field(default_factory=dict)
    rows: list[StepRow] = field(default_factory=list)

    def finish(self) -> None:
        """Fill every row's ratios and % of copy from the session's baselines."""
        for r in self.rows:
            eager = self.baseline_s.get((r.op, r.size, "eager"))
            comp = self.baseline_s.get((r.op, r.size, "compile"))
            ref = self.baseline_s.get((r.op, r.size, "reference"))
            r.ratio_vs_eager = eager / r.median_s if eager else None
            r.ratio_vs_compile = comp / r.median_s if comp else None
            r.ratio_vs_reference = ref / r.median_s if ref else None
            r.pct_copy = 100.0 * r.gbps / self.copy_gbps if self.copy_gbps else None
            fresh = self.fresh_output_s.get(r.size)
            r.fresh_output_floor_s = r.outputs * fresh if fresh else None


def _fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1.0:
        return f"{s * 1e3:.3f} ms"
    return f"{s:.3f} s"


def _fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def _target_lines(session: StepSession) -> list[str]:
    lines = []
    on_cuda = session.device.startswith("cuda")
    for r in session.rows:
        if r.implementation in BASELINES:
            continue
        checks = []
        if not on_cuda:
            if r.size == TARGETS["cpu_vs_reference_size"] and r.ratio_vs_reference is not None:
                want = TARGETS["cpu_vs_reference_min"]
                ok = r.ratio_vs_reference >= want
                checks.append(f"vs reference {r.ratio_vs_reference:.2f}x (>= {want:g}x) {'PASS' if ok else 'FAIL'}")
            if checks:
                lines.append(f"{r.op:<21}{r.size:<11}{r.implementation:<9}" + "; ".join(checks))
            continue
        if r.ratio_vs_eager is not None:
            ok = r.ratio_vs_eager >= TARGETS["vs_eager_min"]
            checks.append(f"vs eager {r.ratio_vs_eager:.2f}x (>= {TARGETS['vs_eager_min']:g}x) {'PASS' if ok else 'FAIL'}")
        if r.ratio_vs_compile is not None:
            ok = r.ratio_vs_compile >= TARGETS["vs_compile_min"]
            checks.append(f"vs compile {r.ratio_vs_compile:.2f}x (>= {TARGETS['vs_compile_min']:g}x) {'PASS' if ok else 'FAIL'}")
        if r.op in TARGETS["pct_copy_ops"] and r.size == TARGETS["pct_copy_size"] and r.pct_copy is not None:
            ok = r.pct_copy >= TARGETS["pct_copy_min"]
            checks.append(f"{r.pct_copy:.0f}% of copy (>= {TARGETS['pct_copy_min']:g}%) {'PASS' if ok else 'FAIL'}")
        if checks:
            lines.append(f"{r.op:<21}{r.size:<11}{r.implementation:<9}" + "; ".join(checks))
    return lines


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def write_summary(tr, session: StepSession | None, save: bool, results_dir: Path, load_end) -> None:
    """Print the step-op table (and the targets on CUDA); with ``save``, write the JSON record."""
    if session is None or not session.rows:
        return
    session.finish()
    on_cuda = session.device.startswith("cuda")
    device_name = machine.device_name(session.device)
    tr.section("pysampler step ops: median time per call; GB/s = bytes/elem x numel / time; vs X = X median / this median")
    copy = f"{session.copy_gbps:.1f} GB/s" if session.copy_gbps else "not measured"
    tr.write_line(
        f"device={session.device} ({device_name})  torch={torch.__version__}  threads={torch.get_num_threads()}  "
        f"copy bandwidth={copy}  loadavg start={session.load_start} end={load_end}"
    )
    header = (
        f"{'op':<21}{'size':<11}{'impl':<9}{'calls':>7}{'rounds':>7}{'median':>12}{'GB/s':>9}"
        f"{'% copy':>8}{'floor':>11}{'vs eager':>10}{'vs compile':>12}{'vs ref':>9}{'compile s':>10}"
    )
    tr.write_line(
        "floor = outputs x the time to allocate and first-touch one fresh (N, D) tensor (torch.empty(N, D).fill_(0)): "
        "a lower bound for any op returning new tensors"
    )
    tr.write_line(header)
    tr.write_line("-" * len(header))
    for r in session.rows:
        pct = f"{r.pct_copy:.0f}%" if r.pct_copy is not None and r.size != "64x128" else "-"
        comp_s = f"{r.compile_s:.1f}" if r.compile_s is not None else ""
        floor = _fmt_time(r.fresh_output_floor_s) if r.fresh_output_floor_s is not None else "-"
        flag = "" if r.mismatch_vs_reference <= 0.01 else f"  MISMATCH {100 * r.mismatch_vs_reference:.1f}%"
        tr.write_line(
            f"{r.op:<21}{r.size:<11}{r.implementation:<9}{r.calls_per_round:>7}{r.rounds:>7}{_fmt_time(r.median_s):>12}"
            f"{r.gbps:>9.1f}{pct:>8}{floor:>11}{_fmt_ratio(r.ratio_vs_eager):>10}{_fmt_ratio(r.ratio_vs_compile):>12}"
            f"{_fmt_ratio(r.ratio_vs_reference):>9}{comp_s:>10}{flag}"
        )
    for (op, size, impl), error in session.baseline_errors.items():
        tr.write_line(f"{op} {size}: no {impl} baseline ({error})")
    lines = _target_lines(session)  # the GPU targets on CUDA, the CPU target elsewhere
    if lines:
        tr.write_line("")
        tr.write_line("targets (information only, never asserted):")
        for line in lines:
            tr.write_line("  " + line)
    if save:
        results_dir.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        slug = _slug(device_name) if on_cuda else "cpu"
        path = results_dir / f"{stamp}-{slug}-steps.json"
        payload = {
            "kind": "step-ops",
            "date": stamp,
            "device": session.device,
            "device_name": device_name,
            "machine": machine.machine_info(session.device),  # with the torch / Triton / CUDA versions
            "copy": {"gbps": session.copy_gbps, "bytes": session.copy_bytes, "median_s": session.copy_median_s},
            "fresh_output_s": session.fresh_output_s,
            "targets": TARGETS,
            "baseline_errors": {" ".join(k): v for k, v in session.baseline_errors.items()},
            "loadavg_start": session.load_start,
            "loadavg_end": load_end,
            "rows": [asdict(r) for r in session.rows],
        }
        path.write_text(json.dumps(payload, indent=2) + "\n")
        tr.write_line(f"saved {path}")
