"""Atomic checkpoints: a crash mid-write never leaves a truncated file in place of the last good one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["save", "load", "save_json"]


def _write_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary file in ``path``'s directory, flush it to disk, then rename
    it over ``path`` (``os.replace`` is atomic on POSIX and Windows); on any failure the temporary
    file is removed and ``path`` keeps its previous content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file 0600; give it the mode an ordinary open() would (0666 less the umask)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` atomically."""
    _write_atomically(path, lambda f: torch.save(obj, f))


def save_json(obj: Any, path: str | os.PathLike) -> None:
    """``obj`` as indented JSON, atomically (reports such as a trainer's metrics.json)."""
    _write_atomically(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def load(path: str | os.PathLike, map_location: Any = None) -> Any:
    """What :func:`save` wrote (tensors, dicts, generator states; ``weights_only`` loading)."""
    return torch.load(path, map_location=map_location, weights_only=True)
