"""Safe defaults: local Ray on loopback without dashboard, YAML and checkpoints load
without running code."""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import ray
import torch

from automl.search.space import load_space
from runtime.errors import UserError
from runtime.ray_cluster import ray_session


def test_local_ray_starts_without_dashboard_and_stops_after():
    if ray.is_initialized():
        ray.shutdown()
    with ray_session() as dashboard:
        assert dashboard is None and ray.is_initialized()
    assert not ray.is_initialized()  # started here, so stopped here


def _listening(root: psutil.Process) -> set[tuple[str, str]]:
    """(address, process name) of every listening TCP socket in ``root``'s process tree."""
    found = set()
    try:
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for proc in tree:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            found |= {
                (c.laddr.ip, proc.name())
                for c in proc.net_connections("inet")
                if c.status == psutil.CONN_LISTEN
            }
    return found


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback  # ::ffff:127.0.0.1


def test_search_cli_local_ray_listens_on_loopback_only(tmp_path: Path):
    """The real command, in its own process: every port its Ray opens is on 127.0.0.1."""
    command = [
        *(sys.executable, "-m", "automl.cli", "search", "--data", "digits"),
        *("--space", "seed_gru", "--searcher", "random", "--trials", "2", "--epochs", "1"),
        *("--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage", str(tmp_path)),
    ]
    proc = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    seen: set[tuple[str, str]] = set()
    while proc.poll() is None:
        seen |= _listening(psutil.Process(proc.pid))
        time.sleep(0.2)
    assert proc.returncode == 0, proc.stderr.read()
    names = {name for _, name in seen}
    assert {"gcs_server", "raylet"} <= names, seen  # the sampling did see Ray's servers
    assert all(_is_loopback(ip) for ip, _ in seen), seen


def test_space_yaml_is_read_with_the_safe_loader(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("family: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(UserError, match="YAML"):  # refused: the safe loader runs no code
        load_space(str(path))


def test_checkpoints_refuse_pickled_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"algo": "dqn", "x": Payload()}, path)
    from rl.cli import main

    assert main(["evaluate", "--checkpoint", str(path)]) == 2
