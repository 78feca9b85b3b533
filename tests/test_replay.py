"""ps.ReplayBuffer (persistent chains) and pysampler.checkpoint (atomic saves)."""

import os
import stat

import pytest
import torch

import pysampler as ps
from pysampler import checkpoint


def _init(n, g):
    return torch.randn(n, 3, generator=g, dtype=torch.float64)


def test_fills_from_empty_then_reuses():
    buf = ps.ReplayBuffer(10, reinit_prob=0.0, init_fn=_init)
    x, slots = buf.sample(4)
    assert x.shape == (4, 3) and slots.tolist() == [0, 1, 2, 3] and len(buf) == 0
    buf.push(x + 1, slots)
    assert len(buf) == 4
    y, s2 = buf.sample(50)
    assert bool((s2 < 4).all())
    torch.testing.assert_close(y, (x + 1)[s2], rtol=0, atol=0)


def test_ring_append_overwrites_the_oldest():
    buf = ps.ReplayBuffer(5, init_fn=_init)
    buf.push(torch.arange(3, dtype=torch.float64)[:, None].expand(3, 3))
    buf.push(torch.arange(3, 7, dtype=torch.float64)[:, None].expand(4, 3))
    assert len(buf) == 5 and buf.cursor == 2
    assert buf.storage[:, 0].tolist() == [5, 6, 2, 3, 4]
    buf.push(torch.arange(10, 22, dtype=torch.float64)[:, None].expand(12, 3))  # more than the capacity
    assert sorted(buf.storage[:, 0].tolist()) == [17, 18, 19, 20, 21]


def test_reinit_fraction():
    # Stored states are all 100; restarted chains come from init_fn (standard normal).
    n, p = 20000, 0.3
    buf = ps.ReplayBuffer(100, reinit_prob=p, init_fn=_init, seed=3)
    buf.push(torch.full((100, 3), 100.0, dtype=torch.float64))
    x, _ = buf.sample(n)
    restarted = (x[:, 0] != 100.0).double().mean().item()
    assert abs(restarted - p) < 5 * (p * (1 - p) / n) ** 0.5
    buf.reinit_prob = 1.0  # annealing: set between steps
    assert bool((buf.sample(50)[0] != 100.0).all())


def test_bad_inputs():
    with pytest.raises(ValueError, match="capacity must be an int >= 1"):
        ps.ReplayBuffer(0, init_fn=_init)
    with pytest.raises(ValueError, match=r"reinit_prob must be a float in \[0, 1\]"):
        ps.ReplayBuffer(4, reinit_prob=1.5, init_fn=_init)
    with pytest.raises(TypeError, match="init_fn must be a callable"):
        ps.ReplayBuffer(4)
    with pytest.raises(ValueError, match=r"init_fn\(2, generator\) must return a tensor of shape \(2, \*event\)"):
        ps.ReplayBuffer(4, init_fn=lambda n, g: torch.zeros(3)).sample(2)
    buf = ps.ReplayBuffer(4, init_fn=_init)
    buf.push(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x must be \(n, 3\) torch.float64"):
        buf.push(torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="slots must be an int64 tensor of shape"):
        buf.push(torch.zeros(2, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"slots must lie in \[0, 4\)"):
        buf.push(torch.zeros(1, 3, dtype=torch.float64), torch.tensor([4]))
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        buf.sample(0)
    with pytest.raises(ValueError, match="capacity 4; this one 5"):
        ps.ReplayBuffer(5, init_fn=_init).load_state_dict(buf.state_dict())


def _train_steps(buf, first, last):
    """A persistent-chain loop: start from the buffer, run MALA, push back (seed = iteration)."""
    res = None
    for it in range(first, last):
        x0, slots = buf.sample(48)
        res = ps.sample(lambda x: 0.5 * x.square().sum(1), x0, ps.MALA(0.3), 4, seed=it)
        buf.push(res.x, slots)
        buf.reinit_prob = max(0.0, buf.reinit_prob - 0.02)  # annealed, as in VAEBM
    return res


def test_checkpoint_resume_is_exact(tmp_path):
    straight = ps.ReplayBuffer(100, reinit_prob=0.2, init_fn=_init, seed=7)
    final_straight = _train_steps(straight, 0, 6)

    first = ps.ReplayBuffer(100, reinit_prob=0.2, init_fn=_init, seed=7)
    _train_steps(first, 0, 3)
    path = tmp_path / "ckpt" / "buffer.pt"
    checkpoint.save({"buffer": first.state_dict(), "iteration": 3}, path)
    del first

    saved = checkpoint.load(path)
    resumed = ps.ReplayBuffer(100, init_fn=_init, seed=0)  # seed and reinit_prob come from the file
    resumed.load_state_dict(saved["buffer"])
    final_resumed = _train_steps(resumed, saved["iteration"], 6)
    assert torch.equal(final_resumed.x, final_straight.x)
    assert torch.equal(resumed.storage[: len(resumed)], straight.storage[: len(straight)])
    assert resumed.reinit_prob == straight.reinit_prob and resumed.cursor == straight.cursor


def test_checkpoint_save_is_atomic(tmp_path):
    path = tmp_path / "state.pt"
    checkpoint.save({"a": torch.ones(3)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        checkpoint.save({"a": torch.zeros(3), "bad": Unpicklable()}, path)
    assert torch.equal(checkpoint.load(path)["a"], torch.ones(3))  # the last good file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # and no temporary file is left


def test_checkpoint_files_get_the_umask_mode(tmp_path):
    """An atomic save leaves an ordinary file (0666 less the umask), not mkstemp's private 0600."""
    old = os.umask(0o022)
    try:
        checkpoint.save({"a": torch.ones(1)}, tmp_path / "state.pt")
        checkpoint.save_json({"a": 1}, tmp_path / "metrics.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "state.pt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644
