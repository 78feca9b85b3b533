"""``pysampler train gebm`` and ``pysampler sample gebm`` (wired into :mod:`pysampler.cli`).

    pysampler train gebm --data gaussians25 --iters 3000 --sampler kla --out runs/g25
    pysampler train gebm --data gaussians25 --iters 6000 --out runs/g25 --resume   # continue the same run
    pysampler sample gebm --ckpt runs/g25 --n 5000 --sampler mala --backend cpp --out more.npz
    torchrun --nproc_per_node 2 -m pysampler train gebm --data mnist --iters 4000 --out runs/mnist   # DDP
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from pysampler.checkpoint import save_json
from pysampler.models.data import TOY_SETS
from pysampler.models.gebm.evaluate import SAMPLERS, SamplerSettings, evaluate, plot_samples, sample_gebm
from pysampler.models.gebm.train import CHECKPOINT_NAME, TRAINING_FIELDS, GEBMConfig, Trainer, load_config, load_model
from pysampler.models.training import config_from_args

__all__ = ["add_train_parser", "add_sample_parser", "run_train", "run_sample"]


def _add_sampler_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default="kla",
                   help="latent-space sampler: kla (kinetic Langevin), ula, mala, hmc")
    p.add_argument("--step-size", type=float, default=None,
                   help="step size (default: toy data 0.05 for kla, mala, hmc, 0.01 for ula; images 0.02, 0.01, 0.02, 0.005)")
    p.add_argument("--friction", type=float, default=1.0, help="kinetic Langevin friction γ")
    p.add_argument("--n-leapfrog", type=int, default=10, help="HMC leapfrog steps per iteration")
    p.add_argument("--sampler-steps", type=int, default=None, help="chain length for each GEBM sample (toy 300, images 100)")
    p.add_argument("--temperature", type=float, default=1.0, help="T of π(z) ∝ N(z; 0, I) exp(-T·E(B(z))); T > 1 sharpens")
    p.add_argument("--backend", default="auto", help="pysampler backend for the chains (auto, torch, cpp, triton, ...)")


def _sampler_settings(args: argparse.Namespace) -> SamplerSettings:
    if args.sampler_steps is not None and args.sampler_steps < 0:
        raise ValueError(f"--sampler-steps must be >= 0; got {args.sampler_steps}")
    return SamplerSettings(args.sampler, args.step_size, args.friction, args.n_leapfrog, args.sampler_steps, args.temperature,
                           args.backend)


def add_train_parser(sub) -> None:
    p = sub.add_parser(
        "gebm", help="train a Generalized Energy-Based Model (KALE) and compare it with its base generator",
        description="Train a GEBM (Arbel, Zhou & Gretton, ICLR 2021): a base generator and an energy trained with KALE. "
        "Writes OUT/checkpoint.pt (atomically, every --checkpoint-every iterations), then OUT/metrics.json with the "
        "metrics of the base generator and of the GEBM side by side, and OUT/base.png, OUT/gebm.png (and OUT/energy.png "
        "for 2-D data). Training options left unset take the defaults for the data's kind (toy or image), or, with "
        "--resume, the checkpoint's values.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", default="gaussians25", help="gaussians25, swissroll, rings, checkerboard, digits, mnist, "
                   "or a path (image folder, .npz / .npy, CIFAR-10 batches)")
    p.add_argument("--iters", type=int, default=3000, help="generator updates (each after --energy-steps energy updates)")
    p.add_argument("--out", default="runs/gebm", help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt up to --iters")
    g = p.add_argument_group("training (unset: defaults for the data's kind)")
    g.add_argument("--latent-dim", type=int, help="latent dimension (toy 2, images 64)")
    g.add_argument("--width", type=int, help="network width (toy: MLP hidden units, 128; images: first conv maps, 32)")
    g.add_argument("--batch-size", type=int, help="batch per process (toy 256, images 64)")
    g.add_argument("--energy-steps", type=int, help="energy updates per generator update (5)")
    g.add_argument("--warmup-iters", type=int, help="first iterations with --warmup-energy-steps (50)")
    g.add_argument("--warmup-energy-steps", type=int, help="energy updates per generator update during warm-up (20)")
    g.add_argument("--lr-energy", type=float, help="Adam learning rate of the energy and c")
    g.add_argument("--lr-generator", type=float, help="Adam learning rate of the generator")
    g.add_argument("--betas", type=float, nargs=2, help="Adam betas (0.5 0.999)")
    g.add_argument("--gradient-penalty", type=float, help="λ of λ·E|∇E|² at data-base interpolates (0 = off)")
    g.add_argument("--refine-steps", type=int, help="energy updates, generator fixed, after --iters (toy 2000, images 1500)")
    g.add_argument("--refine-penalty", type=float, help="the gradient penalty's λ during refinement (toy 0.1, images 0)")
    g.add_argument("--seed", type=int, help="seed of the networks' initialisation and of every batch (0)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--checkpoint-every", type=int, default=500, help="iterations between checkpoints")
    e = p.add_argument_group("evaluation: GEBM samples by latent chains")
    _add_sampler_options(e)
    e.add_argument("--eval-samples", type=int, default=2000, help="base and GEBM samples compared with held-out data")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run_train)


def add_sample_parser(sub) -> None:
    p = sub.add_parser(
        "gebm", help="draw samples from a trained GEBM with any sampler and backend",
        description="Draw GEBM samples x = B(z), z from latent chains on π(z) ∝ N(z; 0, I) exp(-T·E(B(z))), "
        "started from the prior. Writes the samples (.npz with x and z, or .pt) and a picture.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--ckpt", required=True, help="a GEBM checkpoint (OUT/checkpoint.pt or the folder OUT)")
    p.add_argument("--n", type=int, default=1000, help="number of samples (independent chains)")
    _add_sampler_options(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the starting points and of the chains' random stream")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--out", default="gebm_samples.npz", help="where to write the samples (.npz or .pt)")
    p.add_argument("--plot", default="gebm_samples.png", help="picture of the samples ('' to skip)")
    p.add_argument("--progress", action="store_true", help="show the chains' progress bar")
    p.set_defaults(run=run_sample)


def _config(args: argparse.Namespace) -> GEBMConfig:
    """The run's configuration: options given on the command line, the rest from the checkpoint
    (--resume) or the defaults for the data's kind."""
    always = dict(data=args.data, iters=args.iters, device=args.device, checkpoint_every=args.checkpoint_every)
    return config_from_args(args, GEBMConfig, TRAINING_FIELDS, always, load_config)


