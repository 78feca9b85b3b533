"""One table for the whole suite: every workload, every provider, side by side.

The three benchmark files keep their own detailed records (bench/report.py for the chain
workloads W1-W5, bench/step_report.py for the step ops); this module folds them into one list
of :class:`Result` rows, ranks each provider against the peers measured on the same workload and
size in the same session, and renders the rows as a markdown table, a JSON record and a plot of
throughput against problem size. ``pysampler bench`` and the pytest session summary both use it.

Providers fall in three kinds:

* ``pysampler``: a pysampler backend or entry point (``pysampler-*``; for step ops the backend's op);
* ``peer``: what users have without pysampler: the eager PyTorch loop, ``torch.compile`` of one
  step, JAX ``jit``, BlackJAX, torchebm, posteriors;
* ``floor``: a lower bound, not a competitor (W5's four bare generator forwards).

``vs eager`` = this throughput / eager's; ``vs best peer`` = this throughput / the fastest peer's
(so the best peer itself reads 1.00x and a pysampler row above 1 beats every peer measured).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from . import machine
from .report import Row
from .step_report import StepRow

__all__ = ["Result", "PEERS", "FLOORS", "kind_of", "collect", "rank", "markdown", "leaders_markdown", "plot",
           "write_json", "read_json", "slower_than_best_peer"]

#: providers that are not pysampler: what a user runs today
PEERS = ("eager", "torch-compile", "jax-jit", "blackjax", "torchebm", "posteriors")
#: lower bounds shown for reference, neither peer nor pysampler
FLOORS = ("generator-x4",)


def kind_of(provider: str) -> str:
    """"peer", "floor" or "pysampler"."""
    if provider in PEERS:
        return "peer"
    if provider in FLOORS:
        return "floor"
    return "pysampler"


@dataclass
class Result:
    """One provider on one workload at one size."""

    workload: str  #: "W1".."W5", or "step:<op>" for a step op
    description: str
    provider: str  #: as in PEERS, FLOORS, or "pysampler-<backend>"
    size: str  #: human-readable size, e.g. "65536 chains x 200 steps", "4096x3072"
    problem_size: int  #: the plot's x: chains (W1-W5) or state elements (step ops)
    unit: str  #: "chain-steps/s" or "GB/s"
    throughput: float
    seconds: float  #: mean time of one run (W1-W5) or median time of one call (step ops)
    device: str = "cpu"
    backend: str | None = None  #: what "pysampler-auto" resolved to
    ratio_vs_eager: float | None = None
    ratio_vs_best_peer: float | None = None
    best_peer: str | None = None

    @property
    def kind(self) -> str:
        return kind_of(self.provider)


#: step-op implementation names (bench/step_ops.py) as providers of the suite
_STEP_PROVIDERS = {"eager": "eager", "compile": "torch-compile", "reference": "pysampler-torch"}


def collect(chain_rows: list[Row], step_rows: list[StepRow]) -> list[Result]:
    """The session's rows of both record kinds as ranked Results: chain workloads first (W1-W5, each
    size in turn), then the step ops."""
    results = [
        Result(workload=r.workload, description=r.description, provider=r.implementation,
               size=f"{r.n_chains} chains × {r.n_steps} steps", problem_size=r.n_chains, unit="chain-steps/s",
               throughput=r.chain_steps_per_s, seconds=r.mean_s, device=r.device, backend=r.backend)
        for r in sorted(chain_rows, key=lambda r: (r.workload, r.n_chains))  # stable: providers keep their order
    ]
    results += [
        Result(workload=f"step:{r.op}", description=f"one {r.op} call, float32", provider=_STEP_PROVIDERS.get(
            r.implementation, f"pysampler-{r.implementation}"), size=r.size, problem_size=r.n * r.d, unit="GB/s",
            throughput=r.gbps, seconds=r.median_s, device=r.device)
        for r in step_rows
    ]
    return rank(results)


def _groups(results: list[Result]) -> list[list[Result]]:
    """The rows measured side by side: one list per (workload, size, device), in first-seen order."""
    groups: dict[tuple[str, str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.workload, r.size, r.device), []).append(r)
    return list(groups.values())


def _fastest(rows: list[Result], kind: str) -> Result | None:
    return max((r for r in rows if r.kind == kind), key=lambda r: r.throughput, default=None)


def rank(results: list[Result]) -> list[Result]:
    """Fill ``ratio_vs_eager``, ``ratio_vs_best_peer`` and ``best_peer`` from the rows of the same
    (workload, size, device); returns ``results`` (changed in place)."""
    for rows in _groups(results):
        eager = next((r for r in rows if r.provider == "eager"), None)
        best = _fastest(rows, "peer")
        for r in rows:
            r.ratio_vs_eager = r.throughput / eager.throughput if eager else None
            r.ratio_vs_best_peer = r.throughput / best.throughput if best else None
            r.best_peer = best.provider if best else None
    return results


def slower_than_best_peer(results: list[Result]) -> list[tuple[str, str]]:
    """(workload, size) where no pysampler provider beats the best peer measured beside it."""
    out = []
    for rows in _groups(results):
        ours = _fastest(rows, "pysampler")
        if ours is not None and ours.ratio_vs_best_peer is not None and ours.ratio_vs_best_peer <= 1.0:
            out.append((ours.workload, ours.size))
    return out


def _three_digits(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _fmt_rate(value: float, unit: str) -> str:
    if unit == "GB/s":
        return f"{_three_digits(value)} GB/s"
    for scale, prefix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if value >= scale:
            return f"{_three_digits(value / scale)}{prefix}"
    return _three_digits(value)


def _rate(r: Result) -> str:
    return _fmt_rate(r.throughput, r.unit) + ("" if r.unit == "GB/s" else " chain-steps/s")


def _fmt_ratio(r: float | None) -> str:
    if r is None:
        return "-"
    return f"{r:.2f}x" if r >= 0.1 else f"{r:.2g}x"


def _label(r: Result) -> str:
    """The provider's name, with what "pysampler-auto" resolved to."""
    return r.provider + (f" ({r.backend})" if r.provider.endswith("auto") and r.backend else "")


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def markdown(results: list[Result]) -> str:
    """The side-by-side table: workload, size, provider, throughput, vs eager, vs best peer; the
    pysampler rows that beat every peer of their group in bold."""
    lines = [
        "| workload | size | provider | throughput | vs eager | vs best peer |",
        "|---|---|---|---:|---:|---:|",
    ]
    last = None
    for r in results:
        group = (r.workload, r.size)
        head = (f"{r.workload}: {r.description}", r.size) if group != last else ("", "")
        last = group
        name = _label(r)
        if r.kind == "floor":
            name += " (floor)"
        peer = _fmt_ratio(r.ratio_vs_best_peer)
        if r.kind == "peer" and r.provider == r.best_peer:
            peer += " (best peer)"
        row = [*head, name, _rate(r), _fmt_ratio(r.ratio_vs_eager), peer]
        if r.kind == "pysampler" and (r.ratio_vs_best_peer or 0) > 1.0:
            row[2:] = [f"**{c}**" for c in row[2:]]
        lines.append(_md_row(row))
    return "\n".join(lines)


