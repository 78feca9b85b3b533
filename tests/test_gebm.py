"""The GEBM pipeline (issue 7): losses against hand-computed values, the generator gradient against
the slides' formula, the trainer's checkpoints (crash, resume bit for bit), the command line, DDP."""

from __future__ import annotations

import json
import math
import os
import socket

import numpy as np
import pytest
import torch

from conftest import assert_same_state
from pysampler import checkpoint
from pysampler.cli import main
from pysampler.models import data as datasets
from pysampler.models.gebm import GEBMConfig, Trainer, build_networks, energy_loss, generator_loss, gradient_penalty
from pysampler.models.gebm.evaluate import SamplerSettings, sample_base, sample_gebm
from pysampler.models.gebm.train import load_model

# short runs: a handful of iterations, small evaluation
FAST = ["--iters", "6", "--checkpoint-every", "3", "--warmup-iters", "2", "--warmup-energy-steps", "2", "--energy-steps", "2",
        "--refine-steps", "0", "--eval-samples", "200", "--sampler-steps", "5", "--no-progress"]


def test_energy_loss_hand_computed():
    # −F = E_P[E + c] + E_Q[exp(−E − c)] − 1 with E + c given directly
    data = torch.tensor([0.5, -1.0, 1.5])
    base = torch.tensor([0.0, math.log(2.0)])
    expected = (0.5 - 1.0 + 1.5) / 3 + (1.0 + 0.5) / 2 - 1.0
    assert float(energy_loss(data, base)) == pytest.approx(expected, abs=1e-7)
    assert float(generator_loss(base)) == pytest.approx(-(1.0 + 0.5) / 2, abs=1e-7)
    # a constant critic c: −F = c + exp(−c) − 1 >= 0, zero only at c = 0
    for c in (-1.0, 0.0, 2.0):
        assert float(energy_loss(torch.full((4,), c), torch.full((5,), c))) == pytest.approx(c + math.exp(-c) - 1.0, abs=1e-6)


