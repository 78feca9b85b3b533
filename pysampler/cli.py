"""The ``pysampler`` command.

``pysampler sample gmm25`` samples the built-in 25-Gaussian target with each sampler, prints a
table (sampler, backend, chain-steps/s, acceptance, modes covered, fraction of samples within
2σ of a mode) and writes a scatter plot. ``pysampler train gebm`` and ``pysampler sample gebm``
train and sample a GEBM (:mod:`pysampler.models.gebm.command`); ``pysampler train ddgan`` and
``pysampler sample ddgan`` a denoising diffusion GAN (:mod:`pysampler.models.ddgan.command`).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import torch

from . import metrics
from .samplers import HMC, MALA, ULA, KineticLangevin, Sampler
from .sampling import sample
from .targets import gmm25

GMM25_STD = 0.5


@dataclass
class Row:
    sampler: str
    backend: str
    chain_steps_per_s: float
    acceptance: float
    modes_covered: int
    n_modes: int
    fraction_near: float
    x: torch.Tensor


def default_samplers(args: argparse.Namespace) -> dict[str, Sampler]:
    """The four samplers with step sizes suited to σ = 0.5 modes (h ≪ σ² = 0.25)."""
    return {
        "ULA": ULA(args.ula_step),
        "MALA": MALA(args.mala_step),
        "KineticLangevin": KineticLangevin(args.kla_step, args.friction),
        "HMC": HMC(args.hmc_step, args.n_leapfrog),
    }


def run_gmm25(args: argparse.Namespace) -> list[Row]:
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    target = gmm25(GMM25_STD, dtype=dtype, device=args.device)
    g = torch.Generator().manual_seed(args.seed)
    # Chains start uniformly over the box around the grid, so every mode gets chains.
    x0 = (torch.rand(args.chains, 2, generator=g, dtype=dtype) * 10.0 - 5.0).to(args.device)
    samplers = default_samplers(args)
    rows = []
    for name in args.samplers:
        sampler = samplers[name]
        start = time.perf_counter()
        res = sample(
            target, x0, sampler, args.steps, seed=args.seed, backend=args.backend, burn_in=args.burn_in, progress=args.progress
        )
        if res.x.is_cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        cov = metrics.mode_coverage(res.x, target.means, GMM25_STD)
        rows.append(
            Row(name, res.backend, args.chains * (args.steps + args.burn_in) / elapsed, float(res.accept_rate.mean()),
                cov.n_covered, target.means.shape[0], cov.fraction_near, res.x.detach().cpu())
        )
    return rows


def format_table(rows: list[Row]) -> str:
    head = f"{'sampler':<16} {'backend':<10} {'chain-steps/s':>14} {'acceptance':>10} {'modes':>7} {'within 2σ':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.sampler:<16} {r.backend:<10} {r.chain_steps_per_s:>14,.0f} {r.acceptance:>10.3f} "
            f"{r.modes_covered:>4}/{r.n_modes:<2} {r.fraction_near:>10.3f}"
        )
    return "\n".join(lines)


def plot(rows: list[Row], modes: torch.Tensor, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(4 * len(rows), 4.2), squeeze=False)
    for ax, r in zip(axes[0], rows, strict=True):
        pts = r.x[:20_000]
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.3, rasterized=True)
        ax.scatter(modes[:, 0].cpu(), modes[:, 1].cpu(), marker="x", c="red", s=20)
        title = f"{r.sampler} ({r.backend})\n{r.modes_covered}/{r.n_modes} modes"
        ax.set(xlim=(-6, 6), ylim=(-6, 6), aspect="equal", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    from pysampler.bench import command as bench_command
    from pysampler.models.ddgan import command as ddgan_command
    from pysampler.models.gebm import command as gebm_command

    parser = argparse.ArgumentParser(
        prog="pysampler", description="pysampler: fast samplers for energy-based and diffusion models."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sample_parser = sub.add_parser("sample", help="sample a built-in target or a trained model")
    sample_sub = sample_parser.add_subparsers(dest="target", required=True)
    s = sample_sub.add_parser(
        "gmm25",
        help="gmm25: 25 Gaussians with means on {-4,-2,0,2,4}², σ = 0.5, with every sampler: throughput and quality",
        description="Sample a built-in target with each sampler; print sampler, backend, chain-steps/s, "
        "acceptance, modes covered and the fraction of samples within 2σ of a mode; write a scatter plot.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    gebm_command.add_sample_parser(sample_sub)
    ddgan_command.add_sample_parser(sample_sub)
    train_parser = sub.add_parser("train", help="train a model (GEBM, DDGAN) whose sampling runs through pysampler")
    train_sub = train_parser.add_subparsers(dest="model", required=True)
    gebm_command.add_train_parser(train_sub)
    ddgan_command.add_train_parser(train_sub)
    bench_command.add_parser(sub)
    s.add_argument("--chains", type=int, default=4096, help="number of independent chains")
    s.add_argument("--steps", type=int, default=500, help="steps per chain after burn-in")
    s.add_argument("--burn-in", type=int, default=0, help="steps run first and discarded")
    s.add_argument("--seed", type=int, default=0, help="seed of the random stream and of the initial states")
    s.add_argument(
        "--backend", default="auto",
        help=(
            "auto, torch, cpp, cpp-fused (whole-chain kernels, CPU), triton, triton-fused (whole-chain, CUDA); "
            "see pysampler.available_backends"
        ),
    )
    s.add_argument("--device", default="cpu", help="torch device for the chains, e.g. cpu or cuda")
    s.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="chain dtype")
    s.add_argument("--samplers", nargs="+", choices=["ULA", "MALA", "KineticLangevin", "HMC"],
                   default=["ULA", "MALA", "KineticLangevin", "HMC"], help="which samplers to run")
    s.add_argument("--ula-step", type=float, default=0.01, help="ULA step size h")
    s.add_argument("--mala-step", type=float, default=0.05, help="MALA step size h")
    s.add_argument("--kla-step", type=float, default=0.05, help="kinetic Langevin step size h")
    s.add_argument("--friction", type=float, default=2.0, help="kinetic Langevin friction γ")
    s.add_argument("--hmc-step", type=float, default=0.1, help="HMC leapfrog step size h")
    s.add_argument("--n-leapfrog", type=int, default=5, help="HMC leapfrog steps per iteration")
    s.add_argument("--plot", default="gmm25.png", help="path of the scatter plot PNG ('' to skip)")
    s.add_argument("--progress", action="store_true", help="show a progress bar per sampler")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "run"):  # the model commands (train / sample gebm, ddgan) carry their own entry point
        try:
            return args.run(args)
        except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
            print(f"pysampler: {err}", file=sys.stderr)
            return 2
    if args.chains < 1 or args.steps < 0 or args.burn_in < 0:
        print("pysampler: --chains must be >= 1 and --steps, --burn-in >= 0", file=sys.stderr)
        return 2
    try:
        rows = run_gmm25(args)
    except (ValueError, TypeError) as err:
        print(f"pysampler: {err}", file=sys.stderr)
        return 2
    print(f"gmm25: {args.chains} chains x {args.steps + args.burn_in} steps, {args.dtype} on {args.device}")
    print(format_table(rows))
    if args.plot:
        plot(rows, gmm25(GMM25_STD).means, args.plot)
        print(f"scatter plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