def leaders_markdown(results: list[Result]) -> str:
    """One row per (workload, size): the fastest pysampler provider against the best peer."""
    lines = [
        "| workload | size | fastest pysampler | throughput | best peer | throughput | vs best peer | vs eager |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for rows in _groups(results):
        ours, peer = _fastest(rows, "pysampler"), _fastest(rows, "peer")
        if ours is None or peer is None:
            continue
        ratio = _fmt_ratio(ours.ratio_vs_best_peer)
        ahead = ours.throughput > peer.throughput
        lines.append(_md_row([ours.workload, ours.size, _label(ours), _rate(ours), peer.provider, _rate(peer),
                              f"**{ratio}**" if ahead else ratio, _fmt_ratio(ours.ratio_vs_eager)]))
    return "\n".join(lines)


def write_json(results: list[Result], path: str | Path, device: str, settings: dict | None = None) -> Path:
    """Write {"machine": ..., "settings": ..., "results": [...]} atomically to ``path``."""
    from pysampler.checkpoint import save_json

    payload = {"machine": machine.machine_info(device), "settings": settings or {}, "results": [asdict(r) for r in results]}
    path = Path(path)
    save_json(payload, path)
    return path


def read_json(path: str | Path) -> tuple[dict, list[Result]]:
    """(the record's machine and settings, its results) from a file written by :func:`write_json`."""
    payload = json.loads(Path(path).read_text())
    names = {f.name for f in fields(Result)}
    results = [Result(**{k: v for k, v in row.items() if k in names}) for row in payload["results"]]
    return {"machine": payload.get("machine", {}), "settings": payload.get("settings", {})}, results


def plot(results: list[Result], path: str | Path, title: str = "") -> Path:
    """Throughput against problem size, one panel per workload, one line per provider (log-log;
    peers dashed, floors dotted). Written to ``path`` (PNG)."""
    from pysampler.models.evaluation import pyplot

    plt = pyplot()
    workloads = list(dict.fromkeys(r.workload for r in results))
    providers = list(dict.fromkeys(r.provider for r in results))
    palette = plt.get_cmap("tab20").colors  # one colour per provider across every panel
    cols = min(4, max(1, len(workloads)))
    rows = math.ceil(len(workloads) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, workload in zip(axes.flat, workloads, strict=False):
        mine = [r for r in results if r.workload == workload]
        for provider in dict.fromkeys(r.provider for r in mine):
            pts = sorted((r.problem_size, r.throughput) for r in mine if r.provider == provider)
            style = {"peer": "--", "floor": ":", "pysampler": "-"}[kind_of(provider)]
            color = palette[providers.index(provider) % len(palette)]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", ms=4, color=color, label=provider)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{workload}: {mine[0].description}"[:60], fontsize=8)
        ax.set_xlabel("state elements" if mine[0].unit == "GB/s" else "chains", fontsize=8)
        ax.set_ylabel(mine[0].unit, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(workloads):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
