"""Atomic checkpoints: a crash mid-write never leaves a truncated file in place of the last good one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["save", "load"]


def save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` atomically: written to a temporary file in the same directory,
    flushed to disk, then renamed over ``path`` (``os.replace`` is atomic on POSIX and Windows)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | os.PathLike, map_location: Any = None) -> Any:
    """What :func:`save` wrote (tensors, dicts, generator states; ``weights_only`` loading)."""
    return torch.load(path, map_location=map_location, weights_only=True)
