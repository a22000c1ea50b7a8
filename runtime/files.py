"""Files a command writes: atomically, so a crash never leaves half a file behind.

Every durable file of the project (JSON summaries, a search's state, RL checkpoints,
cached features) goes through :func:`atomic_write`: the payload is written to a
temporary file beside the target, flushed to disk, then moved over the target in one
``os.replace``. A reader (or a resumed run) sees the old file or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from runtime.errors import UserError


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write`` on a binary file handle, then move the result over ``path``."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, payload: Any) -> Path:
    text = json.dumps(payload, indent=2) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def check_writable(path: Path, option: str) -> Path:
    """Fail before hours of work, not after, when an output cannot be written."""
    path = Path(path)
    parent = path.resolve().parent
    if not parent.is_dir():
        raise UserError(f"{option} {path}: directory {parent} does not exist")
    if path.is_dir():
        raise UserError(f"{option} {path}: is a directory, expected a file")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"{option} {path}: not writable")
    return path