def test_energy_loss_optimum_is_the_density_ratio():
    # On a finite space with P, Q known, minimising −F over free values f(x) gives f = −log(dP/dQ),
    # where −F equals −KL(P ‖ Q) (the bound is tight): the defining property of the KALE loss.
    # ten equally likely points per distribution: sample means are then the exact expectations
    p_points = torch.tensor([0] * 5 + [1] * 3 + [2] * 2)
    q_points = torch.tensor([0] * 2 + [1] * 3 + [2] * 5)
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    f = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([f], max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = energy_loss(f[p_points], f[q_points])
        loss.backward()
        return loss

    opt.step(closure)
    torch.testing.assert_close(f.detach(), -torch.log(p / q), atol=1e-6, rtol=0)
    kl = float((p * torch.log(p / q)).sum())
    assert -float(closure().detach()) == pytest.approx(kl, abs=1e-10)


def test_generator_gradient_is_the_slides_formula():
    # ∇_θ F(P, Q_θ) = E_z[exp(−E(B_θ(z)) − c) ∇_x E(B_θ(z)) ∇_θ B_θ(z)]  (slide "Learning the base measure"):
    # the generator loss −E_z[exp(−E − c)] has exactly that gradient.
    # Linear generator B(z) = A z + b, quadratic energy E(x) = ½ xᵀ M x + mᵀ x, c = 0.3: closed form.
    g = torch.Generator().manual_seed(0)
    d, k, n = 3, 2, 7
    A = torch.randn(d, k, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(d, generator=g, dtype=torch.float64, requires_grad=True)
    L = torch.randn(d, d, generator=g, dtype=torch.float64)
    M, m, c = L @ L.T / d, torch.randn(d, generator=g, dtype=torch.float64), 0.3
    z = torch.randn(n, k, generator=g, dtype=torch.float64)
    x = z @ A.T + b
    e = 0.5 * ((x @ M) * x).sum(1) + x @ m
    generator_loss(e + c).backward()
    with torch.no_grad():
        w = torch.exp(-e - c)  # (n,)
        grad_x = x @ M + m  # ∇_x E, (n, d)
        expected_A = (w[:, None, None] * grad_x[:, :, None] * z[:, None, :]).mean(0)  # ∂B/∂A_ij = z_j on row i
        expected_b = (w[:, None] * grad_x).mean(0)
    torch.testing.assert_close(A.grad, expected_A, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(b.grad, expected_b, atol=1e-12, rtol=1e-12)


def test_gradient_penalty_hand_computed():
    x = torch.tensor([[1.0, 2.0], [0.0, -1.0]], requires_grad=True)
    energy = 3.0 * x.square().sum(1)  # ∇E = 6x, |∇E|² = 36|x|²
    assert float(gradient_penalty(energy, x).detach()) == pytest.approx(36.0 * (5.0 + 1.0) / 2, rel=1e-6)


def test_networks_for_each_kind_of_data():
    toy = build_networks((2,), 2, 16)
    assert toy.generator(torch.randn(5, 2)).shape == (5, 2) and toy.energy(torch.randn(5, 2)).shape == (5,)
    for shape in ((1, 28, 28), (3, 32, 32), (1, 8, 8)):
        model = build_networks(shape, 8, 8).eval()
        x = model.generator(torch.randn(4, 8))
        assert x.shape == (4, *shape) and float(x.detach().abs().max()) <= 1.0
        assert model.energy(x).shape == (4,)
    assert float(build_networks((2,), 2, 16).log_partition.detach()) == 0.0
    with pytest.raises(ValueError, match="data_shape"):
        build_networks((2, 3), 2, 16)


def test_config_is_checked():
    with pytest.raises(ValueError, match="iters"):
        GEBMConfig(iters=-1).resolved("toy")
    with pytest.raises(ValueError, match="lr_energy"):
        GEBMConfig(lr_energy=0.0).resolved("toy")
    with pytest.raises(ValueError, match="betas"):
        GEBMConfig(betas=(0.5, 1.0)).resolved("toy")
    cfg = GEBMConfig().resolved("image")
    assert (cfg.latent_dim, cfg.batch_size, cfg.gradient_penalty) == (64, 64, 0.0)


def test_dataset_splits(tmp_path):
    toy = datasets.load("gaussians25", n_held_out=300)
    assert toy.kind == "toy" and toy.held_out.shape == (300, 2)
    torch.testing.assert_close(toy.held_out, datasets.load("gaussians25", n_held_out=300).held_out)  # fixed
    g = torch.Generator().manual_seed(0)
    assert toy.batch(10, g).shape == (10, 2)
    images = np.random.default_rng(0).integers(0, 256, (400, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=images, labels=np.arange(400) % 10)
    ds = datasets.load(tmp_path / "d.npz")
    assert ds.kind == "image" and ds.shape == (1, 28, 28)
    assert ds.held_out.shape[0] == 200 and ds.train.shape[0] == 200 and ds.train_labels.shape == (200,)
    # the split is a partition of the images
    together = torch.cat([ds.train, ds.held_out]).flatten(1)
    assert torch.unique(together, dim=0).shape[0] == torch.unique(torch.from_numpy(images).flatten(1), dim=0).shape[0]
    np.save(tmp_path / "small.npy", images[:250])
    with pytest.raises(ValueError, match="too few"):
        datasets.load(tmp_path / "small.npy")


def _tiny_config(**kw) -> GEBMConfig:
    base = dict(data="gaussians25", iters=6, width=16, batch_size=32, energy_steps=2, warmup_iters=2, warmup_energy_steps=3,
                refine_steps=4, checkpoint_every=3)
    return GEBMConfig(**{**base, **kw})


@pytest.mark.parametrize("crash_at", ["training", "refinement"])
def test_crash_then_resume_is_bit_identical(tmp_path, monkeypatch, crash_at):
    # uninterrupted: 6 iterations, then 4 refinement steps
    whole = Trainer(_tiny_config(), tmp_path / "whole")
    whole.run()
    assert whole.iteration == 6 and whole.refined == 4
    # a run that crashes in iteration 5 (after the checkpoint at 3), or in refinement step 4 (after the
    # checkpoint at 3), then resumes from that checkpoint
    crashing = Trainer(_tiny_config(), tmp_path / "crash")
    if crash_at == "training":
        method, fail_at, saved_at = "generator_step", 5, (3, 0)
    else:  # energy steps: 2 warm-up iterations x 3, 4 iterations x 2, then the 4th refinement step
        method, fail_at, saved_at = "energy_step", 2 * 3 + 4 * 2 + 4, (6, 3)
    real_step = getattr(Trainer, method)
    calls = {"n": 0}

    def failing_step(self, *args):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise RuntimeError("simulated crash")
        return real_step(self, *args)

    monkeypatch.setattr(Trainer, method, failing_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.run()
    monkeypatch.setattr(Trainer, method, real_step)
    saved = checkpoint.load(tmp_path / "crash" / "checkpoint.pt")
    assert (saved["iteration"], saved["refined"]) == saved_at
    assert not [p for p in (tmp_path / "crash").iterdir() if p.name.endswith(".tmp")]
    resumed = Trainer(_tiny_config(), tmp_path / "crash")
    resumed.resume()
    resumed.run()
    assert_same_state(whole.state_dict(), resumed.state_dict())
    # the checkpoints on disk agree too
    on_disk = [checkpoint.load(tmp_path / run / "checkpoint.pt") for run in ("whole", "crash")]
    assert_same_state(*on_disk)


def test_resume_refuses_other_settings(tmp_path):
    Trainer(_tiny_config(iters=3), tmp_path).run()
    other = Trainer(_tiny_config(lr_energy=5e-4), tmp_path)
    with pytest.raises(ValueError, match="lr_energy"):
        other.resume()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(_tiny_config(), tmp_path / "empty").resume()
    # a finished run (refinement begun) cannot grow its iterations: that would not be the same run
    Trainer(_tiny_config(iters=3, refine_steps=2), tmp_path / "done").run()
    longer = Trainer(_tiny_config(iters=5, refine_steps=2), tmp_path / "done")
    with pytest.raises(ValueError, match="refining"):
        longer.resume()


def test_gebm_samples_go_through_the_engine():
    # the GEBM's samples are B(z) of latent chains that start at the base's own draws
    torch.manual_seed(0)
    model = build_networks((2,), 2, 16)
    settings = SamplerSettings("mala", 0.05, steps=0, backend="torch").resolved("toy")
    x0 = sample_base(model, 64, seed=3)
    x, res = sample_gebm(model, 64, settings, seed=3)
    torch.testing.assert_close(x, x0)  # zero steps: the starting points
    for name, backend in (("kla", "cpp"), ("ula", "torch"), ("hmc", "torch"), ("mala", "cpp")):
        x, res = sample_gebm(model, 64, SamplerSettings(name, steps=5, backend=backend).resolved("toy"), seed=3)
        assert x.shape == (64, 2) and torch.isfinite(x).all() and res.backend == backend
        assert not torch.equal(x, x0)
    # defaults by kind of data, and errors
    assert SamplerSettings().resolved("image").as_dict()["step_size"] == 0.02
    assert SamplerSettings("ula").resolved("toy").steps == 300
    with pytest.raises(ValueError, match="resolve"):
        sample_gebm(model, 4, SamplerSettings())
    with pytest.raises(ValueError, match="sampler must be one of"):
        SamplerSettings("nuts").resolved("toy")
    with pytest.raises(ValueError, match="steps"):
        SamplerSettings(steps=-1).resolved("toy")


def test_cli_train_resume_and_sample(tmp_path, capsys):
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(["train", "gebm", "--data", "gaussians25", "--out", str(whole), "--width", "16", *FAST]) == 0
    report = json.loads((whole / "metrics.json").read_text())
    for side in ("base", "gebm"):
        assert set(report[side]) == {"mmd2", "mmd_pvalue", "kale", "modes_covered", "high_quality_frac"}
        assert 0 < report[side]["mmd_pvalue"] <= 1 and 0 <= report[side]["modes_covered"] <= 25
    assert report["iterations"] == 6 and report["sampler"]["name"] == "kla"
    assert {p.name for p in whole.glob("*.png")} == {"base.png", "gebm.png", "energy.png"}
    out = capsys.readouterr().out
    assert "base" in out and "gebm" in out and "high_quality_frac" in out

    # 3 iterations, then --resume to 6: the same checkpoint, bit for bit, and so the same metrics
    fast3 = [a if a != "6" else "3" for a in FAST]
    assert main(["train", "gebm", "--data", "gaussians25", "--out", str(split), "--width", "16", *fast3]) == 0
    assert main(["train", "gebm", "--data", "gaussians25", "--out", str(split), "--resume", *FAST]) == 0  # width from the ckpt
    assert_same_state(checkpoint.load(whole / "checkpoint.pt"), checkpoint.load(split / "checkpoint.pt"))
    resumed = json.loads((split / "metrics.json").read_text())
    assert resumed["base"] == report["base"] and resumed["gebm"] == report["gebm"]

    # refusing to overwrite a run, and a clear error for a resume with other settings
    assert main(["train", "gebm", "--data", "gaussians25", "--out", str(whole), *FAST]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "gebm", "--data", "gaussians25", "--out", str(split), "--resume", "--width", "32", *FAST]) == 2
    assert "width" in capsys.readouterr().err

    # more samples from the checkpoint with another sampler and backend
    npz, png = tmp_path / "s.npz", tmp_path / "s.png"
    assert main(["sample", "gebm", "--ckpt", str(whole), "--n", "50", "--sampler", "mala", "--backend", "cpp",
                 "--sampler-steps", "4", "--out", str(npz), "--plot", str(png)]) == 0
    saved = np.load(npz)
    assert saved["x"].shape == (50, 2) and saved["z"].shape == (50, 2) and png.stat().st_size > 5000
    model, config, iters = load_model(whole)
    assert iters == 6 and config.width == 16
    torch.testing.assert_close(model.generator(torch.from_numpy(saved["z"])), torch.from_numpy(saved["x"]))


def test_cli_images_report_classifier_distance(tmp_path, monkeypatch):
    monkeypatch.setenv("PYSAMPLER_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "digits"
    args = ["train", "gebm", "--data", "digits", "--out", str(out), "--width", "8", "--batch-size", "16", *FAST]
    assert main(args) == 0
    report = json.loads((out / "metrics.json").read_text())
    for side in ("base", "gebm"):
        assert set(report[side]) == {"mmd2", "mmd_pvalue", "kale", "fd_classifier"}
        assert report[side]["fd_classifier"] > 0
    assert report["classifier"]["test_accuracy"] > 0.9 and report["classifier"]["cached"] is False
    assert {p.name for p in out.glob("*.png")} == {"base.png", "gebm.png"}
    # the classifier is trained once: a second run loads it
    assert main([*args[:5], str(tmp_path / "again"), *args[6:]]) == 0
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["classifier"]["cached"] is True


def test_cli_errors(tmp_path, capsys):
    assert main(["train", "gebm", "--data", "nonexistent-set", "--out", str(tmp_path), *FAST]) == 2
    assert "nonexistent-set" in capsys.readouterr().err
    assert main(["train", "gebm", "--out", str(tmp_path / "r"), "--resume", *FAST]) == 2
    assert "no GEBM checkpoint" in capsys.readouterr().err
    assert main(["sample", "gebm", "--ckpt", str(tmp_path / "missing"), "--n", "5"]) == 2
    assert main(["train", "gebm", "--out", str(tmp_path / "x"), "--iters", "2", "--eval-samples", "2", "--no-progress"]) == 2
    assert "--eval-samples" in capsys.readouterr().err


# ---------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    trainer = Trainer(_tiny_config(iters=4, checkpoint_every=2), out)
    trainer.run()
    torch.save({k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, f"{out}/rank{rank}.pt")
    torch.save(trainer.rng.get_state(), f"{out}/rng{rank}.pt")
    dist.destroy_process_group()


def test_ddp_two_cpu_processes_hold_identical_parameters(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
    # the ranks drew different batches (their own streams), so DDP's averaging did real work:
    # a single-process run of the same settings ends elsewhere
    single = Trainer(_tiny_config(iters=4), tmp_path / "single")
    single.run()
    assert not all(torch.equal(r0[k], v) for k, v in single.model.state_dict().items() if v.is_floating_point())
    assert not torch.equal(torch.load(tmp_path / "rng0.pt"), torch.load(tmp_path / "rng1.pt"))
    saved = checkpoint.load(tmp_path / "checkpoint.pt")
    assert saved["iteration"] == 4 and len(saved["rng"]) == 2
    assert torch.equal(saved["rng"][1], torch.load(tmp_path / "rng1.pt"))


def test_torchrun_command(tmp_path):
    # the README's multi-process command, as torchrun runs it: 2 gloo processes, rank 0 reports
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "pysampler", "train", "gebm", "--data", "gaussians25", "--out", str(out), "--width", "16", *FAST]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("GEBM on gaussians25") == 1  # rank 0 alone reports
    report = json.loads((out / "metrics.json").read_text())
    assert report["processes"] == 2 and report["iterations"] == 6
    assert len(checkpoint.load(out / "checkpoint.pt")["rng"]) == 2
