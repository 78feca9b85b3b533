"""The `pysampler` command: the main job covers all 25 modes with every sampler."""

from __future__ import annotations

import subprocess
import sys

import pysampler as ps
from pysampler import cli


def test_sample_gmm25_covers_every_mode(tmp_path, capsys):
    # Uniform starts over [-5, 5]² give every mode ≈ chains/25 chains; 200 steps is ≈ 8 relaxation
    # times of a σ = 0.5 mode at the default step sizes.
    png = tmp_path / "gmm25.png"
    assert cli.main(["sample", "gmm25", "--chains", "2048", "--steps", "200", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    names = ("ULA", "MALA", "KineticLangevin", "HMC")
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0] in names]
    assert [r[0] for r in rows] == ["ULA", "MALA", "KineticLangevin", "HMC"]
    for name, backend, _rate, acceptance, modes, near in rows:
        assert backend in [*ps.available_backends("cpu"), "cpp-fused"]
        assert modes == "25/25", (name, modes)
        # A 2-D Gaussian has 1 - e^-2 = 0.865 of its mass within 2σ; neighbours add a little.
        assert 0.8 < float(near) < 0.98, (name, near)
        assert float(acceptance) > 0.9
    assert png.stat().st_size > 10_000


def test_help_explains_every_option():
    cmd = [sys.executable, "-m", "pysampler", "sample", "gmm25", "--help"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    for option in ("--chains", "--steps", "--burn-in", "--seed", "--backend", "--device", "--dtype", "--samplers",
                   "--ula-step", "--mala-step", "--kla-step", "--friction", "--hmc-step", "--n-leapfrog", "--plot", "--progress"):
        assert option in out, option
    assert "gmm25" in out
    # the GEBM commands document theirs
    out = subprocess.run([sys.executable, "-m", "pysampler", "train", "gebm", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for option in ("--data", "--iters", "--out", "--resume", "--sampler", "--step-size", "--temperature", "--backend",
                   "--energy-steps", "--warmup-iters", "--gradient-penalty", "--refine-steps", "--lr-energy", "--betas"):
        assert option in out, option
    out = subprocess.run([sys.executable, "-m", "pysampler", "sample", "gebm", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for option in ("--ckpt", "--n", "--sampler", "--backend", "--out", "--plot"):
        assert option in out, option


def test_bad_arguments_exit_2(capsys):
    assert cli.main(["sample", "gmm25", "--chains", "0"]) == 2
    assert cli.main(["sample", "gmm25", "--backend", "nope", "--plot", ""]) == 2
    assert "backend 'nope' is not available" in capsys.readouterr().err
