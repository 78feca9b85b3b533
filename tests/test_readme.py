"""The README's Python examples run as written (in a temporary directory)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for code in blocks:  # later blocks reuse names from earlier ones, as a reader would
        exec(compile(code, str(README), "exec"), namespace)
    res = namespace["res"]
    assert res.x.shape == (4096, 2) and res.trace.shape == (100, 4096, 2)
    assert (tmp_path / "chains.pt").exists()
    # the own-model examples: a GAN's latent space, a VAE's noise space (a dict state)
    assert namespace["latent"].x.shape == (128, 100)
    vae = namespace["vae"]
    assert set(vae.x) == {"z", "x"} and vae.x["x"].shape == (64, 3, 32, 32)
    assert namespace["images"].shape == (64, 3, 32, 32)
