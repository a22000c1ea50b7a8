"""Safe defaults: local Ray on loopback without dashboard, YAML and checkpoints load
without running code."""

from __future__ import annotations

import contextlib
import ipaddress
import json
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
        *("--space", "seed_gru", "--searcher", "random", "--trials", "1", "--epochs", "1"),
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


class _Payload:
    """A pickle that would run code when loaded without weights_only."""

    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("kind", ["rl checkpoint", "search state", "model weights"])
def test_files_holding_code_are_refused_in_one_line_without_torchs_advice(
    tmp_path, monkeypatch, capsys, kind
):
    """No code runs, and the line says what the file should have been and that this one
    is not the project's: never torch's hint to retry with weights_only=False."""
    from automl.cli import main as automl_main
    from rl.cli import main as rl_main

    monkeypatch.chdir(tmp_path)
    evil = {"algo": "dqn", "x": _Payload()}
    if kind == "rl checkpoint":
        torch.save(evil, tmp_path / "evil.pt")
        code = rl_main(["evaluate", "--checkpoint", str(tmp_path / "evil.pt")])
    elif kind == "search state":
        (tmp_path / "runs" / "x").mkdir(parents=True)
        torch.save(evil, tmp_path / "runs" / "x" / "search_state.pt")
        code = automl_main(["search", "--data", "digits", "--space", "seed_gru", "--storage",
                            "runs", "--experiment", "x", "--resume"])  # fmt: skip
    else:
        (tmp_path / "model").mkdir()
        arch = {"family": "rnn", "layers": [{"units": 4, "activation": "tanh"}]}
        meta = {"architecture": arch, "classes": ["a", "b"], "norm_mean": [0.0],
                "norm_std": [1.0], "frontend": "mfcc"}  # fmt: skip
        (tmp_path / "model" / "meta.json").write_text(json.dumps(meta))
        torch.save(evil, tmp_path / "model" / "weights.pt")
        (tmp_path / "a.wav").write_bytes(b"")
        code = automl_main(["predict", "--model", "model", "a.wav"])
    said = capsys.readouterr()
    err = said.err
    assert code == 2 and "pwned" not in said.out + err and "Traceback" not in err
    assert "not written by this project" in err and "weights_only" not in err
    assert len(err.splitlines()) == 1, err
