"""Files a command writes: atomically, so a crash never leaves half a file behind.

Every durable file of the project (JSON summaries, a search's state, RL checkpoints,
cached features) goes through :func:`atomic_write`: the payload is written to a
temporary file beside the target, flushed to disk, then moved over the target in one
``os.replace``. A reader (or a resumed run) sees the old file or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def read_torch_file(path: Path, what: str, fix: str = "") -> Any:
    """A file this project wrote with ``torch.save``, loaded with ``weights_only=True`` (no
    code runs). A file that will not load is one line: ``what`` it should be, whether it
    is corrupt (truncated, not torch's) or holds objects beyond tensors and plain values
    (not written by this project: untrusted), and ``fix``, what to do instead. Never
    torch's advice to retry with ``weights_only=False``, which would run the file's code."""
    import pickle

    import torch

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        why = "it holds objects beyond tensors and plain values: not written by this project"
    except FileNotFoundError:
        why = "no such file"
    except Exception as exc:  # truncated zip, text, another format: torch's own errors
        why = f"corrupt or not torch's format ({type(exc).__name__})"
    raise UserError(f"{path}: cannot read it as {what} ({why}){'; ' + fix if fix else ''}")


@contextmanager
def held_alone(folder: Path, busy: str) -> Iterator[None]:
    """Hold ``folder`` for this process only while the block runs; another process (or
    block) asking for it meanwhile gets the :class:`UserError` ``busy``. A lock on the
    folder itself (``flock``): nothing is written into it, and the kernel releases it when
    the process ends, so a killed driver leaves no stale lock behind."""
    import fcntl

    handle = os.open(folder, os.O_RDONLY)  # not inherited by the processes this one starts
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(busy) from None
        yield
    finally:
        os.close(handle)
