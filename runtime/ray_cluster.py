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
from contextlib import contextmanager, nullcontext

from runtime import ray_reaper
from runtime.errors import UserError

#: Ray's switch for multi-node clusters; off, a local Ray binds to loopback only (Ray's
#: own default on macOS and Windows). A driver joining a cluster needs it on.
CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
USAGE_STATS = "RAY_USAGE_STATS_ENABLED"


JOIN_TIMEOUT = 30.0  # seconds joining --address may take (--join-timeout)
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def prepare(address: str | None) -> None:
    """Choose where a local Ray listens; call before anything imports Ray (once Ray is
    imported its setting is fixed for the process). Settings already in the environment win.

    Joining a loopback address, the switch on makes Ray rewrite 127.0.0.1 to this
    machine's routable address. That is where ``ray start`` puts a node (it listens on
    every interface), but a cluster bound to loopback alone (Ray's own test clusters,
    a local Ray started with the switch off) never answers there: the join would hang.
    So when only loopback answers, the switch goes off and the driver joins there."""
    os.environ.setdefault(USAGE_STATS, "0")
    if address is None:
        os.environ.setdefault(CLUSTER_SWITCH, "0")
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if host in LOOPBACK and port.isdigit():
        routable = _routable_ip()
        if routable is None or not _answers(routable, int(port)):
            os.environ.setdefault(CLUSTER_SWITCH, "0")


def _routable_ip() -> str | None:
    """The address Ray takes for this machine: the interface a packet to a public address
    would leave by (a UDP socket's connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("8.8.8.8", 53))
            return probe.getsockname()[0]
    except OSError:
        return None


def _answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1.0).close()
        return True
    except OSError:
        return False


def resolved(address: str) -> str:
    """The address Ray itself will dial for ``address`` (it may rewrite the host); the
    address as given where Ray finds none (``auto`` without a cluster)."""
    from ray._private.services import canonicalize_bootstrap_address

    try:
        return canonicalize_bootstrap_address(address) or address
    except (ConnectionError, ValueError):
        return address


def probe(address: str | None, timeout: float = JOIN_TIMEOUT) -> None:
    """Before joining ``address``, ask its GCS (from a process of our own, bounded by
    ``timeout``) which Ray and Python it runs: no answer at the address Ray resolved, an
    auth token missing or different, another Ray or Python are each one line, instead of
    a join that retries for minutes or fails with Ray's own words. None, ``auto`` and
    ``ray://`` (Ray Client) addresses are left to Ray."""
    import json
    import subprocess
    import sys

    import ray

    if address is None or address == "auto" or address.startswith("ray://"):
        return
    dialled = resolved(address)
    where = f"--address {address}" + (f" (Ray dials {dialled})" if dialled != address else "")
    command = [sys.executable, "-m", "runtime.ray_probe", dialled]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        raise UserError(
            f"{where}: the cluster's GCS did not answer within {timeout:g} s (--join-timeout): "
            "is the head node up, and listening on that address?"
        ) from None
    except (ValueError, IndexError):
        raise UserError(f"{where}: could not ask the cluster ({done.stderr[-300:]})") from None
    if answer.get("error") == "auth":
        raise UserError(
            f"{where}: the cluster refused this driver's auth token (missing or different): "
            "set RAY_AUTH_TOKEN to the cluster's token (or RAY_AUTH_TOKEN_PATH to its file) "
            "and RAY_AUTH_MODE=token"
        )
    if "error" in answer:
        raise UserError(f"{where}: the cluster's GCS did not answer ({answer['detail']})")
    theirs = answer["metadata"]
    ours = {"ray_version": ray.__version__, "python_version": _python_version()}
    for key, name in (("ray_version", "Ray"), ("python_version", "Python")):
        if key in theirs and theirs[key].split(".")[:2] != ours[key].split(".")[:2]:
            raise UserError(
                f"{where}: the cluster runs {name} {theirs[key]}, this driver {ours[key]}: "
                f"run the command with {name} {theirs[key]}"
            )


def _python_version() -> str:
    import platform

    return platform.python_version()


@contextmanager
def ray_session(
    address: str | None = None, join_timeout: float = JOIN_TIMEOUT
) -> Iterator[str | None]:
    """Join ``address`` or start a local Ray; stop it after if we started it.

    Yields the dashboard URL (None: no dashboard). Callers run :func:`check_address` and
    :func:`probe` first, before any other work; a join that still takes longer than
    ``join_timeout`` ends in one line (in the main thread, where a timer can stop it)."""
    import ray

    if ray.is_initialized():
        yield None
        return
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        with _bounded(address, join_timeout):
            context = ray.init(
                address=address,
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=False,
                **_driver_address(address),
            )
    except ConnectionError as exc:
        dialled = resolved(address) if address else address
        where = f" (Ray dialled {dialled})" if dialled != address else ""
        raise UserError(f"--address {address}{where}: cannot join a Ray cluster ({exc})") from None
    if callable(on_sigterm) and threading.current_thread() is threading.main_thread():
        # Ray's own handler exits at once; the command's stops the job like Ctrl-C does.
        signal.signal(signal.SIGTERM, on_sigterm)
    with ray_reaper.watch() if address is None else nullcontext():  # a local Ray ends with us
        try:
            yield context.dashboard_url or None
        finally:
            ray.shutdown()


class _JoinTimedOut(Exception):
    pass


@contextmanager
def _bounded(address: str | None, seconds: float) -> Iterator[None]:
    """Stop a join that takes longer than ``seconds`` with a one-line error (a timer in
    the main thread; elsewhere, and for a local Ray, the block runs unbounded)."""
    if address is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise _JoinTimedOut

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _JoinTimedOut:
        import ray

        ray.shutdown()
        raise UserError(
            f"--address {address} (Ray dialled {resolved(address)}): joining took longer than "
            f"{seconds:g} s (--join-timeout); the GCS answered, so this machine's Ray node or "
            "its network (a firewall, another node IP) is what to check"
        ) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


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
