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
import socket
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
    try:
        context = ray.init(
            address=address,
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
    except ConnectionError as exc:
        raise UserError(f"--address {address}: cannot join a Ray cluster ({exc})") from None
    try:
        yield context.dashboard_url or None
    finally:
        ray.shutdown()


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
