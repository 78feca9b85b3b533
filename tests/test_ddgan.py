"""The DDGAN pipeline (issue 8): forward-process and posterior statistics through the trainer's code
path, the losses on tiny tensors, the networks, Algorithm 2 (``ps.diffusion.reverse_sample``),
StackedMNIST and its mode metric, checkpoints that resume bit for bit, the command line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import pysampler as ps
from conftest import assert_gaussian_moments, assert_same_state
from pysampler import checkpoint, metrics
from pysampler.cli import main
from pysampler.diffusion import VPSchedule, counters_per_batch, reverse_sample
from pysampler.models import data as datasets
from pysampler.models.ddgan import DDGANConfig, Trainer, build_model, discriminator_loss, generator_loss, r1_penalty
from pysampler.models.ddgan.nets import AdaptiveGroupNorm, ResNetDiscriminator, UNetGenerator, build_networks, minibatch_std
from pysampler.models.ddgan.train import load_model

N_STAT = 40000  # independent draws per statistical check


def _tiny_config(**kw) -> DDGANConfig:
    base = dict(data="gaussians25", iters=6, width=16, batch_size=32, latent_dim=2, checkpoint_every=3, r1_every=2)
    return DDGANConfig(**{**base, **kw})


# ------------------------------------------------------------------ forward process and posterior


@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.parametrize("t", [1, 2, 4])
def test_forward_pair_statistics_through_the_trainer(backend, t):
    # the trainer's draw: schedule.q_sample_pair with the trainer's stream tensor
    model = build_model((2,), 2, 4, 8)
    sched = model.schedule.to(dtype=torch.float64)
    x0 = torch.tensor([[1.5, -0.5]], dtype=torch.float64).expand(N_STAT, 2).contiguous()
    stream = torch.tensor([7, 0], dtype=torch.int64)
    x_prev, x_t = sched.q_sample_pair(x0, t, rng=stream, backend=backend)
    ab_prev = float(sched.alphas_cumprod_prev[t - 1])
    ab, alpha = float(sched.alphas_cumprod[t - 1]), float(sched.alphas[t - 1])
    if t == 1:
        assert torch.equal(x_prev, x0)  # q(x_0 | x_0) is the point mass
    else:
        assert_gaussian_moments(x_prev, math.sqrt(ab_prev) * x0[0], (1 - ab_prev) * torch.eye(2))
    assert_gaussian_moments(x_t, math.sqrt(ab) * x0[0], (1 - ab) * torch.eye(2))
    # the pair's joint law: Cov(x_{t-1}, x_t) = sqrt(alpha_t) (1 - abar_{t-1}) per coordinate
    joint = torch.cat([x_prev[:, :1], x_t[:, :1]], 1)
    cross = math.sqrt(alpha) * (1 - ab_prev)
    cov = torch.tensor([[1 - ab_prev, cross], [cross, 1 - ab]], dtype=torch.float64)
    if t > 1:
        assert_gaussian_moments(joint, torch.tensor([math.sqrt(ab_prev), math.sqrt(ab)]) * 1.5, cov)
    # the same stream on the other backend gives the same pair
    other = sched.q_sample_pair(x0, t, rng=stream, backend="cpp" if backend == "torch" else "torch")
    torch.testing.assert_close(other[0], x_prev, atol=1e-6, rtol=1e-7)
    torch.testing.assert_close(other[1], x_t, atol=1e-6, rtol=1e-7)


@pytest.mark.parametrize("t", [2, 3, 4])
def test_denoise_composes_with_the_forward_process(t):
    # With G returning the true x_0 (a point mass at a), x_t ~ q(x_t | a) then the trainer's denoise
    # step x_{t-1} ~ q(x_{t-1} | x_t, a) must be distributed as q(x_{t-1} | a) (eq. 2.50 is the exact posterior).
    a = torch.tensor([[-2.0, 0.5]])
    model = build_model((2,), 2, 4, 8)
    sched = model.schedule
    x_t = sched.q_sample(a.expand(N_STAT, 2).contiguous(), t, seed=3)
    oracle = lambda x, z, step: a.expand_as(x)  # noqa: E731
    stream = torch.tensor([11, 0], dtype=torch.int64)
    x_prev = model.denoise(x_t, torch.full((N_STAT,), t), torch.zeros(N_STAT, 2), stream, generator=oracle)
    ab_prev = float(sched.alphas_cumprod_prev[t - 1])
    assert_gaussian_moments(x_prev, math.sqrt(ab_prev) * a[0], (1 - ab_prev) * torch.eye(2))
    # t = 1: the posterior is the point mass at the prediction
    x1 = sched.q_sample(a.expand(8, 2).contiguous(), 1, seed=3)
    assert torch.equal(model.denoise(x1, torch.ones(8, dtype=torch.int64), torch.zeros(8, 2), stream, generator=oracle),
                       a.expand(8, 2))


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_generator_gradient_flows_through_the_fused_posterior(backend):
    # d x_{t-1} / d x_0 = c0_t per sample, on every backend (the fused kernels have no autograd of their own)
    sched = VPSchedule(4)
    x0 = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    xt = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([1, 2, 3, 4, 2, 3])
    out = ps.diffusion.posterior_sample(sched, x0, xt, t, seed=5, backend=backend)
    weights = torch.randn_like(out)
    g0, gt = torch.autograd.grad((out * weights).sum(), (x0, xt))
    torch.testing.assert_close(g0, weights * sched.posterior_mean_coef_x0[t - 1][:, None], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gt, weights * sched.posterior_mean_coef_xt[t - 1][:, None], rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a: sched.q_sample(a, t, seed=2, backend=backend), (x0,))


# ------------------------------------------------------------------------------------ losses


def test_losses_on_tiny_tensors():
    real = torch.tensor([0.0, 2.0])
    fake = torch.tensor([-1.0, 1.0, 0.5])
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731
    expected_d = (softplus(-0.0) + softplus(-2.0)) / 2 + (softplus(-1.0) + softplus(1.0) + softplus(0.5)) / 3
    assert float(discriminator_loss(real, fake)) == pytest.approx(expected_d, rel=1e-6)
    assert float(generator_loss(fake)) == pytest.approx((softplus(1.0) + softplus(-1.0) + softplus(-0.5)) / 3, rel=1e-6)
    # R1 of a linear discriminator D(x) = w·x + b: |w|² for every sample
    w = torch.tensor([[0.5, -2.0, 1.0]])
    x = torch.randn(4, 3, requires_grad=True)
    assert float(r1_penalty(x @ w[0] + 0.3, x)) == pytest.approx(float(w.pow(2).sum()), rel=1e-6)
    # R1 trains the discriminator: its gradient reaches w
    w_param = w.clone().requires_grad_(True)
    (grad_w,) = torch.autograd.grad(r1_penalty(x @ w_param[0], x), w_param)
    torch.testing.assert_close(grad_w, 2 * w)


def test_ema_update():
    model = build_model((2,), 2, 4, 8)
    before = [p.detach().clone() for p in model.ema.parameters()]
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(1.0)
    model.update_ema(0.9)
    for e, b, p in zip(model.ema.parameters(), before, model.generator.parameters(), strict=True):
        torch.testing.assert_close(e, 0.9 * b + 0.1 * p)
    assert not any(p.requires_grad for p in model.ema.parameters())


# ---------------------------------------------------------------------------------- networks


def test_network_shapes():
    g, d = build_networks((2,), 3, 4, 32)
    x, z, t = torch.randn(5, 2), torch.randn(5, 3), torch.randint(1, 5, (5,))
    assert g(x, z, t).shape == (5, 2) and d(x, x, t).shape == (5,)
    for shape in [(3, 28, 28), (1, 32, 32), (1, 8, 8)]:
        g, d = build_networks(shape, 10, 4, 8)
        x = torch.randn(4, *shape)
        out = g(x, torch.randn(4, 10), torch.randint(1, 5, (4,)))
        assert out.shape == x.shape and float(out.detach().abs().max()) <= 1.0  # tanh: images in [-1, 1]
        assert d(out, x, torch.randint(1, 5, (4,))).shape == (4,)
    with pytest.raises(ValueError, match="divisible"):
        UNetGenerator((1, 30, 30), 4)
    with pytest.raises(ValueError, match="divisible"):
        ResNetDiscriminator((1, 30, 30))
    with pytest.raises(ValueError, match="vector"):
        build_networks((4, 4), 2, 4, 8)


def test_z_enters_through_adaptive_group_norm():
    torch.manual_seed(0)
    norm = AdaptiveGroupNorm(8, 4)
    h = torch.randn(3, 8, 5, 5)
    # zero-initialised: a plain group norm whatever w is
    torch.testing.assert_close(norm(h, torch.randn(3, 4)), torch.nn.functional.group_norm(h, 8, eps=1e-5))
    with torch.no_grad():
        norm.affine.weight.normal_()
    w = torch.randn(3, 4)
    scale, shift = norm.affine(w).chunk(2, 1)
    expected = (1 + scale[:, :, None, None]) * torch.nn.functional.group_norm(h, 8, eps=1e-5) + shift[:, :, None, None]
    torch.testing.assert_close(norm(h, w), expected)
    # the U-Net's output depends on z (only through the mapping network and AdaGN)
    g = UNetGenerator((1, 8, 8), 4, width=8)
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, AdaptiveGroupNorm):
                m.affine.weight.normal_(std=0.1)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([2, 2])
    assert not torch.allclose(g(x, torch.randn(2, 4), t), g(x, torch.randn(2, 4), t))


def test_minibatch_std_layer():
    h = torch.randn(6, 2, 3, 3)
    out = minibatch_std(h, group=4)  # 6 samples: groups of 3 (the largest divisor <= 4)
    assert out.shape == (6, 3, 3, 3)
    groups = h.view(3, 2, 2, 3, 3)
    expected = groups.var(0, unbiased=False).add(1e-8).sqrt().mean((1, 2, 3))
    torch.testing.assert_close(out[:, 2, 0, 0], expected.repeat(3))


# -------------------------------------------------------------------------- Algorithm 2


def test_reverse_sample_stream_layout_and_backends():
    sched = VPSchedule(3, dtype=torch.float32)
    torch.manual_seed(0)
    net = build_networks((2,), 2, 3, 16)[0].eval()
    res = reverse_sample(net, sched, 5, (2,), 2, seed=9, batch_size=2, keep_chain=True, backend="torch")
    assert res.x.shape == (5, 2) and res.chain.shape == (4, 5, 2)
    assert torch.equal(res.chain[-1], res.x) and not res.cuda_graph and "CUDA" in res.cuda_graph_reason
    # batch b draws at b * counters_per_batch: x_T of the second batch is rng.normal there
    per_batch = counters_per_batch(sched, 2, (2,), 2)
    assert per_batch == 2 * 2 * 4 + 2 * 2 * 3
    torch.testing.assert_close(res.chain[0, 2:4], ps.rng.normal(9, per_batch, (2, 2)))
    # Algorithm 2 written out by hand for the first batch, with the same stream
    x = ps.rng.normal(9, 0, (2, 2))
    offset = 4
    with torch.no_grad():
        for t in (3, 2, 1):
            z = ps.rng.normal(9, offset, (2, 2))
            offset += 4
            x = ps.diffusion.posterior_sample(sched, net(x, z, torch.full((2,), t)), x, t, 9, offset, backend="torch")
            offset += 4
    torch.testing.assert_close(res.x[:2], x)
    # the same chains on the C++ backend
    torch.testing.assert_close(reverse_sample(net, sched, 5, (2,), 2, seed=9, batch_size=2, backend="cpp").x, res.x,
                               atol=2e-6, rtol=2e-6)
    # the last batch is drawn at full size and cut: rows do not depend on n within a batch
    torch.testing.assert_close(reverse_sample(net, sched, 4, (2,), 2, seed=9, batch_size=2, backend="torch").x, res.x[:4])


def test_reverse_sample_with_an_exact_denoiser_follows_the_forward_marginals():
    # data = point mass at a: G ≡ a is the exact denoiser, and every state x_t of the chain must be
    # distributed as q(x_t | a) (x_T ~ N(0, I) is q(x_T | a) up to sqrt(abar_T) a ≈ 0.007 a)
    sched = VPSchedule(4, dtype=torch.float32)
    a = torch.tensor([1.0, -0.5])
    res = reverse_sample(lambda x, z, t: a.expand_as(x), sched, N_STAT, (2,), 1, seed=4, keep_chain=True)
    for j, t in enumerate(range(3, 0, -1), start=1):  # chain[j] is x_t
        ab = float(sched.alphas_cumprod[t - 1])
        assert_gaussian_moments(res.chain[j], math.sqrt(ab) * a, (1 - ab) * torch.eye(2))
    assert torch.equal(res.x, a.expand(N_STAT, 2))


def test_reverse_sample_errors():
    sched = VPSchedule(2)
    net = lambda x, z, t: x  # noqa: E731
    with pytest.raises(ValueError, match="n must be"):
        reverse_sample(net, sched, 0, (2,), 1)
    with pytest.raises(ValueError, match="cuda_graph"):
        reverse_sample(net, sched, 2, (2,), 1, cuda_graph="yes")
    with pytest.raises(TypeError, match="sched"):
        reverse_sample(net, 4, 2, (2,), 1)
    with pytest.raises(ValueError, match="denoiser must return"):
        reverse_sample(lambda x, z, t: x[:, :1], sched, 2, (2,), 1)
    with pytest.raises(ValueError, match="seed"):
        reverse_sample(net, sched, 2, (2,), 1, seed=-1)


# ------------------------------------------------------------------------------ StackedMNIST


def test_stacked_modes_on_a_synthetic_classifier():
    # channel value v/10 + noise-free: a classifier that reads the digit back from the mean
    digits = torch.tensor([[1, 2, 3], [1, 2, 3], [9, 0, 0], [4, 4, 4]])
    images = (digits.float() / 10.0)[:, :, None, None].expand(4, 3, 5, 5).contiguous()
    classify = lambda x: (x.mean((1, 2, 3)) * 10).round().long()  # noqa: E731
    hist = metrics.stacked_modes(images, classify, batch=3)
    assert hist.n_covered == 3
    assert int(hist.counts[123]) == 2 and int(hist.counts[900]) == 1 and int(hist.counts[444]) == 1
    p = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    assert hist.kl == pytest.approx(float((p * torch.log(p * 1000)).sum()), rel=1e-12)
    # uniform over all 1000 modes: KL 0
    all_modes = torch.cartesian_prod(*[torch.arange(10)] * 3)
    uniform = (all_modes.float() / 10.0)[:, :, None, None].expand(1000, 3, 2, 2)
    assert metrics.stacked_modes(uniform, classify).kl == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="one label"):
        metrics.stacked_modes(images, lambda x: torch.full((x.shape[0],), 12))
    with pytest.raises(ValueError, match="images must be"):
        metrics.stacked_modes(torch.zeros(3, 5), classify)


def test_stacked_mnist_construction():
    data = datasets.load("stackedmnist", n_held_out=300)
    assert data.kind == "image" and data.shape == (3, 28, 28) and data.held_out.shape == (300, 3, 28, 28)
    digits = data.digits
    # every channel of a held-out stack is a held-out digit, and its label is the mode's digit
    for i in range(5):
        mode = int(data.held_out_labels[i])
        for c, digit in enumerate((mode // 100, mode // 10 % 10, mode % 10)):
            match = (digits.held_out == data.held_out[i, c][None, None]).flatten(1).all(1)
            assert bool(match.any()) and digit in digits.held_out_labels[match].tolist()
    batch = data.batch(16, torch.Generator().manual_seed(0))
    assert batch.shape == (16, 3, 28, 28)
    assert all(bool((digits.train == batch[i, c][None, None]).flatten(1).all(1).any()) for i in range(4) for c in range(3))


# ---------------------------------------------------------------------------- training


def test_crash_then_resume_is_bit_identical(tmp_path, monkeypatch):
    whole = Trainer(_tiny_config(), tmp_path / "whole")
    whole.run()
    assert whole.iteration == 6
    crashing = Trainer(_tiny_config(), tmp_path / "crash")
    real_iterate = Trainer.iterate
    calls = {"n": 0}

    def failing_iterate(self):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("simulated crash")
        return real_iterate(self)

    monkeypatch.setattr(Trainer, "iterate", failing_iterate)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.run()
    monkeypatch.setattr(Trainer, "iterate", real_iterate)
    assert checkpoint.load(tmp_path / "crash" / "checkpoint.pt")["iteration"] == 3
    assert not [p for p in (tmp_path / "crash").iterdir() if p.name.endswith(".tmp")]
    resumed = Trainer(_tiny_config(), tmp_path / "crash")
    resumed.resume()
    resumed.run()
    assert_same_state(whole.state_dict(), resumed.state_dict())
    assert_same_state(*[checkpoint.load(tmp_path / run / "checkpoint.pt") for run in ("whole", "crash")])
    # the discriminator alone was trained by its step, the generator by its own (no stray gradients)
    assert all(p.requires_grad for p in resumed.model.discriminator.parameters())


def test_training_changes_both_networks_and_checks_its_settings(tmp_path):
    tr = Trainer(_tiny_config(iters=2), tmp_path)
    g0 = [p.detach().clone() for p in tr.model.generator.parameters()]
    d0 = [p.detach().clone() for p in tr.model.discriminator.parameters()]
    tr.run()
    assert all(not torch.equal(a, b) for a, b in zip(g0, tr.model.generator.parameters(), strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(d0, tr.model.discriminator.parameters(), strict=True))
    other = Trainer(_tiny_config(iters=2, r1_gamma=1.0), tmp_path)
    with pytest.raises(ValueError, match="r1_gamma"):
        other.resume()
    for bad, match in [(dict(T=0), "T must"), (dict(ema=1.0), "ema"), (dict(lr_g=0.0), "lr_g"), (dict(beta_min=-1.0), "beta_min"),
                       (dict(betas=(0.5,)), "betas")]:
        with pytest.raises(ValueError, match=match):
            _tiny_config(**bad).resolved("toy")


def test_cli_train_writes_metrics_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "ddgan", "--data", "gaussians25", "--iters", "4", "--width", "16", "--batch-size", "32",
            "--checkpoint-every", "2", "--eval-samples", "300", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    report = json.loads((out / "metrics.json").read_text())
    for name in ("ddgan", "gan"):
        assert {"mmd2", "modes_covered", "high_quality_frac", "kale"} <= set(report[name])
        assert report[f"{name}_run"]["iterations"] == 4
    assert report["ddgan_run"]["config"]["T"] == 4 and report["gan_run"]["config"]["T"] == 1
    assert report["ddgan_run"]["config"]["r1_gamma"] == 0.05 and report["gan_run"]["config"]["r1_gamma"] == 0.0
    assert (out / "ddgan.png").is_file() and (out / "gan.png").is_file() and (out / "gan" / "checkpoint.pt").is_file()
    printed = capsys.readouterr().out
    assert "ddgan" in printed and "gan" in printed
    # a finished run resumed does no more iterations and reports the same
    before = checkpoint.load(out / "checkpoint.pt")
    assert main(args + ["--resume"]) == 0
    assert_same_state(before, checkpoint.load(out / "checkpoint.pt"))
    assert json.loads((out / "metrics.json").read_text())["ddgan"] == report["ddgan"]
    # without --resume an existing run is never overwritten; another setting is refused on resume
    assert main(args) == 2
    assert main(args + ["--resume", "--lr-d", "0.1"]) == 2
    assert main(args + ["--resume", "--gan-r1-gamma", "0.05"]) == 2  # the baseline's settings are checked too
    other = [a if a != str(out) else str(tmp_path / "other") for a in args]
    assert main(other + ["--gan-r1-gamma", "-1"]) == 2 and not (tmp_path / "other").exists()  # refused before training
    assert "lr_d" in capsys.readouterr().err
    # sample ddgan: the checkpoint's EMA generator, in batches
    samples = tmp_path / "s.npz"
    assert main(["sample", "ddgan", "--ckpt", str(out), "--n", "7", "--batch-size", "3", "--out", str(samples),
                 "--plot", str(tmp_path / "s.png")]) == 0
    x = np.load(samples)["x"]
    model, _, _ = load_model(out)
    expected = model.sample(7, 0, batch_size=3).x
    np.testing.assert_array_equal(x, expected.numpy())
    assert main(["sample", "ddgan", "--ckpt", str(out), "--out", str(tmp_path / "s.txt")]) == 2


def test_cli_stackedmnist_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("PYSAMPLER_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "smnist"
    assert main(["train", "ddgan", "--data", "stackedmnist", "--iters", "2", "--width", "8", "--batch-size", "8",
                 "--latent-dim", "8", "--eval-samples", "100", "--no-progress", "--out", str(out)]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["ddgan"]) == {"modes_covered", "kl_modes"} and "gan" not in report
    assert 1 <= report["ddgan"]["modes_covered"] <= 100
    # real stacks measured the same way: nearly all distinct modes at n = 100, KL near log(1000) - log(100)
    assert report["real_data"]["modes_covered"] >= 90
    assert 0.5 < report["classifier"]["test_accuracy"] <= 1.0
    assert (out / "ddgan.png").is_file() and (out / "ddgan_chain.png").is_file()
