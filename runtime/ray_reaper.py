"""The processes of a local Ray end with the command that started it, even a killed one.

``ray.shutdown()`` stops a local Ray when a command ends, interrupted or not. A command
killed outright (SIGKILL, the out-of-memory killer) runs no clean-up: Ray's head processes
go with it, but its dashboard and runtime-env agents (children of the raylet, deaf to
SIGTERM) stay for good. :func:`watch` starts this module beside the command for as long
as its local Ray runs: it notes the command's descendants every few seconds, and when
the command dies without stopping it, kills the ones still there.

Run as ``python -m runtime.ray_reaper PID``; Linux only (it reads ``/proc``).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

SCAN_SECONDS = 2.0  # how often the command's descendants are noted


@contextmanager
def watch() -> Iterator[None]:
    """This process's descendants killed if it dies inside the block; the watcher stops
    when the block ends (a command that ends normally stops its Ray itself)."""
    if not Path("/proc/self/stat").is_file():  # not Linux: nothing to read the tree from
        yield
        return
    reaper = subprocess.Popen(
        [sys.executable, "-m", "runtime.ray_reaper", str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not in the terminal's group: a Ctrl-C is not for it
    )
    try:
        yield
    finally:
        reaper.terminate()
        reaper.wait()


def _processes() -> dict[int, tuple[int, int]]:
    """Every process: pid -> (parent pid, start time in clock ticks since boot)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # the name may hold spaces
            found[int(stat.parent.name)] = (int(fields[1]), int(fields[19]))
    return found


def descendants(pid: int) -> set[tuple[int, int]]:
    """The (pid, start time) of every process below ``pid``: the start time tells a
    process from a later one that reuses its pid."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for child, (parent, _) in processes.items():
        children.setdefault(parent, []).append(child)
    found, todo = set(), list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.add((child, processes[child][1]))
        todo += children.get(child, [])
    return found


def _wait_for_death(pid: int, seconds: float) -> bool:
    """Whether ``pid`` died within ``seconds`` (a pidfd wakes at once; else a poll)."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        time.sleep(seconds)
        return not Path(f"/proc/{pid}").exists()
    try:
        return bool(select.select([fd], [], [], seconds)[0])
    finally:
        os.close(fd)


def reap(pid: int) -> None:
    """Note ``pid``'s descendants until it dies, then kill those still running."""
    seen: set[tuple[int, int]] = set()
    own = os.getpid()
    while True:
        seen |= {p for p in descendants(pid) if p[0] != own}
        if _wait_for_death(pid, SCAN_SECONDS):
            break
    alive = _processes()
    for child, started in seen:
        if alive.get(child, (0, None))[1] == started:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stopped: the command ended well
    reap(int(sys.argv[1]))
