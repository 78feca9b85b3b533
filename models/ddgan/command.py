"""``pysampler train ddgan`` and ``pysampler sample ddgan`` (wired into :mod:`pysampler.cli`).

    pysampler train ddgan --data gaussians25 --out runs/ddgan-g25            # DDGAN (T = 4) and the one-step GAN
    pysampler train ddgan --data stackedmnist --iters 20000 --device cuda --out runs/smnist
    pysampler train ddgan --data stackedmnist --iters 20000 --out runs/smnist --resume   # after an interruption
    pysampler sample ddgan --ckpt runs/smnist --n 10000 --out samples.npz
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

from pysampler.checkpoint import save_json
from pysampler.models.ddgan.evaluate import evaluate
from pysampler.models.ddgan.train import TRAINING_FIELDS, DDGANConfig, Trainer, load_config, load_model
from pysampler.models.evaluation import Reference, classifier_for, plot_samples
from pysampler.models.training import CHECKPOINT_NAME, config_from_args

__all__ = ["add_train_parser", "add_sample_parser", "run_train", "run_sample", "BASELINE_DIR"]

#: where the one-step GAN baseline of a 2-D run lives, inside OUT
BASELINE_DIR = "gan"


def add_train_parser(sub) -> None:
    p = sub.add_parser(
        "ddgan", help="train a denoising diffusion GAN (and, on 2-D data, the one-step GAN beside it)",
        description="Train a denoising diffusion GAN (Xiao, Kreis & Vahdat, ICLR 2022): T denoising steps, each a "
        "conditional GAN whose generator predicts x_0 and whose x_{t-1} is drawn from the posterior q(x_{t-1} | x_t, x_0) "
        "by pysampler's fused kernel. Writes OUT/checkpoint.pt (atomically, every --checkpoint-every iterations), then "
        "OUT/metrics.json and pictures. On 2-D data it also trains a one-step GAN (T = 1: an unconditional GAN) with the "
        "same networks and budget (by default without the R1 penalty: the vanilla GAN of the dissertation's Figure 6.9) "
        "in OUT/gan and reports both. Training options left unset take the defaults for the "
        "data's kind, or, with --resume, the checkpoint's values.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", default="gaussians25", help="gaussians25, swissroll, rings, checkerboard, digits, mnist, "
                   "stackedmnist, or a path (image folder, .npz / .npy, CIFAR-10 batches)")
    p.add_argument("--T", type=int, default=None, help="denoising steps (4)")
    p.add_argument("--iters", type=int, default=None, help="training iterations (toy 48000, images 20000)")
    p.add_argument("--out", default="runs/ddgan", help="output folder")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in OUT (same settings)")
    g = p.add_argument_group("training (unset: defaults for the data's kind)")
    g.add_argument("--latent-dim", type=int, help="dimension of z (toy 2, images 100)")
    g.add_argument("--width", type=int, help="network width (toy: hidden units, 512; images: U-Net channels, 32)")
    g.add_argument("--batch-size", type=int, help="batch (64)")
    g.add_argument("--lr-d", type=float, help="discriminator's Adam learning rate (toy 1e-3, images 1e-4)")
    g.add_argument("--lr-g", type=float, help="generator's Adam learning rate (toy 1e-3, images 1.6e-4)")
    g.add_argument("--betas", type=float, nargs=2, help="Adam betas (0.5 0.9)")
    g.add_argument("--lr-min-ratio", type=float, help="cosine decay of the learning rates down to this fraction (0.1)")
    g.add_argument("--ema", type=float, help="decay of the generator's moving average (toy 0.99, images 0.999)")
    g.add_argument("--r1-gamma", type=float, help="γ of the R1 penalty on real pairs (0.05; 0 = off)")
    g.add_argument("--r1-every", type=int, help="iterations between R1 penalties (1)")
    g.add_argument("--beta-min", type=float, help="VP schedule β_min (0.1)")
    g.add_argument("--beta-max", type=float, help="VP schedule β_max (20)")
    g.add_argument("--seed", type=int, help="seed of the networks, batches and noise (0)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--backend", default="auto", help="pysampler backend of the diffusion draws (auto, torch, cpp, triton, cuda)")
    p.add_argument("--checkpoint-every", type=int, default=500, help="iterations between checkpoints")
    p.add_argument("--no-gan", action="store_true", help="2-D data: skip the one-step GAN baseline")
    p.add_argument("--gan-r1-gamma", type=float, default=0.0,
                   help="R1 γ of the one-step GAN baseline: 0 is the vanilla GAN of the dissertation's Figure 6.9; "
                   "the DDGAN's own γ (0.05) gives the R1-regularised one-step GAN")
    p.add_argument("--eval-samples", type=int, default=None, help="samples compared with the data (toy 5000, images 10000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run_train)


def add_sample_parser(sub) -> None:
    p = sub.add_parser(
        "ddgan", help="draw samples from a trained DDGAN",
        description="Draw samples of a trained DDGAN by its T-step reverse chain (Algorithm 2) with the EMA generator, "
        "in batches of one fixed shape (replayed from a CUDA graph on GPU). Writes the samples (.npz with x, or .pt) "
        "and a picture.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--ckpt", required=True, help="a DDGAN checkpoint (OUT/checkpoint.pt or the folder OUT)")
    p.add_argument("--n", type=int, default=1000, help="number of samples")
    p.add_argument("--batch-size", type=int, default=1000, help="samples per batch")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples' random stream")
    p.add_argument("--raw", action="store_true", help="the trained generator instead of its moving average")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--backend", default="auto", help="pysampler backend of the posterior draws")
    p.add_argument("--cuda-graph", choices=("auto", "on", "off"), default="auto", help="replay each batch from a CUDA graph")
    p.add_argument("--out", default="ddgan_samples.npz", help="where to write the samples (.npz or .pt)")
    p.add_argument("--plot", default="ddgan_samples.png", help="picture of the samples ('' to skip)")
    p.set_defaults(run=run_sample)


def _train_one(config: DDGANConfig, out: Path, resume: bool, progress: bool, desc: str) -> Trainer:
    trainer = Trainer(config, out)
    if resume and (out / CHECKPOINT_NAME).is_file():
        trainer.resume()
    already = trainer.iteration
    trainer.run(progress=progress, desc=desc)
    print(f"{desc} on {trainer.dataset.name}: {trainer.iteration} iterations ({trainer.iteration - already} this run) "
          f"in {trainer.train_seconds:.1f} s; checkpoint {out / CHECKPOINT_NAME}")
    return trainer


def run_train(args: argparse.Namespace) -> int:
    always = dict(data=args.data, device=args.device, backend=args.backend, checkpoint_every=args.checkpoint_every)
    config = config_from_args(args, DDGANConfig, TRAINING_FIELDS, always, load_config)
    if not args.gan_r1_gamma >= 0:  # checked before the DDGAN trains, not after
        raise ValueError(f"--gan-r1-gamma must be >= 0; got {args.gan_r1_gamma}")
    out = Path(args.out)
    if not args.resume and (out / BASELINE_DIR / CHECKPOINT_NAME).exists():
        raise ValueError(f"{out / BASELINE_DIR / CHECKPOINT_NAME} exists: pass --resume, or choose another --out")
    start = time.perf_counter()
    trainer = _train_one(config, out, args.resume, not args.no_progress, f"DDGAN T={config.T}")
    dataset, cfg = trainer.dataset, trainer.config
    n_eval = args.eval_samples or (5000 if dataset.kind == "toy" else 10000)
    if n_eval < 4:
        raise ValueError(f"--eval-samples must be >= 4; got {n_eval}")
    models = {"ddgan": trainer}
    if dataset.kind == "toy" and not args.no_gan:
        # the one-step GAN: T = 1, everything else the DDGAN's (networks, iterations, batch, optimiser), and by
        # default no R1 penalty: the vanilla GAN the dissertation compares with (Figure 6.9)
        gan_config = dataclasses.replace(cfg, T=1, r1_gamma=args.gan_r1_gamma)
        models["gan"] = _train_one(gan_config, out / BASELINE_DIR, args.resume, not args.no_progress, "GAN T=1")
    report: dict = {"data": dataset.name, "source": dataset.source}
    reference = Reference.of(dataset, classifier_for(dataset))  # the held-out side, once for both models
    for name, tr in models.items():
        result = evaluate(tr.model, dataset, n_eval, cfg.seed, out, name=name, backend=cfg.backend, reference=reference)
        report[name] = result.pop("metrics")
        report[f"{name}_run"] = {"iterations": tr.iteration, "train_seconds_this_run": tr.train_seconds,
                                 "config": dataclasses.asdict(tr.config), **result}
        for shared in ("classifier", "real_data"):
            if shared in report[f"{name}_run"]:
                report[shared] = report[f"{name}_run"].pop(shared)
    report["wall_seconds"] = time.perf_counter() - start
    save_json(report, out / "metrics.json")
    print(format_report(report, list(models)))
    pictures = ", ".join(sorted(p.name for p in out.glob("*.png")))
    print(f"metrics: {out / 'metrics.json'}; pictures: {pictures}")
    return 0


def format_report(report: dict, names: list[str]) -> str:
    """The side-by-side table of metrics.json's models (and of real data, for StackedMNIST)."""
    columns = names + (["real_data"] if "real_data" in report else [])
    lines = [f"{'metric':<20}" + "".join(f" {c:>12}" for c in columns)]
    for metric in report[names[0]]:
        lines.append(f"{metric:<20}" + "".join(f" {report[c][metric]:>12.4g}" for c in columns))
    if "classifier" in report:
        lines.append(f"(image metrics from a classifier with held-out accuracy {report['classifier']['test_accuracy']:.3f}"
                     + ("; real_data: held-out digits stacked the same way" if "real_data" in report else "") + ")")
    return "\n".join(lines)


