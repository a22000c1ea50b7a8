"""Failing children, killed workers, a killed driver, and safe defaults (real Ray, real MLflow)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from automl.cli import main
from rl.cli import main as rl_main

LRS = ", ".join(f"{lr:.6f}" for lr in np.geomspace(1e-3, 1e-2, 300))
# many distinct children (no duplicates among a few trials), each quick to train
SPACE = f"""\
family: rnn
fixed: {{cell: gru, class_weighted: true}}
choices: {{lr: [{LRS}]}}
layers: {{count: 1, min: 1, units: [16], activation: [tanh]}}
"""


def _args(tmp_path: Path, trials: int, *extra: str, epochs: int = 1) -> list[str]:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    return [
        "search",
        "--data",
        "synth-cry",
        "--space",
        str(space),
        "--searcher",
        "random",
        "--trials",
        str(trials),
        "--epochs",
        str(epochs),
        "--workers",
        "2",
        "--seed",
        "0",
        "--experiment",
        "faults",
        "--storage",
        str(tmp_path / "runs"),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--json",
        str(tmp_path / "summary.json"),
        *extra,
    ]


def _children(summary: dict) -> dict[str, object]:
    client = MlflowClient(summary["tracking_uri"])
    runs = client.search_runs(
        [summary["experiment_id"]], f"tags.mlflow.parentRunId = '{summary['parent_run_id']}'"
    )
    return {run.info.run_id: run for run in runs}


def test_failing_children_are_recorded_and_the_search_completes(tmp_path, local_ray, monkeypatch):
    monkeypatch.setenv("AUTOML_FAULTS", "1:raise,2:nan,3:oom,4:diverge")
    assert main(_args(tmp_path, 6)) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    trials = {t["trial"]: t for t in summary["trials"]}
    assert len(trials) == 6
    expected = {1: "injected fault", 2: "loss became nan", 3: "allocate"}
    runs = _children(summary)
    for trial, message in expected.items():
        t = trials[trial]
        assert t["status"] == "failed" and t["dev_uar"] is None  # a failure, not a number
        assert message in t["error"]
        run = runs[t["mlflow_run_id"]]
        assert run.info.status == "FAILED" and message in run.data.tags["automl.error"]
    assert [trials[i]["status"] for i in (0, 4, 5)] == ["done"] * 3
    # the child whose loss became NaN (the retry's NaN too: child 2) failed; child 4 diverged
    # once, was retried from its initial weights at a tenth of its rate, and finished
    assert "again after the retry" in trials[2]["error"]
    note = "loss became non-finite in epoch 1: retried from its initial weights at lr 0.000"
    assert trials[4]["note"].startswith(note)
    assert runs[trials[4]["mlflow_run_id"]].data.metrics["diverged_epoch"] == 1
    assert trials[0]["note"] is None
    state = torch.load(
        MlflowClient(summary["tracking_uri"]).download_artifacts(
            summary["parent_run_id"], "searcher_state.pt", str(tmp_path)
        ),
        weights_only=True,
    )
    assert state["n_told"] == 6 and state["n_failed"] == 3  # failures were told as failures


def test_killed_worker_is_retried_then_counted_as_failed(tmp_path, local_ray, monkeypatch):
    monkeypatch.setenv("AUTOML_FAULTS", "1:kill,2:killall")
    assert main(_args(tmp_path, 4, "--retries", "1")) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    trials = {t["trial"]: t for t in summary["trials"]}
    assert trials[1]["status"] == "done"  # killed once, retried, finished
    assert trials[2]["status"] == "failed" and "worker process died" in trials[2]["error"]
    statuses = sorted(r.info.status for r in _children(summary).values())
    assert "RUNNING" not in statuses  # runs of killed attempts are closed as KILLED
    assert statuses.count("KILLED") >= 2


def test_unknown_fault_kind_is_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUTOML_FAULTS", "1:explode")
    assert main(_args(tmp_path, 2)) == 2
    assert "AUTOML_FAULTS=1:explode" in capsys.readouterr().err


def test_killed_search_resumes_without_losing_or_retraining_children(tmp_path):
    """SIGKILL a real `automl search` part-way: no process of its Ray outlives it; then
    `--resume` it to the full budget."""
    args = _args(
        tmp_path, 6, "--searcher", "reinforce", "--space", str(tmp_path / "space.yaml"), epochs=6
    )
    args[args.index("--workers") + 1] = "1"
    args = [a for a in args if a != "--json"]
    args.remove(str(tmp_path / "summary.json"))
    log = tmp_path / "killed-search.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "automl.cli", *args],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    state_file = tmp_path / "runs" / "faults" / "search_state.pt"
    deadline = time.time() + 240
    while time.time() < deadline:
        if state_file.exists() and len(torch.load(state_file, weights_only=True)["records"]) >= 2:
            break
        assert proc.poll() is None, (
            f"the search ended before it could be killed:\n{log.read_text()}"
        )
        time.sleep(0.2)
    below = _process_tree(proc.pid)  # its Ray: head processes, agents, workers
    assert len(below) >= 4, below
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 15  # none outlives it (Ray's agents would, for good)
    while (left := below & _process_tree(1)) and time.time() < deadline:
        time.sleep(0.5)
    assert not left, subprocess.run(["ps", "-o", "pid,ppid,cmd", "-p", ",".join(map(str, left))],
                                    capture_output=True, text=True).stdout  # fmt: skip
    before = torch.load(state_file, weights_only=True)
    kept = {r["trial"]: r for r in before["records"]}
    assert 2 <= len(kept) < 6
    assert main(args) == 2  # the same command without --resume does not start over
    assert torch.load(state_file, weights_only=True)["records"] == before["records"]

    out = tmp_path / "resumed.json"
    assert main([*args, "--resume", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["parent_run_id"] == before["search_run"]["parent_run_id"]
    assert len(summary["trials"]) == 6
    for t in summary["trials"]:
        if t["trial"] in kept:  # finished before the kill: kept as they were
            assert (t["status"], t["mlflow_run_id"]) == (
                kept[t["trial"]]["status"],
                kept[t["trial"]]["mlflow_run_id"],
            )
    runs = _children(summary)
    finished = [r for r in runs.values() if r.info.status == "FINISHED"]
    assert len(finished) == sum(t["status"] == "done" for t in summary["trials"])  # none twice
    assert all(r.info.status in ("FINISHED", "KILLED") for r in runs.values())
    client = MlflowClient(summary["tracking_uri"])
    assert client.get_run(summary["parent_run_id"]).info.status == "FINISHED"
    after = torch.load(state_file, weights_only=True)
    adopted = sum(t["adopted"] for t in summary["trials"])  # finished after the kill
    assert after["searcher"]["n_told"] == 6 - adopted
    assert after["searcher"]["updates"] == 6 - adopted  # one per child, over the kill


@pytest.mark.parametrize(
    "signals,code,then",
    [
        ([signal.SIGINT], 130, "--resume"),
        ([signal.SIGTERM], 143, "--restart"),
        # the second forces the stop; what resuming then does, the first case shows
        ([signal.SIGINT, signal.SIGINT], 130, None),
    ],
    ids=["ctrl-c", "sigterm", "ctrl-c-twice"],
)
def test_ctrl_c_marks_the_search_interrupted_and_resume_retrains_what_ran(
    tmp_path, signals, code, then
):
    """SIGINT or SIGTERM to a real `automl search` while a child trains: exit 130 / 143 with
    one line, the parent and the running child KILLED (not FINISHED, not stopped), finished
    children kept. The same command refuses to start over; `--resume` trains the
    interrupted child again and completes the search; `--restart` sets it aside and
    starts a new one (each after a single signal: after two, the state is the same)."""
    args = _args(tmp_path, 2, epochs=40)
    args[args.index("--workers") + 1] = "1"
    log = tmp_path / "interrupted.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "automl.cli", *args], cwd=tmp_path, stdout=out, stderr=out
        )
    db = tmp_path / "mlflow.db"
    deadline = time.time() + 180
    while not _a_child_is_training(db):
        assert proc.poll() is None and time.time() < deadline, log.read_text()
        time.sleep(0.5)
    time.sleep(3)  # an epoch or more into it
    for number in signals:
        proc.send_signal(number)
        time.sleep(0.3)
    assert proc.wait(timeout=120) == code, log.read_text()
    lines = [x for x in log.read_text().splitlines() if "interrupted" in x]
    assert lines == ["automl: interrupted; continue with --resume"], log.read_text()
    assert "Traceback" not in log.read_text()

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ended"] == "interrupted"
    assert all(t["status"] != "stopped" for t in summary["trials"])
    client = MlflowClient(summary["tracking_uri"])
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "KILLED" and parent.data.tags["automl.ended"] == "interrupted"
    statuses = [r.info.status for r in _children(summary).values()]
    assert "KILLED" in statuses and "RUNNING" not in statuses

    if then is None:
        return
    killed = {r.info.run_id for r in _children(summary).values() if r.info.status == "KILLED"}
    assert main(args) == 2  # not started over without --resume (or --restart)
    trials = 2 if then == "--resume" else 1  # a restarted search is a new one: of one child
    again = _args(tmp_path, trials, epochs=40)
    again[again.index("--workers") + 1] = "1"
    assert main([*again, then]) == 0
    after = json.loads((tmp_path / "summary.json").read_text())
    assert (
        after["ended"] == "trials" and [t["status"] for t in after["trials"]] == ["done"] * trials
    )
    assert not killed & {t["mlflow_run_id"] for t in after["trials"]}  # trained again
    if then == "--resume":
        assert after["parent_run_id"] == summary["parent_run_id"]
        assert client.get_run(summary["parent_run_id"]).info.status == "FINISHED"
    else:
        assert after["parent_run_id"] != summary["parent_run_id"]
        old = client.get_run(summary["parent_run_id"])
        assert old.info.status == "KILLED" and old.data.tags["automl.ended"] == "restarted"
        folder = tmp_path / "runs" / "faults"
        assert (folder / f"search_state.{summary['parent_run_id']}.pt").is_file()


def test_ctrl_c_on_rl_train_marks_it_interrupted_and_resume_finishes_it(
    tmp_path, local_ray, monkeypatch
):
    """SIGINT to a real `rl train` while a seed trains: exit 130 with one line, the parent
    and the running seed KILLED, the summary written with the seeds it did not finish;
    `rl train --resume` continues from the checkpoints and finishes every seed."""
    # long enough (several seconds a seed) to be seen training before it ends
    small = ("learning_starts=500", "eval_every=10000", "checkpoint_every=1000", "hidden=[32]")
    args = [
        *("train", "--env", "CartPole-v1", "--steps", "5000", "--seeds", "2"),
        *("--workers", "1", "--json", "out.json"),
        *(x for s in small for x in ("--set", s)),
    ]
    log = tmp_path / "interrupted.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rl.cli", *args], cwd=tmp_path, stdout=out, stderr=out
        )
    deadline = time.time() + 180
    while not _a_child_is_training(tmp_path / "mlflow.db", role="rl-seed"):
        assert proc.poll() is None and time.time() < deadline, log.read_text()
        time.sleep(0.5)
    time.sleep(1)  # seed 0 trains; seed 1 waits for it (one worker)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130, log.read_text()
    assert "rl: interrupted; continue with --resume" in log.read_text().splitlines()
    assert "Traceback" not in log.read_text()
    summary = json.loads((tmp_path / "out.json").read_text())
    assert "interrupted" in {s["status"] for s in summary["seeds"]}
    client = MlflowClient(summary["tracking_uri"])
    assert client.get_run(summary["parent_run_id"]).info.status == "KILLED"
    runs = client.search_runs([summary["experiment_id"]])
    assert "KILLED" in {r.info.status for r in runs} and "RUNNING" not in {
        r.info.status for r in runs
    }

    monkeypatch.chdir(tmp_path)  # resumed in this process, on its Ray
    assert rl_main([*args, "--resume"]) == 0
    after = json.loads((tmp_path / "out.json").read_text())
    assert [s["status"] for s in after["seeds"]] == ["done", "done"]
    assert all(s["steps"] == 5000 for s in after["seeds"])
    assert client.get_run(after["parent_run_id"]).info.status == "FINISHED"


def _process_tree(pid: int) -> set[int]:
    """The processes below ``pid`` (1: every process), as ``ps`` lists them."""
    listed = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True)
    children: dict[int, list[int]] = {}
    for line in listed.stdout.splitlines():
        child, parent = map(int, line.split())
        children.setdefault(parent, []).append(child)
    found, todo = set(), list(children.get(pid, []))
    while todo:
        found.add(child := todo.pop())
        todo += children.get(child, [])
    return found


def _a_child_is_training(db: Path, role: str = "child") -> bool:
    if not db.exists():
        return False
    with sqlite3.connect(db) as con:
        try:
            rows = con.execute(
                "select count(*) from runs r join tags t on r.run_uuid = t.run_uuid "
                "where t.key = 'automl.role' and t.value = ? and r.status = 'RUNNING'",
                (role,),
            ).fetchone()
        except sqlite3.OperationalError:  # tables not made yet
            return False
    return rows[0] > 0


def test_resume_refuses_changed_options_and_missing_state(tmp_path, local_ray, capsys):
    assert main([*_args(tmp_path, 2), "--resume"]) == 2
    assert "no search to resume" in capsys.readouterr().err
    assert main(_args(tmp_path, 2)) == 0
    capsys.readouterr()
    space = tmp_path / "space.yaml"
    refusals = [
        (["--epochs", "3"], "options differ from the interrupted search: {'epochs': 1}"),
        (["--searcher", "tpe"], "the saved state is of searcher 'random', not 'tpe'"),
        (["--seed", "1"], "options differ from the interrupted search: {'seed': 0}"),
    ]
    for extra, message in refusals:
        assert main([*_args(tmp_path, 3, *extra), "--resume"]) == 2
        err = capsys.readouterr().err
        assert f"--resume: {message}" in err and len(err.strip().splitlines()) == 1, err
    # the space file edited in place: same path, other choices
    args = [*_args(tmp_path, 3), "--resume"]
    space.write_text(SPACE.replace("units: [16]", "units: [16, 32]"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--resume: the search space changed since the state was saved" in err
    assert "block.0.units.choices: [16] -> [16, 32]" in err
    space.write_text(SPACE)  # put back: the same search resumes to 3 children
    assert main(args) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["trials"]) == 3


def test_two_searches_started_at_once_on_a_new_sqlite_store_both_finish(tmp_path):
    """Two real `automl search` processes, started together on one new SQLite file and one
    new experiment: both finish, each with its own parent run and children there."""
    db = tmp_path / "shared.db"
    procs = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        args = _args(folder, 1, "--workers", "1")
        args[args.index("--tracking-uri") + 1] = f"sqlite:///{db}"
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "automl.cli", *args],
                cwd=folder,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    summaries = [json.loads((tmp_path / n / "summary.json").read_text()) for n in "ab"]
    assert summaries[0]["experiment_id"] == summaries[1]["experiment_id"]
    assert summaries[0]["parent_run_id"] != summaries[1]["parent_run_id"]
    client = MlflowClient(f"sqlite:///{db}")
    for summary in summaries:
        assert client.get_run(summary["parent_run_id"]).info.status == "FINISHED"
        assert [r.info.status for r in _children(summary).values()] == ["FINISHED"]


def _statuses(db: Path) -> dict[str, list[str]]:
    """Run name -> the statuses of the runs of that name, oldest first."""
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT name, status FROM runs ORDER BY start_time").fetchall()
    found: dict[str, list[str]] = {}
    for name, status in rows:
        found.setdefault(name, []).append(status)
    return found


@pytest.mark.parametrize(
    "full,size",
    [("mlartifacts", "4k"), ("runs", "24k")],
    ids=["the-store's-artifacts", "--storage"],
)
def test_a_full_disk_ends_the_search_in_one_line_and_resume_finishes_it(
    tmp_path, local_ray, capsys, small_disks, full, size
):
    """A disk that fills up under the children's models (the store's artifacts beside its
    database) or under the search's state (``--storage``): exit 2 with one line naming the
    file, no run left RUNNING, the summary written, and once there is room ``--resume``
    ends with every child."""
    disk = small_disks.mount(tmp_path / full, size)
    assert main(_args(tmp_path, 2)) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if not x.startswith("children ")]
    assert len(err) == 1 and err[0].startswith("automl: error: "), err  # the progress line aside
    assert "No space left on device" in err[0] and str(disk) in err[0], err
    assert "continue with --resume" in err[0]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ended"] == "interrupted"
    runs = _statuses(tmp_path / "mlflow.db")
    assert runs["search-random"] == ["KILLED"]
    assert "RUNNING" not in {s for statuses in runs.values() for s in statuses}, runs

    small_disks.grow(disk)
    assert main([*_args(tmp_path, 2), "--resume"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ended"] == "trials" and summary["trained"] == 2
    statuses = [t["status"] for t in summary["trials"]]  # children the searcher proposed
    assert statuses.count("done") == 2 and set(statuses) <= {"done", "cached"}, statuses
    runs = _statuses(tmp_path / "mlflow.db")
    assert runs["search-random"] == ["FINISHED"]
    assert "RUNNING" not in {s for statuses in runs.values() for s in statuses}, runs