def run_train(args: argparse.Namespace) -> int:
    settings = _sampler_settings(args)
    if args.eval_samples < 4:
        raise ValueError(f"--eval-samples must be >= 4; got {args.eval_samples}")
    trainer = Trainer(_config(args), args.out)
    try:
        if args.resume:
            trainer.resume()
        already = trainer.iteration + trainer.refined
        trainer.run(progress=not args.no_progress)
        if trainer.world > 1:  # every rank done with the group before any tears it down
            torch.distributed.barrier()
    finally:
        if trainer.world > 1:  # the rest (evaluation, pictures) is rank 0's alone
            torch.distributed.destroy_process_group()
    if trainer.rank != 0:
        return 0
    done = trainer.iteration + trainer.refined
    print(f"GEBM on {trainer.dataset.name}: {trainer.iteration} iterations and {trainer.refined} energy refinement steps "
          f"({done - already} steps this run) in {trainer.train_seconds:.1f} s; checkpoint {Path(args.out) / CHECKPOINT_NAME}")
    report = evaluate(trainer.model, trainer.dataset, settings, args.eval_samples, trainer.config.seed, args.out,
                      progress=not args.no_progress)
    report = {"data": trainer.dataset.name, "source": trainer.dataset.source, "iterations": trainer.iteration,
              "refinement_steps": trainer.refined,
              "train_seconds_this_run": trainer.train_seconds, "processes": trainer.world,
              "config": dataclasses.asdict(trainer.config), **report}
    save_json(report, Path(args.out) / "metrics.json")
    print(format_report(report))
    pictures = ", ".join(sorted(p.name for p in Path(args.out).glob("*.png")))
    print(f"metrics: {Path(args.out) / 'metrics.json'}; pictures: {pictures}")
    return 0


def format_report(report: dict) -> str:
    """The side-by-side table of metrics.json's "base" and "gebm"."""
    names = list(report["base"])
    lines = [f"{'metric':<20} {'base':>12} {'gebm':>12}"]
    for name in names:
        lines.append(f"{name:<20} {report['base'][name]:>12.4g} {report['gebm'][name]:>12.4g}")
    if "classifier" in report:
        lines.append(f"(image metrics in the feature space of a classifier with held-out accuracy "
                     f"{report['classifier']['test_accuracy']:.3f})")
    return "\n".join(lines)


def run_sample(args: argparse.Namespace) -> int:
    settings = _sampler_settings(args)
    if args.n < 1:
        raise ValueError(f"--n must be >= 1; got {args.n}")
    out = Path(args.out)
    if out.suffix not in (".npz", ".pt"):
        raise ValueError(f"--out must end in .npz or .pt; got {out}")
    model, config, iters = load_model(args.ckpt, args.device)
    settings = settings.resolved("toy" if config.data in TOY_SETS else "image")
    x, res = sample_gebm(model, args.n, settings, args.seed, args.progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        import numpy as np

        np.savez(out, x=x.cpu().numpy(), z=res.x.detach().cpu().numpy())
    else:
        torch.save({"x": x.cpu(), "z": res.x.detach().cpu()}, out)
    print(f"{args.n} GEBM samples ({config.data}, {iters} iterations) by {settings.name} on backend {res.backend}, "
          f"{settings.steps} steps, acceptance {float(res.accept_rate.mean()):.3f}: {out}")
    if args.plot:
        plot_samples(x, args.plot, f"GEBM ({settings.name}, {settings.steps} steps)")
        print(f"picture: {args.plot}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from pysampler.cli import main

    sys.exit(main(["train", "gebm", *sys.argv[1:]]))
