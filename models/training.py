"""What every trainer (GEBM, DDGAN) does the same way: saving, resuming and reading its checkpoints,
refusing to resume a run under other training settings, and assembling a run's configuration from
the command line.

Checkpoints are written atomically by :func:`pysampler.checkpoint.save` (a crash never leaves a
half-written file) and hold everything a run needs to continue bit for bit: networks, optimiser
states, every random stream, the iteration.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from pysampler import checkpoint

__all__ = [
    "CheckpointedTrainer", "train", "CHECKPOINT_NAME", "read_checkpoint", "check_same_training", "config_from_args",
    "config_dict", "saved_config",
]

CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointedTrainer:
    """Saving and resuming for a trainer with ``state_dict()`` / ``load_state_dict()``, ``out``
    (folder or None), ``device`` and ``rank`` (0 unless distributed): OUT/checkpoint.pt, atomically."""

    out: Path | None
    rank: int = 0

    def save(self) -> Path | None:
        """Write OUT/checkpoint.pt atomically (rank 0 writes; every rank builds the state, which may
        gather from all of them)."""
        state = self.state_dict()
        if self.rank != 0 or self.out is None:
            return None
        path = self.out / CHECKPOINT_NAME
        checkpoint.save(state, path)
        return path

    def resume(self, path: str | Path | None = None) -> None:
        """Load a checkpoint (default OUT/checkpoint.pt) written by a run with the same training settings."""
        path = Path(path) if path is not None else self.out / CHECKPOINT_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path} to resume from")
        self.load_state_dict(checkpoint.load(path, map_location=self.device))


def train(trainer: CheckpointedTrainer, resume: bool = False, progress: bool = False) -> CheckpointedTrainer:
    """Resume ``trainer`` from OUT/checkpoint.pt when asked, and run it."""
    if resume:
        trainer.resume()
    trainer.run(progress)
    return trainer


def read_checkpoint(path: str | Path, kind: str) -> dict[str, Any]:
    """The checkpoint of a ``kind`` run ("gebm", "ddgan") at ``path``: the file, or the folder holding checkpoint.pt."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {kind.upper()} checkpoint at {path}")
    state = checkpoint.load(path, map_location="cpu")
    found = state.get("kind") if isinstance(state, dict) else None
    if found != kind:
        raise ValueError(f"{path} is not a {kind.upper()} checkpoint (kind {found!r})")
    return state


def check_same_training(config: Any, saved: dict[str, Any], fields: tuple[str, ...]) -> None:
    """Raise ValueError naming the first of ``fields`` in which ``config`` (a dataclass) differs from a
    checkpoint's saved configuration (tuples saved as lists compare equal)."""
    for name in fields:
        mine = getattr(config, name)
        theirs = tuple(saved[name]) if isinstance(mine, tuple) else saved[name]
        if mine != theirs:
            raise ValueError(f"the checkpoint was trained with {name}={theirs!r}; this run asks for {mine!r}")


def saved_config(state: dict[str, Any], cls: type) -> Any:
    """The ``cls`` configuration saved in a checkpoint (its lists back to tuples)."""
    saved = {k: (tuple(v) if isinstance(v, list) else v) for k, v in state["config"].items()}
    return cls(**saved)


def config_dict(config: Any) -> dict[str, Any]:
    """A dataclass configuration as a checkpoint / JSON dict (tuples as lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}


def config_from_args(args: argparse.Namespace, cls: type, fields: tuple[str, ...], always: dict[str, Any],
                     load_saved) -> Any:
    """A run's ``cls`` configuration from the command line: the ``fields`` given there, plus ``always``;
    with ``--resume`` the rest from OUT/checkpoint.pt (``load_saved(path)``), whose data must match;
    without it, a run already in OUT is refused (nothing is overwritten)."""
    given = {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}
    given = {k: (tuple(v) if isinstance(v, list) else v) for k, v in given.items()}
    given.update(always)
    ckpt = Path(args.out) / CHECKPOINT_NAME
    if args.resume:
        saved = load_saved(ckpt)
        if args.data != saved.data:
            raise ValueError(f"--data {args.data} differs from the checkpoint's {saved.data!r}")
        return dataclasses.replace(saved, **given)
    if ckpt.exists():
        raise ValueError(f"{ckpt} exists: pass --resume to continue that run, or choose another --out")
    return cls(**given)
