"""A real multi-node Ray cluster on this machine: a head and a second node as separate
processes on 127.0.0.1 (one CPU each, so two children at once must use both; the second
with a custom resource only it has), an
`mlflow server` on 127.0.0.1, and `automl search` / `rl train` joining with --address
from a separate driver process, as users run them on a cluster."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port, mlflow_server_at
from mlflow.tracking import MlflowClient

from runtime.trial import NODE_TAG

RAY = str(Path(sys.executable).with_name("ray"))
# Ray (2.59+) authenticates every node and driver with a token; a cluster's machines
# share one, as users set it on theirs (RAY_AUTH_TOKEN, or ~/.ray/auth_token).
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}


def _env() -> dict[str, str]:
    """This machine's environment without this test process's Ray settings, plus the token."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, **AUTH}


SPECIAL = "special"  # a custom resource only the second node has
SPACE = "family: rnn\nlayers: {count: 1, units: [8, 16, 24, 32], activation: [tanh, relu]}\n"


def _ray_node(args: list[str], temp_dir: str) -> subprocess.Popen:
    """``ray start --block``: the node lives as long as this process (stopping it stops
    the node's own processes only, never another Ray on the machine)."""
    return subprocess.Popen(
        [RAY, "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
         "--disable-usage-stats", "--temp-dir", temp_dir, *args],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _wait_for_nodes(address: str, count: int, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = subprocess.run(
            [RAY, "status", "--address", address], capture_output=True, text=True, env=_env()
        )
        if status.stdout.count("node_") >= count:
            return
        time.sleep(1)
    raise AssertionError(f"no {count} nodes:\n{status.stdout}\n{status.stderr[-2000:]}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    port = free_port()
    address = f"127.0.0.1:{port}"
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths
    nodes = [_ray_node(["--head", "--port", str(port), "--include-dashboard", "false"], temp_dir)]
    try:
        _wait_for_nodes(address, 1)
        second = ["--address", address, "--resources", json.dumps({SPECIAL: 1})]
        nodes.append(_ray_node(second, temp_dir))
        _wait_for_nodes(address, 2)
        yield address
    finally:
        for node in reversed(nodes):
            node.terminate()
            node.wait(timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    with mlflow_server_at(tmp_path_factory.mktemp("server")) as uri:
        yield uri


def _driver(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The command as a user runs it: its own process, nothing of this one's Ray set-up."""
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=_env(), capture_output=True, text=True,
        timeout=480,
    )  # fmt: skip


def _nodes_of_children(uri: str, summary: dict) -> set[str]:
    client = MlflowClient(uri)
    runs = client.search_runs(
        [summary["experiment_id"]], f"tags.mlflow.parentRunId = '{summary['parent_run_id']}'"
    )
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    return {r.data.tags[NODE_TAG] for r in runs}


def test_a_search_spreads_children_over_both_nodes(tmp_path, cluster, server):
    (tmp_path / "space.yaml").write_text(SPACE)
    done = _driver(
        ["automl.cli", "search", "--address", cluster, "--tracking-uri", server,
         "--data", "digits", "--space", "space.yaml", "--searcher", "random",
         "--trials", "4", "--epochs", "3", "--workers", "2", "--cpus-per-trial", "1",
         "--experiment", "cluster", "--json", "out.json"],
        tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["tracking_uri"] == server and summary["trained"] == 4
    assert len(_nodes_of_children(server, summary)) == 2  # every run reached the server


def test_children_needing_a_custom_resource_run_only_where_it_is(tmp_path, cluster, server):
    """Two children at once could use both nodes (as above), but each needs `special`,
    which only the second node has: both run there, one after the other. A resource no
    node has is refused in one line before anything starts."""
    (tmp_path / "space.yaml").write_text(SPACE)
    search = ["automl.cli", "search", "--address", cluster, "--tracking-uri", server,
              "--data", "digits", "--space", "space.yaml", "--searcher", "random",
              "--trials", "2", "--epochs", "1", "--workers", "2", "--cpus-per-trial", "1",
              "--experiment", "cluster-special", "--json", "out.json"]  # fmt: skip
    done = _driver([*search, "--trial-resource", f"{SPECIAL}=1"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["trained"] == 2 and len(_nodes_of_children(server, summary)) == 1
    refused = _driver([*search, "--trial-resource", "a100=1"], tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "--trial-resource a100=1: no node can run a trial" in refused.stderr


def test_rl_train_spreads_seeds_over_both_nodes(tmp_path, cluster, server):
    small = ["learning_starts=200", "eval_every=500", "eval_episodes=2", "hidden=[16]"]
    done = _driver(
        ["rl.cli", "train", "--address", cluster, "--tracking-uri", server,
         "--env", "CartPole-v1", "--steps", "1000", "--seeds", "2", "--workers", "2",
         "--experiment", "cluster-rl", "--json", "out.json",
         *(x for s in small for x in ("--set", s))],
        tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out.json").read_text())
    assert [s["status"] for s in summary["seeds"]] == ["done", "done"]
    assert len(_nodes_of_children(server, summary)) == 2
