"""A real multi-node Ray cluster on this machine: a head and a second node as separate
processes on 127.0.0.1 (one CPU each, so two children at once must use both; the head
with one GPU as Ray counts them, which this CPU-only machine's torch cannot use, the
second with a custom resource only it has), an `mlflow server` on 127.0.0.1, and
`automl search` / `rl train` joining with --address from a separate driver process, as
users run them on a cluster."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import free_port, mlflow_server_at
from mlflow.tracking import MlflowClient

from runtime.trial import GPUS_TAG, NODE_TAG, RESOURCES_TAG

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


@dataclass(frozen=True)
class Cluster:
    address: str
    head: str  # node ids
    special: str


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    port = free_port()
    address = f"127.0.0.1:{port}"
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths
    head = ["--head", "--port", str(port), "--include-dashboard", "false", "--num-gpus", "1"]
    nodes = [_ray_node(head, temp_dir)]
    try:
        _wait_for_nodes(address, 1)
        second = ["--address", address, "--resources", json.dumps({SPECIAL: 1})]
        nodes.append(_ray_node(second, temp_dir))
        _wait_for_nodes(address, 2)
        yield Cluster(address, **_node_ids(address))
    finally:
        for node in reversed(nodes):
            node.terminate()
            node.wait(timeout=60)


def _node_ids(address: str) -> dict[str, str]:
    """Which node is which, as a driver sees them."""
    ask = (
        "import json, sys, ray; ray.init(address=sys.argv[1], _node_ip_address='127.0.0.1', "
        "log_to_driver=False); print(json.dumps({n['NodeID']: n['Resources'] for n in "
        "ray.nodes() if n['Alive']}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", ask, address], capture_output=True, text=True, env=_env(),
        timeout=120,
    )  # fmt: skip
    nodes = json.loads(done.stdout.strip().splitlines()[-1])
    by_role = {("special" if SPECIAL in r else "head"): n for n, r in nodes.items()}
    assert len(by_role) == 2, nodes
    return by_role


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


def _children(uri: str, summary: dict) -> list:
    """The search's (or training's) child runs, from the server: all FINISHED."""
    client = MlflowClient(uri)
    runs = client.search_runs(
        [summary["experiment_id"]], f"tags.mlflow.parentRunId = '{summary['parent_run_id']}'"
    )
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    return runs


def _nodes_of_children(uri: str, summary: dict) -> set[str]:
    return {r.data.tags[NODE_TAG] for r in _children(uri, summary)}


def test_a_search_spreads_children_over_both_nodes(tmp_path, cluster, server):
    (tmp_path / "space.yaml").write_text(SPACE)
    done = _driver(
        ["automl.cli", "search", "--address", cluster.address, "--tracking-uri", server,
         "--data", "digits", "--space", "space.yaml", "--searcher", "random",
         "--trials", "4", "--epochs", "3", "--workers", "2", "--cpus-per-trial", "1",
         "--experiment", "cluster", "--json", "out.json"],
        tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["tracking_uri"] == server and summary["trained"] == 4
    assert len(_nodes_of_children(server, summary)) == 2  # every run reached the server


def test_children_needing_a_resource_run_where_it_is_and_the_others_elsewhere(
    tmp_path, cluster, server
):
    """One search whose wider children need `special`, which only the second node has,
    and whose narrower ones need half a GPU, which only the head has: each child ran on
    the node its own request sends it to, and its run says what Ray reserved for it. A
    resource no node has is refused in one line before anything starts."""
    (tmp_path / "space.yaml").write_text(SPACE)
    search = ["automl.cli", "search", "--address", cluster.address, "--tracking-uri", server,
              "--data", "digits", "--space", "space.yaml", "--searcher", "random",
              "--trials", "5", "--epochs", "1", "--workers", "2", "--cpus-per-trial", "0.5",
              "--experiment", "cluster-special", "--json", "out.json"]  # fmt: skip
    rules = [f"{SPECIAL}=1 if layers.0.units >= 24", "GPU=0.5 if layers.0.units < 24"]
    done = _driver([*search, *(x for r in rules for x in ("--trial-resource", r))], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["trained"] == 5
    wide = 0
    for run in _children(server, summary):
        tags = run.data.tags
        reserved = json.loads(tags[RESOURCES_TAG])
        if int(run.data.params["layers.0.units"]) >= 24:
            wide += 1
            assert tags[NODE_TAG] == cluster.special and reserved == {"CPU": 0.5, SPECIAL: 1}
        else:
            assert tags[NODE_TAG] == cluster.head and reserved == {"CPU": 0.5, "GPU": 0.5}
            assert tags[GPUS_TAG] == "0" and tags["automl.device"] == "cpu"  # no CUDA here
    assert 0 < wide < 5  # both kinds in the one search (the searcher's seed decides)
    refused = _driver([*search, "--trial-resource", "a100=1"], tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "--trial-resource a100=1: no node can run a trial" in refused.stderr


def test_half_a_gpu_each_puts_two_children_on_one_gpu_at_once(tmp_path, cluster, server):
    """--gpus-per-trial 0.5: two children share the head's one GPU (the same id), both
    training at the same time (long enough to overlap on a loaded machine)."""
    (tmp_path / "space.yaml").write_text(SPACE)
    done = _driver(
        ["automl.cli", "search", "--address", cluster.address, "--tracking-uri", server,
         "--data", "digits", "--space", "space.yaml", "--searcher", "random",
         "--trials", "2", "--epochs", "20", "--workers", "2", "--cpus-per-trial", "0.5",
         "--gpus-per-trial", "0.5", "--experiment", "cluster-gpu", "--json", "out.json"],
        tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 children were given a GPU but trained on the CPU" in done.stdout  # no CUDA here
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["gpu_unused"] == [0, 1]
    runs = _children(server, summary)
    assert len(runs) == 2
    assert {(r.data.tags[NODE_TAG], r.data.tags[GPUS_TAG]) for r in runs} == {(cluster.head, "0")}
    assert max(r.info.start_time for r in runs) < min(r.info.end_time for r in runs)


def test_rl_train_spreads_seeds_over_both_nodes(tmp_path, cluster, server):
    small = ["learning_starts=200", "eval_every=500", "eval_episodes=2", "hidden=[16]"]
    done = _driver(
        ["rl.cli", "train", "--address", cluster.address, "--tracking-uri", server,
         "--env", "CartPole-v1", "--steps", "1000", "--seeds", "2", "--workers", "2",
         "--experiment", "cluster-rl", "--json", "out.json",
         *(x for s in small for x in ("--set", s))],
        tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out.json").read_text())
    assert [s["status"] for s in summary["seeds"]] == ["done", "done"]
    assert len(_nodes_of_children(server, summary)) == 2


def _one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith(("automl", "rl"))]
    assert len(lines) == 1, done.stderr[-3000:]
    return lines[0]


def test_a_driver_without_the_clusters_token_is_told_how_to_set_it(tmp_path, cluster):
    """Both commands, against a cluster whose token the driver lacks: one line naming the
    address Ray dials and RAY_AUTH_TOKEN, in seconds (the GCS answers, and refuses)."""
    (tmp_path / "space.yaml").write_text(SPACE)
    no_token = {k: v for k, v in _env().items() if not k.startswith("RAY_AUTH")}
    for command in (
        ["automl.cli", "search", "--data", "digits", "--space", "space.yaml"],
        ["rl.cli", "train", "--env", "CartPole-v1"],
    ):
        started = time.time()
        done = subprocess.run(
            [sys.executable, "-m", *command, "--address", cluster.address, "--tracking-uri",
             f"sqlite:///{tmp_path / 'mlflow.db'}"],
            cwd=tmp_path, env=no_token, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        line = _one_line_error(done)
        assert f"--address {cluster.address}" in line and "set RAY_AUTH_TOKEN" in line, line
        assert time.time() - started < 60


# What a cluster says of itself (its GCS's CLUSTER_METADATA, which Ray's own join checks),
# read or rewritten from a process of its own: ``python -c ... ADDRESS [JSON]``.
METADATA = """
import sys
from ray._raylet import GcsClient
gcs = GcsClient(address=sys.argv[1])
if len(sys.argv) > 2:
    gcs.internal_kv_put(b"CLUSTER_METADATA", sys.argv[2].encode(), True, namespace=b"cluster")