def run_sample(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise ValueError(f"--n must be >= 1; got {args.n}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1; got {args.batch_size}")
    out = Path(args.out)
    if out.suffix not in (".npz", ".pt"):
        raise ValueError(f"--out must end in .npz or .pt; got {out}")
    model, config, iters = load_model(args.ckpt, args.device)
    cuda_graph = {"auto": "auto", "on": True, "off": False}[args.cuda_graph]
    start = time.perf_counter()
    result = model.sample(args.n, args.seed, ema=not args.raw, batch_size=min(args.batch_size, args.n),
                          backend=args.backend, cuda_graph=cuda_graph)
    seconds = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    x = result.x.cpu()
    if out.suffix == ".npz":
        import numpy as np

        np.savez(out, x=x.numpy())
    else:
        torch.save({"x": x}, out)
    graph = "CUDA graph" if result.cuda_graph else f"plain loop ({result.cuda_graph_reason})"
    print(f"{args.n} DDGAN samples ({config.data}, T = {config.T}, {iters} iterations, "
          f"{'raw' if args.raw else 'EMA'} generator) in {seconds:.2f} s, {graph}: {out}")
    if args.plot:
        plot_samples(x, args.plot, f"DDGAN (T = {config.T})")
        print(f"picture: {args.plot}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from pysampler.cli import main

    sys.exit(main(["train", "ddgan", *sys.argv[1:]]))
