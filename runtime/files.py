"""Files a command writes: atomically, so a crash never leaves half a file behind.

Every durable file of the project (JSON summaries, a search's state, RL checkpoints,
cached features) goes through :func:`atomic_write`: the payload is written to a
temporary file beside the target, flushed to disk, then moved over the target in one
``os.replace``. A reader (or a resumed run) sees the old file or the new one, never a mix.
"""

from __future__ import annotations

import errno
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
    except OSError as exc:  # named: a full disk's error from a flush names no file
        tmp.unlink(missing_ok=True)
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_torch(path: Path, payload: Any) -> Path:
    """``torch.save`` of ``payload``, atomically. Serialised in memory first: torch's zip
    writer reports a full disk as an unreadable internal error, a plain write as ENOSPC."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write(path, lambda handle: handle.write(buffer.getbuffer()))


def write_json(path: Path, payload: Any) -> Path:
    text = json.dumps(payload, indent=2) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode()))


#: what the OS, SQLite and MLflow say of a write that found no room (lower case)
_NO_ROOM = ("no space left on device", "database or disk is full", "disk quota exceeded")
_NO_ROOM_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class OutOfSpace(UserError):
    """A write found its disk (or quota) full: the job stops as an interrupted one, its
    state as of the last write that fitted kept for ``--resume``."""


def out_of_space(error: BaseException | str) -> bool:
    """Whether ``error`` (an exception with its causes, or the text a trial reported) is a
    write that found no room: a full disk or quota, under a file or a SQLite store."""
    return _no_room_text(error) is not None


def out_of_space_line(error: BaseException | str) -> str:
    """The one line a user hears for a write that found no room: what could not be
    written, and what to do."""
    what = _no_room_text(error) or "a write found no room"
    return f"{what}: free space on that disk, then continue with --resume (what was saved is kept)"


@contextmanager
def if_room() -> Iterator[None]:
    """A write that is skipped when it finds the disk full (a run's closing, while the job
    stops because the disk filled up): whoever resumes the job does it then."""
    try:
        yield
    except Exception as exc:
        if not out_of_space(exc):
            raise


def _no_room_text(error: BaseException | str) -> str | None:
    """The line that says so, naming the file where the error does, or None."""
    if isinstance(error, str):
        lines = error.splitlines()
        return next((line.strip() for line in lines if _says_no_room(line)), None)
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _NO_ROOM_ERRNOS:
            where = error.filename2 or error.filename
            return f"{error.strerror}: {where}" if where else error.strerror
        if (line := _no_room_text(str(error))) is not None:
            return line
        error = error.__cause__ or error.__context__
    return None


def _says_no_room(line: str) -> bool:
    return any(phrase in line.lower() for phrase in _NO_ROOM)


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
