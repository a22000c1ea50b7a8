"""Start a local Ray or join a cluster: the one place both ``automl search`` and ``rl train`` do it.

This module does not import Ray at import time, because :func:`prepare` must run before
Ray is imported: Ray reads its bind address setting once, at import.

Safe defaults for a Ray this process starts itself: every port (GCS, raylet, object
manager, workers) listens on 127.0.0.1, the dashboard is off, and Ray's usage statistics
are not sent anywhere. A cluster joined with ``--address`` keeps its own settings.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from runtime.errors import UserError

#: Ray's switch for multi-node clusters; off, a local Ray binds to loopback only (Ray's
#: own default on macOS and Windows). A driver joining a cluster needs it on.
CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
USAGE_STATS = "RAY_USAGE_STATS_ENABLED"


def prepare(address: str | None) -> None:
    """Choose where a local Ray listens; call before anything imports Ray (once Ray is
    imported its setting is fixed for the process). Settings already in the environment win."""
    os.environ.setdefault(USAGE_STATS, "0")
    if address is None:
        os.environ.setdefault(CLUSTER_SWITCH, "0")


@contextmanager
def ray_session(address: str | None = None) -> Iterator[str | None]:
    """Join ``address`` or start a local Ray; stop it after if we started it.

    Yields the dashboard URL (None: no dashboard). Callers run :func:`check_address`
    first, before any other work: Ray itself retries an unreachable address for minutes."""
    import ray

    if ray.is_initialized():
        yield None
        return
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        context = ray.init(
            address=address,
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
            **_driver_address(address),
        )
    except ConnectionError as exc:
        raise UserError(f"--address {address}: cannot join a Ray cluster ({exc})") from None
    if callable(on_sigterm) and threading.current_thread() is threading.main_thread():
        # Ray's own handler exits at once; the command's stops the job like Ctrl-C does.
        signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield context.dashboard_url or None
    finally:
        ray.shutdown()


def check_fits(requests: list[tuple[str, dict[str, float]]], address: str | None) -> None:
    """A trial asking for more CPUs, GPUs or custom resources than any node has would wait
    forever, without a word from Tune: one line instead. ``requests``: every request a
    trial can make (Ray resource amounts by name), each with the options that make it.
    A local Ray (``address`` None) is checked against this machine before it starts; a
    joined cluster against its live nodes (call after joining). A cluster that adds nodes
    on demand is refused here: searches take ``--max-wait`` there."""
    if address is None:
        import torch

        nodes = [{"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}]
    else:
        import ray

        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    for asked, need in requests:
        if not any(all(n.get(k, 0) >= v for k, v in need.items()) for n in nodes):
            where = "this machine has" if address is None else "the cluster's nodes have"
            have = "; ".join(", ".join(f"{n.get(k, 0):g} {k}" for k in need) for n in nodes)
            raise UserError(f"{asked}: no node can run a trial ({where} {have}); ask for less")


def _driver_address(address: str | None) -> dict[str, str]:
    """A driver joining a cluster on loopback must say it is on loopback too: by default
    Ray takes the machine's routable address as the driver's node address and waits
    for the cluster there, which never answers (the join hangs)."""
    if address is None or address.startswith("ray://"):
        return {}
    host = address.rpartition(":")[0]
    return {"_node_ip_address": "127.0.0.1"} if host in ("127.0.0.1", "localhost") else {}


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """``host:port`` or ``ray://host:port`` must accept a TCP connection (None: local Ray;
    "auto": Ray finds the cluster itself)."""
    if address is None or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError(f"--address {address}: no Ray cluster answers there ({exc})") from None