else:
    print(gcs.internal_kv_get(b"CLUSTER_METADATA", namespace=b"cluster").decode())
"""


def _metadata(address: str, value: str | None = None) -> str:
    command = [sys.executable, "-c", METADATA, address, *([value] if value else [])]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_a_cluster_of_another_ray_version_is_named_before_the_join(tmp_path, cluster):
    """A cluster that reports another Ray (what a head node of Ray 2.59 writes in its
    GCS): one line naming both versions and what to run, before any join."""
    original = _metadata(cluster.address)
    older = {**json.loads(original), "ray_version": "2.59.0"}
    _metadata(cluster.address, json.dumps(older))
    try:
        done = _driver(
            ["rl.cli", "train", "--env", "CartPole-v1", "--address", cluster.address,
             "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
            tmp_path,
        )  # fmt: skip
    finally:
        _metadata(cluster.address, original)
    line = _one_line_error(done)
    assert f"the cluster runs Ray 2.59.0, this driver {version('ray')}" in line, line
    assert "run the command with Ray 2.59.0" in line


def test_a_join_with_no_answer_ends_at_the_join_timeout(tmp_path):
    """An address that accepts connections but is no Ray cluster: bounded by
    --join-timeout, one line saying so (Ray alone would retry for minutes)."""
    import socket

    (tmp_path / "space.yaml").write_text(SPACE)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.time()
        done = _driver(
            ["automl.cli", "search", "--data", "digits", "--space", "space.yaml", "--address",
             address, "--join-timeout", "4s", "--tracking-uri",
             f"sqlite:///{tmp_path / 'mlflow.db'}"],
            tmp_path,
        )  # fmt: skip
    line = _one_line_error(done)
    assert "did not answer within 4 s (--join-timeout)" in line, line
    assert time.time() - started < 4 + 30
    assert not (tmp_path / "mlflow.db").exists()


LOOPBACK_CLUSTER = """
import sys, time
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={
    "node_ip_address": "127.0.0.1", "num_cpus": 1, "include_dashboard": False})
cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
print(cluster.address, flush=True)
sys.stdin.read()  # until the test closes it
cluster.shutdown()
"""


def test_a_search_joins_a_cluster_bound_to_loopback_only(tmp_path):
    """A head and a node started as Ray's own test clusters start them, their GCS on
    127.0.0.1 alone: Ray would rewrite the loopback address to this machine's routable
    one, where nothing answers (the join hung); the driver joins on loopback instead."""
    (tmp_path / "space.yaml").write_text(SPACE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # as Ray's test utilities run: loopback
    host = subprocess.Popen(
        [sys.executable, "-c", LOOPBACK_CLUSTER], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    try:
        address = host.stdout.readline().strip()
        assert address.startswith("127.0.0.1:"), address
        done = _driver(
            ["automl.cli", "search", "--address", address, "--data", "digits", "--space",
             "space.yaml", "--searcher", "random", "--trials", "1", "--epochs", "1",
             "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
             "--json", "out.json", "--join-timeout", "60s"],
            tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads((tmp_path / "out.json").read_text())["trained"] == 1
    finally:
        host.stdin.close()
        host.wait(timeout=60)
