"""End to end: real local Ray, real MLflow (SQLite file, and a real server over HTTP)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
import torch
from browser import fresh_browser
from conftest import mlflow_server_at, write_compare
from mlflow.tracking import MlflowClient

from automl.child import arch_key
from automl.cli import main
from automl.data import synth
from automl.data.prepare import load_dataset
from automl.search.searchers import make_searcher
from automl.search.space import load_space
from runtime import tracking

TINY_SPACE = """\
family: rnn
fixed: {cell: gru, lr: 0.01, class_weighted: true}
layers: {count: 2, min: 1, units: [0, 8, 16, 24], activation: [tanh, relu]}
"""


def _search(
    tmp_path: Path, *extra: str, trials: int = 6, space_text: str = TINY_SPACE
) -> tuple[int, dict]:
    space = tmp_path / "space.yaml"
    space.write_text(space_text)
    out = tmp_path / "summary.json"
    code = main(
        [
            "search",
            "--data",
            "synth-cry",
            "--space",
            str(space),
            "--trials",
            str(trials),
            "--epochs",
            "2",
            "--workers",
            "2",
            "--seed",
            "0",
            "--json",
            str(out),
            "--storage",
            str(tmp_path / "ray"),
            *extra,
        ]
    )
    return code, json.loads(out.read_text()) if out.exists() else {}


def test_search_tracks_parent_and_nested_children(tmp_path, local_ray, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default tracking URI is ./mlflow.db
    code, summary = _search(
        tmp_path,
        *("--experiment", "e2e", "--searcher", "reinforce", "--searcher-opt", "batch_size=2"),
    )
    assert code == 0
    assert summary["tracking_uri"] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(summary["tracking_uri"])
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.params["searcher"] == "reinforce" and parent.data.params["trials"] == "6"
    assert parent.data.params["searcher.batch_size"] == "2"
    assert {
        "controller/mean_reward",
        "controller/baseline",
        "controller/entropy",
        "best_dev_uar",
        "best_reward",
    } <= set(parent.data.metrics)

    children = client.search_runs(
        [summary["experiment_id"]], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    by_id = {run.info.run_id: run for run in children}
    trained = [t for t in summary["trials"] if t["status"] == "done"]
    assert len(summary["trials"]) == 6 and len(trained) == len(children) >= 2
    for trial in summary["trials"]:
        assert trial["status"] in ("done", "cached")
        run = by_id[trial["mlflow_run_id"]]
        assert run.data.metrics["dev_uar"] == pytest.approx(trial["dev_uar"])
        assert run.info.status == "FINISHED"
    for run in children:
        history = client.get_metric_history(run.info.run_id, "epoch_dev_uar")
        assert [m.step for m in history] == [1, 2]
        last = max(history, key=lambda m: m.step).value  # one-cycle: the last epoch is kept
        assert last == pytest.approx(run.data.metrics["dev_uar"])
        assert run.data.metrics["best_epoch"] == 2
        assert {"train_loss", "n_params", "train_seconds"} <= set(run.data.metrics)
        assert run.data.params["family"] == "rnn" and "layers.0.units" in run.data.params
        assert run.data.params["hparams.epochs"] == "2"  # what it trained with: --epochs 2
    best = summary["best"]
    assert best["dev_uar"] == max(t["dev_uar"] for t in trained)
    weights = Path(
        client.download_artifacts(best["mlflow_run_id"], "checkpoint/weights.pt", str(tmp_path))
    )
    state = torch.load(weights, weights_only=True)
    assert (
        sum(v.numel() for v in state.values())
        == by_id[best["mlflow_run_id"]].data.metrics["n_params"]
    )
    # the default --log-models 3: the three best children (by reward) are MLflow models
    ranked = sorted(trained, key=lambda t: t["reward"], reverse=True)
    assert set(summary["models"]) == {str(t["trial"]) for t in ranked[:3]}
    for t in trained:
        tags = by_id[t["mlflow_run_id"]].data.tags
        assert tags.get("automl.model_uri") == summary["models"].get(str(t["trial"]))

    state_file = client.download_artifacts(parent.info.run_id, "searcher_state.pt", str(tmp_path))
    after = torch.load(state_file, weights_only=True)
    before = make_searcher("reinforce", load_space(tmp_path / "space.yaml"), 0).state_dict()
    assert after["updates"] == 3 and after["n_told"] == 6  # batches of 2, as asked
    assert any(not torch.equal(after["net"][k], before["net"][k]) for k in before["net"])


@pytest.fixture
def mlflow_server(tmp_path):
    with mlflow_server_at(tmp_path) as uri:
        yield uri


def test_a_server_refusing_this_host_name_is_found_before_the_search(tmp_path, capsys):
    """MLflow's DNS-rebinding protection answers /health but refuses API calls from a
    host name not on its list: one line saying how to fix it, before anything starts."""
    with mlflow_server_at(tmp_path, "--allowed-hosts", "mlflow.example:5000") as uri:
        code, summary = _search(tmp_path, "--tracking-uri", uri, trials=1)
    err = capsys.readouterr().err
    assert code == 2 and not summary and "HTTP 403" in err and "--allowed-hosts" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_server_keeping_artifacts_on_its_own_disk_is_found_before_the_search(tmp_path, capsys):
    """Started without serving artifacts, a server hands out a path on its own disk; here
    one this machine cannot write (a file stands where its folder would be): one line,
    before anything starts."""
    (tmp_path / "blocker").write_text("")
    root = tmp_path / "blocker" / "mlruns"
    extra = ("--no-serve-artifacts", "--default-artifact-root", str(root))
    with mlflow_server_at(tmp_path, *extra) as uri:
        code, summary = _search(tmp_path, "--tracking-uri", uri, trials=1)
    err = capsys.readouterr().err
    assert code == 2 and not summary and "Traceback" not in err
    assert f"tracking server {uri} keeps artifacts at {root}/0, a path on its own" in err
    assert len(err.strip().splitlines()) == 1


def test_search_over_http_tracking_server_then_compare_evaluate_register_export_predict(
    tmp_path, local_ray, mlflow_server
):
    code, summary = _search(
        tmp_path,
        "--tracking-uri",
        mlflow_server,
        "--searcher",
        "random",
        "--experiment",
        "http",
        trials=3,
    )
    assert code == 0 and summary["tracking_uri"] == mlflow_server
    client = MlflowClient(mlflow_server)
    children = client.search_runs(
        [summary["experiment_id"]], f"tags.mlflow.parentRunId = '{summary['parent_run_id']}'"
    )
    assert {r.info.run_id for r in children} == {t["mlflow_run_id"] for t in summary["trials"]}
    best = summary["best"]["mlflow_run_id"]
    assert client.list_artifacts(best, "checkpoint")
    # what the UI shows: provenance on every child, the corpus as its dataset input, the
    # parent's link to its best child, an experiment that opens on its runs
    for run in children:
        tags = run.data.tags
        assert tags["automl.data"] == "synth-cry" and tags["automl.frontend"] == "mfcc"
        assert tags["automl.seed"] == "0" and tags["automl.code_version"].startswith("0.1.0")
        (used,) = run.inputs.dataset_inputs
        assert used.dataset.name == "synth-cry"
        assert used.dataset.digest == tags["automl.data_fingerprint"][:36]
        assert json.loads(used.dataset.profile)["counts"]["train"]
    parent = client.get_run(summary["parent_run_id"])
    assert parent.data.tags["automl.best_child_run_id"] == best
    assert len(parent.inputs.dataset_inputs) == 1
    experiment = client.get_experiment(summary["experiment_id"])
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    _ship_and_check_what_the_ui_shows(tmp_path, mlflow_server, summary)


def _ship_and_check_what_the_ui_shows(tmp_path: Path, uri: str, summary: dict) -> None:
    """After the search (3 children, the default --log-models 3): every child is an MLflow
    model; compare, evaluate and register the best; export it and predict on raw audio with
    each kind of model; then ask the server's REST API what its UI would show."""
    best = summary["best"]["mlflow_run_id"]
    by_run = {t["mlflow_run_id"]: str(t["trial"]) for t in summary["trials"]}
    assert set(summary["models"]) == set(by_run.values())
    before = os.environ.get("MLFLOW_TRACKING_URI")
    named = f"runs:/{best}/child-{summary['best']['trial']:04d}"  # named as its run is
    with tracking.using(uri):
        model = mlflow.pyfunc.load_model(named)  # as users load a run's model
    assert model.metadata.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 39)
    plots = tmp_path / "plots"
    assert main(["compare", "--experiment", "http", "--tracking-uri", uri,
                 "--plots", str(plots)]) == 0  # fmt: skip
    evaluation = tmp_path / "evaluation.json"
    assert main(["evaluate", "--best", "http", "--tracking-uri", uri, "--seeds", "1",
                 "--out", str(tmp_path / "eval"), "--register", "cry", "--json",
                 str(evaluation)]) == 0  # fmt: skip
    assert json.loads(evaluation.read_text())["child_run_id"] == best
    wavs = [str(synth.ensure_corpus() / "wav" / f"test_{k:04d}.wav") for k in (1, 2, 3)]
    answers = {}
    models = ["models:/cry/1", named, summary["models"][by_run[best]]]
    for fmt, suffix in (("torchscript", ".pt"), ("onnx", ".onnx")):
        models.append(str(tmp_path / f"cry{suffix}"))
        assert main(["export", "--model", "models:/cry/1", "--tracking-uri", uri,
                     "--format", fmt, "--out", models[-1]]) == 0  # fmt: skip
    for name in models:
        out = tmp_path / "predicted.json"
        assert main(["predict", "--model", name, "--tracking-uri", uri, *wavs,
                     "--json", str(out)]) == 0  # fmt: skip
        answers[name] = json.loads(out.read_text())["predictions"]
    registered, searched = answers["models:/cry/1"], answers[named]
    assert searched == answers[models[2]]  # the child's model by run and by model id
    for exported in models[3:]:  # the registered model (retrained) and its two exports
        for a, b in zip(answers[exported], registered, strict=True):
            assert a["class"] == b["class"]
            assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-5)

    def rest(path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{uri}/api/2.0/mlflow/{path}", data=data,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    version = rest("registered-models/get?name=cry")["registered_model"]["latest_versions"][0]
    assert version["version"] == "1" and version["status"] == "READY"
    tags = {t["key"]: t["value"] for t in rest("model-versions/get?name=cry&version=1")
            ["model_version"].get("tags", [])}  # fmt: skip
    assert float(tags["test_uar_mean"]) >= 0 and tags["child_run_id"] == best
    found = rest("logged-models/search", {"experiment_ids": [summary["experiment_id"]]})
    sources = {m["info"]["source_run_id"] for m in found["models"]}
    assert set(by_run) <= sources  # the "Models" of every child run
    listed = rest(f"artifacts/list?run_id={summary['parent_run_id']}&path=compare")
    plots_logged = {f["path"] for f in listed["files"]}
    assert {"compare/best_so_far.png", "compare/uar_vs_params.png"} <= plots_logged
    child = rest(f"runs/get?run_id={best}")["run"]
    assert child["info"]["status"] == "FINISHED"
    assert {t["key"] for t in child["data"]["tags"]} >= {"automl.model_uri"}
    # the commands leave MLflow's URIs in this process (and its children) as they were
    assert os.environ.get("MLFLOW_TRACKING_URI") == before
    _what_a_browser_shows(uri, summary, json.loads(evaluation.read_text()))


def _what_a_browser_shows(uri: str, summary: dict, evaluation: dict) -> None:
    """The server's own UI in a fresh headless Chromium, as a new user meets it: the link
    the search printed lands on the runs page (not the GenAI overview) with the children
    best first and their dev UAR in a column; the parent's description reaches the best
    child in one click; the models are named after their children; the registered version
    shows its test UAR."""
    best, experiment = summary["best"], summary["experiment_id"]
    name = f"child-{best['trial']:04d}"
    others = [  # children below the best (ties, at chance say, may come in either order)
        f"child-{t['trial']:04d}" for t in summary["trials"]
        if t["status"] == "done" and t["dev_uar"] < best["dev_uar"]
    ]  # fmt: skip
    with fresh_browser() as browser:
        page = browser.new_page()
        page.goto(summary["mlflow_ui"])
        page.locator('[role=columnheader][col-id="metrics.`dev_uar`"]').wait_for()
        page.get_by_text(str(best["dev_uar"])[:6]).first.wait_for()
        assert f"#/experiments/{experiment}/runs?" in page.url and "overview" not in page.url
        shown = page.inner_text("body")
        assert all(shown.index(name) < shown.index(other) for other in others)

        page.goto(f"{uri}/#/experiments/{experiment}/runs/{summary['parent_run_id']}")
        note = page.locator("p", has_text="Best child:")  # the parent's description
        with browser.expect_page() as opened:
            note.get_by_role("link", name=name).click()
        child = opened.value
        child.wait_for_url(f"**/runs/{best['mlflow_run_id']}")
        child.get_by_text(best["mlflow_run_id"]).first.wait_for()

        page.goto(f"{uri}/#/experiments/{experiment}/models?workflowType=machine_learning")
        page.get_by_text(name, exact=True).first.wait_for()
        page.get_by_text(f"{name}-train-devel", exact=True).wait_for()

        page.goto(f"{uri}/#/models/cry/versions/1")
        page.get_by_text("test_uar_mean").wait_for()
        page.get_by_text(str(evaluation["test_uar_mean"])[:6]).first.wait_for()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--searcher", "bayes"], "unknown --searcher 'bayes'"),
        (["--space", "missing.yaml"], "--space missing.yaml: file not found"),
        (["--tracking-uri", "http://127.0.0.1:9"], "unreachable"),
        (["--json", "/nonexistent/out.json"], "does not exist"),
        (["--address", "127.0.0.1:9"], "--address 127.0.0.1:9: no Ray cluster answers"),
        (["--address", "headnode"], "--address headnode: expected HOST:PORT"),
        (["--experiment", ""], "--experiment '': Invalid experiment name"),
        (["--experiment", "x" * 600], "exceeds the maximum length"),
    ],
)
def test_search_user_errors_exit_2_before_training(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    base = {"--space": "seed_gru", "--searcher": "random"}
    base.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    args = [x for kv in base.items() for x in kv]
    assert main(["search", "--data", "digits", "--trials", "2", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "mlflow.db").exists()  # nothing started, nothing left behind


@pytest.mark.parametrize(
    "store,message",
    [
        ("another-app", "is another application's database (tables orders, users)"),
        ("folder", "is a folder; name a database file in it"),
        ("random-bytes", "is not a SQLite database"),
        ("old-schema", "is a store of another MLflow version (schema 0a8213491aaa; MLflow"),
    ],
)
def test_a_tracking_uri_that_is_not_an_mlflow_store_is_refused_untouched(
    tmp_path, capsys, store, message
):
    """MLflow would add its tables to any SQLite file it is handed: a file that is not its
    store (or a folder) is refused in one line before anything starts, and left as it was;
    so is a store of another MLflow version (MLflow's own refusal is a paragraph and a
    traceback), with how to upgrade it."""
    import sqlite3

    path = tmp_path / "store.db"
    if store == "another-app":
        with sqlite3.connect(path) as db:
            db.execute("create table users (id integer)")
            db.execute("create table orders (id integer)")
    elif store == "folder":
        path.mkdir()
    elif store == "old-schema":  # a store an older MLflow wrote: an older schema's version
        made = f"import mlflow; mlflow.MlflowClient('sqlite:///{path}').search_runs(['0'])"
        subprocess.run([sys.executable, "-c", made], check=True, capture_output=True)
        with sqlite3.connect(path) as db:
            db.execute("update alembic_version set version_num = '0a8213491aaa'")
    else:
        path.write_bytes(os.urandom(4096))
    before = None if path.is_dir() else path.read_bytes()
    argv = ["search", "--data", "digits", "--space", "seed_gru", "--tracking-uri",
            f"sqlite:///{path}", "--storage", str(tmp_path / "runs")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1, err
    assert before is None or path.read_bytes() == before


@pytest.mark.parametrize("option", ["--trials", "--epochs", "--workers"])
def test_search_counts_must_be_positive(capsys, option):
    with pytest.raises(SystemExit) as info:
        main(["search", "--data", "digits", "--space", "seed_gru", option, "0"])
    assert info.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option,value,message",
    [
        ("--cpus-per-trial", "nan", "expected a number >= 0, got 'nan'"),
        ("--gpus-per-trial", "inf", "expected a number >= 0, got 'inf'"),
        ("--time-budget", "inf", "expected a duration like 90s, 15m or 2h, got 'inf'"),
        ("--target", "nan", "expected a number > 0, got 'nan'"),
    ],
)
def test_search_numbers_must_be_finite(capsys, option, value, message):
    """nan passes every comparison: a check that only asks >= 0 would let it through."""
    with pytest.raises(SystemExit) as info:
        main(["search", "--data", "digits", "--space", "seed_gru", option, value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize(
    "command,device,message",
    [
        ("train", "banana", "expected auto, cpu, cuda or cuda:N, got 'banana'"),
        ("evaluate", "cuda:7", "cuda:7: this torch"),
    ],
)
def test_a_device_is_checked_where_it_is_read(capsys, command, device, message):
    """A device torch cannot use is one line at once, not a traceback after the data."""
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        device = f"cuda:{torch.cuda.device_count()}"  # one this machine does not have
        message = f"{device}: this torch"
    with pytest.raises(SystemExit) as info:
        main([command, "--device", device, "--data", "digits"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and len(err.splitlines()) == 1, err


def test_log_models_takes_a_count_or_all(capsys):
    with pytest.raises(SystemExit) as info:
        main(["search", "--data", "digits", "--space", "seed_gru", "--log-models", "best"])
    assert info.value.code == 2
    assert "expected a count >= 0 or 'all', got 'best'" in capsys.readouterr().err


@pytest.mark.parametrize("searcher", ["qlearning", "dqn"])
def test_rl_searchers_run_a_real_search(tmp_path, local_ray, searcher):
    """Three children with two in flight, the first the space's start child: rewards reach
    the agent in whatever order they finish, every child is a finished MLflow run, and the
    agent's state is saved."""
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start = "start_with: [{layers: [{units: 24, activation: tanh}, {units: 24, activation: tanh}]}]"
    code, summary = _search(
        tmp_path, "--searcher", searcher, "--tracking-uri", db, "--experiment", searcher,
        trials=3, space_text=f"{TINY_SPACE}{start}\n",
    )  # fmt: skip
    assert code == 0 and summary["trained"] == 3
    first = summary["trials"][0]
    assert first["architecture"]["layers"] == [{"units": 24, "activation": "tanh"}] * 2
    assert first["status"] == "done" and first["trial"] == 0 and first["start"]
    assert not any(t["start"] for t in summary["trials"][1:])
    assert summary["searcher_options"]["explore_fraction"] == 0.5
    client = MlflowClient(db)
    runs = client.search_runs(
        [summary["experiment_id"]], f"tags.mlflow.parentRunId = '{summary['parent_run_id']}'"
    )
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    state = torch.load(
        client.download_artifacts(summary["parent_run_id"], "searcher_state.pt", str(tmp_path)),
        weights_only=True,
    )
    assert state["name"] == searcher and state["n_told"] == len(summary["trials"])
    assert state["queued"] == []  # the start child was proposed, and told like the rest
    space = load_space(tmp_path / "space.yaml").with_fixed(epochs=2)  # as --epochs 2 fixed it
    make_searcher(searcher, space, 0).load_state_dict(state)  # fits its space and options


DIGITS_SPACE = """\
family: rnn
fixed: {cell: gru, batch_size: 64}
choices: {lr: [0.0003, 0.003, 0.03]}
layers: {count: 2, min: 1, units: [0, 8, 32], activation: [tanh, relu]}
"""


def _digits_search(tmp_path: Path, *extra: str) -> tuple[int, dict]:
    (tmp_path / "digits.yaml").write_text(DIGITS_SPACE)
    out = tmp_path / "summary.json"
    argv = [
        *("search", "--data", "digits", "--space", str(tmp_path / "digits.yaml")),
        *("--storage", str(tmp_path / "runs"), "--json", str(out), "--seed", "0"),
        *("--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", *extra),
    ]
    return main(argv), json.loads(out.read_text()) if out.exists() else {}


def test_a_second_search_of_one_folder_at_once_is_refused_before_it_starts(tmp_path, capsys):
    """While a search holds its folder (as a running one, or one being resumed, does), a
    second one there refuses in one line before anything starts: two would train the same
    trials and overwrite each other's state."""
    from runtime.files import held_alone

    folder = tmp_path / "runs" / "busy"
    folder.mkdir(parents=True)
    with held_alone(folder, "held by the test"):
        code, summary = _digits_search(tmp_path, "--experiment", "busy", "--trials", "1")
    err = capsys.readouterr().err
    assert code == 2 and not summary and len(err.splitlines()) == 1, err
    assert f"another automl search is running in {folder}" in err
    assert sorted(p.name for p in folder.iterdir()) == []


def test_running_a_finished_search_again_starts_a_new_one_beside_it(tmp_path, local_ray):
    args = ("--searcher", "random", "--trials", "2", "--epochs", "1", "--experiment", "again")
    code, first = _digits_search(tmp_path, *args)
    assert code == 0
    code, second = _digits_search(tmp_path, *args)
    assert code == 0 and second["parent_run_id"] != first["parent_run_id"]
    assert [t["status"] for t in second["trials"]] == ["done", "done"]  # trained, not resumed
    folder = tmp_path / "runs" / "again"
    kept = torch.load(folder / f"search_state.{first['parent_run_id']}.pt", weights_only=True)
    assert kept["finished"] and kept["search_run"]["parent_run_id"] == first["parent_run_id"]
    client = MlflowClient(first["tracking_uri"])
    for summary in (first, second):
        assert client.get_run(summary["parent_run_id"]).info.status == "FINISHED"


def test_a_state_saved_before_reruns_were_guarded_is_read_by_what_it_holds(
    tmp_path, local_ray, capsys
):
    """A state file without the `finished` flag (written before it existed): every child
    settled means it finished, so the same command starts a new search beside it; a
    child still running means it was interrupted, so the command refuses in one line."""
    args = ("--searcher", "random", "--trials", "1", "--epochs", "1", "--experiment", "old")
    code, first = _digits_search(tmp_path, *args)
    state_file = tmp_path / "runs" / "old" / "search_state.pt"
    legacy = torch.load(state_file, weights_only=True)
    del legacy["finished"]
    torch.save(legacy, state_file)
    code, second = _digits_search(tmp_path, *args)
    assert code == 0 and second["parent_run_id"] != first["parent_run_id"]

    legacy["records"][0]["status"] = "running"
    torch.save(legacy, state_file)
    capsys.readouterr()
    code, _ = _digits_search(tmp_path, *args)
    err = capsys.readouterr().err
    assert code == 2 and "holds an interrupted search (1 of 1 children" in err


def test_asha_never_stops_a_start_child(tmp_path, local_ray, capsys):
    """Two start children, one at a time: the second (a slow learning rate, narrow) is below
    the first at the first rung, where ASHA would stop it; a start child trains to its end,
    and the report puts each beside the best child."""
    good = "{lr: 0.03, layers: [{units: 32, activation: tanh}]}"
    slow = "{lr: 0.0003, layers: [{units: 8, activation: tanh}]}"
    (tmp_path / "start.yaml").write_text(f"{DIGITS_SPACE}start_with: [{good}, {slow}]\n")
    code, summary = _digits_search(
        tmp_path,
        *("--space", str(tmp_path / "start.yaml"), "--searcher", "random", "--trials", "3"),
        *("--epochs", "3", "--workers", "1", "--confirm", "0"),
        *("--early-stop", "asha", "--grace-epochs", "1"),
    )
    assert code == 0
    first, second, third = summary["trials"]
    assert first["start"] and second["start"] and not third["start"]
    assert second["dev_uar"] < first["dev_uar"]
    assert [(t["status"], t["epochs"]) for t in (first, second)] == [("done", 3)] * 2
    out, best = capsys.readouterr().out, summary["best"]
    for t, name in ((first, "gru[32t]"), (second, "gru[8t]")):
        versus = (
            "no child the searcher proposed beat it: it is the best"
            if best["trial"] == t["trial"]
            else f"the best child is {best['dev_uar'] - t['dev_uar']:+.4f} on dev"
        )
        line = f"start child {t['trial']} ({name}, done): dev UAR {t['dev_uar']:.4f} (one seed); "
        line += versus
        assert line in out


def test_asha_stops_hopeless_children_the_objective_trades_off_and_the_leader_is_confirmed(
    tmp_path, local_ray
):
    """One child at a time (so the rungs decide the same way every run): children behind
    their rung stop after epoch 1, recorded as stopped, told to the searcher as partial.
    Ten children: the leader (by the reward) is trained once more on seed 1, a run of its
    own; the best child is the one with the best mean reward over its seeds."""
    code, summary = _digits_search(
        tmp_path,
        *("--searcher", "random", "--trials", "10", "--epochs", "3", "--workers", "1"),
        *("--early-stop", "asha", "--grace-epochs", "1"),
        *("--objective", "uar-params", "--target", "2000"),
    )
    assert code == 0 and summary["trained"] == 10
    searched = [t for t in summary["trials"] if t["confirms"] is None]
    stopped = [t for t in searched if t["status"] == "stopped"]
    done = [t for t in searched if t["status"] == "done"]
    assert stopped and done
    client = MlflowClient(summary["tracking_uri"])
    for t in stopped:
        assert t["error"] == "stopped early (asha)" and t["epochs"] == 1
        run = client.get_run(t["mlflow_run_id"])
        assert run.info.status == "KILLED"  # stopped, not failed
        assert run.data.tags["automl.outcome"] == "stopped early (asha) after epoch 1"
        assert run.data.metrics["dev_uar"] == pytest.approx(t["dev_uar"])
        assert t["reward"] == pytest.approx(t["dev_uar"] * (t["n_params"] / 2000) ** -0.07)
    for t in done:
        assert t["epochs"] == 3
        assert t["reward"] == pytest.approx(t["dev_uar"] * (t["n_params"] / 2000) ** -0.07)

    leader = max(done, key=lambda t: t["reward"])
    (again,) = [t for t in summary["trials"] if t["confirms"] is not None]
    assert again["confirms"] == leader["trial"] and again["architecture"] == leader["architecture"]
    assert again["status"] == "done" and again["epochs"] == 3  # no rung judged it
    mean_uar = (leader["dev_uar"] + again["dev_uar"]) / 2
    (confirmed,) = summary["confirmed"]
    assert confirmed["trial"] == leader["trial"] and confirmed["seeds"] == 2
    assert confirmed["dev_uar_mean"] == pytest.approx(mean_uar)
    best = summary["best"]  # the confirmed leader: the others were looked at once
    assert best["trial"] == leader["trial"] and best["seeds"] == 2
    assert best["reward_mean"] == pytest.approx((leader["reward"] + again["reward"]) / 2)
    run = client.get_run(again["mlflow_run_id"])
    assert run.data.tags["automl.role"] == "confirmation"
    assert run.data.tags["automl.confirms"] == leader["mlflow_run_id"]
    assert run.data.tags["automl.seed"] == "1"
    assert run.info.run_name == f"child-{leader['trial']:04d}-seed1"
    metrics = client.get_run(leader["mlflow_run_id"]).data.metrics
    assert metrics["seeds"] == 2 and metrics["dev_uar_mean"] == pytest.approx(mean_uar)
    parent = client.get_run(summary["parent_run_id"]).data.tags
    assert parent["automl.best_child_run_id"] == best["mlflow_run_id"]

    front = summary["pareto"]["n_params"]
    assert front and all(a["n_params"] < b["n_params"] for a, b in itertools.pairwise(front))
    state = torch.load(
        client.download_artifacts(summary["parent_run_id"], "searcher_state.pt", str(tmp_path)),
        weights_only=True,
    )
    assert state["n_told"] == len(searched)  # the confirmation is not the searcher's


def test_a_time_budget_ends_the_search_on_time_and_resume_extends_it(tmp_path, local_ray, capsys):
    args = [
        *("--searcher", "random", "--trials", "100", "--epochs", "100000", "--workers", "2"),
        *("--experiment", "budget"),
    ]  # epochs no child can finish within the budget, however fast the machine
    started = time.time()
    code, first = _digits_search(tmp_path, *args, "--time-budget", "8s")
    assert code == 0 and first["ended"] == "time budget"
    # The deadline, its grace, and Ray's start-up (slow on a loaded 2-core machine); without
    # the budget these children would train for hours.
    assert time.time() - started < 8 + 10 + 60
    stopped = [t for t in first["trials"] if t["status"] == "stopped"]
    assert stopped and all(t["error"] == "stopped at the time budget" for t in stopped)
    client = MlflowClient(first["tracking_uri"])
    assert client.get_run(first["parent_run_id"]).data.tags["automl.ended"] == "time budget"
    for t in stopped:
        if t["mlflow_run_id"] is None:  # stopped before its worker had started it
            continue
        run = client.get_run(t["mlflow_run_id"])
        assert run.info.status == "KILLED"
        assert run.data.tags["automl.outcome"].startswith("stopped at the time budget")
    runs = client.search_runs([first["experiment_id"]])
    assert "RUNNING" not in {r.info.status for r in runs}

    code, resumed = _digits_search(tmp_path, *args, "--time-budget", "30s", "--resume")
    assert code == 0 and resumed["ended"] == "time budget"
    assert resumed["parent_run_id"] == first["parent_run_id"]
    assert resumed["trained"] > first["trained"]

    # its runs are in its own store: resuming it into another, or after that store was
    # deleted, is refused in one line before anything starts (nothing written anywhere)
    capsys.readouterr()
    other = tmp_path / "other.db"
    code, _ = _digits_search(tmp_path, *args, "--resume", "--tracking-uri", f"sqlite:///{other}")
    err = capsys.readouterr().err
    assert code == 2 and f"tracks to {first['tracking_uri']}, not sqlite:///{other}" in err
    assert not other.exists() and len(err.splitlines()) == 1, err
    (tmp_path / "mlflow.db").rename(tmp_path / "moved.db")
    code, _ = _digits_search(tmp_path, *args, "--resume")
    err = capsys.readouterr().err
    assert code == 2 and f"MLflow run {first['parent_run_id']} is not in" in err, err
    assert not (tmp_path / "mlflow.db").exists()


def test_children_no_node_can_place_wait_max_wait_then_the_search_ends_resumable(
    tmp_path, local_ray, capsys
):
    """With --max-wait (a cluster that adds nodes on demand), children asking for a GPU no
    node has wait, visibly, that long while none runs; then one line, exit 2, the state
    kept: --resume asking for what the nodes have finishes the search."""
    args = ("--searcher", "random", "--trials", "2", "--epochs", "1", "--experiment", "gpu")
    started = time.time()
    code, summary = _digits_search(tmp_path, *args, "--gpus-per-trial", "1", "--max-wait", "8s")
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "waiting 1 for a free worker" in err  # the progress line said so meanwhile
    assert (
        "automl: error: children waited 8 s (--max-wait) for a node with 1 CPU, 1 GPU free "
        "while none ran, and none came; the search is saved: add such a node (or ask for "
        "less) and --resume it"
    ) in err.splitlines()
    assert 8 <= time.time() - started < 8 + 60
    assert summary["trained"] == 1 and summary["trials"][0]["status"] != "done"
    assert summary["ended"] == "interrupted"
    client = MlflowClient(summary["tracking_uri"])
    assert client.get_run(summary["parent_run_id"]).info.status == "KILLED"
    code, resumed = _digits_search(tmp_path, *args, "--resume")
    assert code == 0 and [t["status"] for t in resumed["trials"]] == ["done", "done"]
    assert resumed["parent_run_id"] == summary["parent_run_id"]


def test_compare_ranks_the_children_of_every_search_and_draws_the_plots(
    tmp_path, local_ray, capsys
):
    """Two searches of one experiment, compared from MLflow alone: one leaderboard across
    both, three PNG plots written and logged to each search's parent run; an unknown
    experiment is one line and exit 2."""
    args = ("--trials", "3", "--epochs", "1", "--experiment", "cmp")
    summaries = []
    for searcher in ("random", "reinforce"):
        code, summary = _digits_search(tmp_path, "--searcher", searcher, *args)
        assert code == 0
        summaries.append(summary)
    uri = summaries[0]["tracking_uri"]
    out, plots = tmp_path / "compare.json", tmp_path / "plots"
    compare = ["compare", "--experiment", "cmp", "--tracking-uri", uri, "--plots", str(plots)]
    assert main([*compare, "--top", "4", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [s["searcher"] for s in result["searches"]] == ["random", "reinforce"]
    assert [s["children"] for s in result["searches"]] == [3, 3]
    board = result["leaderboard"]
    children = {
        t["mlflow_run_id"]: t for s in summaries for t in s["trials"] if t["status"] == "done"
    }
    assert len(board) == 4 and all(row["run_id"] in children for row in board)
    assert [r["dev_uar"] for r in board] == sorted((r["dev_uar"] for r in board), reverse=True)
    assert board[0]["dev_uar"] == pytest.approx(max(t["dev_uar"] for t in children.values()))
    printed = capsys.readouterr().out
    assert "best children of 2 searches" in printed
    assert all(row["run_id"] in printed for row in board)  # whole: what --run-id takes
    client = MlflowClient(uri)
    for name in ("best_so_far.png", "uar_vs_params.png", "controller.png"):
        data = (plots / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000
        for summary in summaries:
            logged = client.list_artifacts(summary["parent_run_id"], "compare")
            assert f"compare/{name}" in {a.path for a in logged}
    assert main([*compare[:2], "nope", *compare[3:]]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"automl: error: --experiment nope: no such experiment in {uri}"


def test_best_so_far_follows_the_order_children_ended_in():
    """Children end out of trial order with parallel workers: the curve is the best after
    each child *ended* (as the parent's own metric counts), children still running last."""
    from automl.report.compare import SearchRuns

    def child(trial: int, dev_uar: float | None, end_time: int | None, status="FINISHED"):
        return {"trial": trial, "dev_uar": dev_uar, "end_time": end_time, "status": status}

    search = SearchRuns("r" * 32, "random", [
        child(0, 0.35, 3000), child(1, 0.57, 1000), child(2, 0.9, None, "RUNNING"),
        child(3, None, 2000, "FAILED"),
    ])  # fmt: skip
    assert search.best_so_far() == [0.57, 0.57, 0.57, 0.57]


def test_evaluate_retrains_the_best_child_on_train_and_devel_and_scores_it_on_test(
    tmp_path, local_ray, capsys
):
    """The ComParE protocol on a real search's best child: 2 seeds on train+devel for the
    epochs its search kept, test UAR mean/std and per-class recall, predictions and a
    confusion matrix, all in an MLflow run tagged to the child; mistakes are one line."""
    code, summary = _digits_search(
        tmp_path, "--searcher", "random", "--trials", "2", "--epochs", "2", "--experiment", "ev"
    )
    assert code == 0
    uri, out = summary["tracking_uri"], tmp_path / "eval"
    evaluate = ["evaluate", "--tracking-uri", uri, "--seeds", "2", "--out", str(out)]
    argv = [*evaluate, "--best", "ev", "--register", "digits-best"]
    assert main([*argv, "--json", str(tmp_path / "ev.json")]) == 0
    result = json.loads((tmp_path / "ev.json").read_text())
    best = summary["best"]
    assert result["child_run_id"] == best["mlflow_run_id"]
    assert 0.5 < result["test_uar_mean"] <= 1 and len(result["test_uars"]) == 2
    assert result["test_uar_std"] >= 0 and set(result["per_class_recall"]) == set("0123456789")
    said = capsys.readouterr()
    assert "test UAR" in said.out and "models:/digits-best/1" in said.out
    assert result["model_uri"] in said.out
    seeds = [line for line in said.err.splitlines() if "retrained" in line]
    assert [line.split()[1] for line in seeds] == ["1/2", "2/2"]  # a line per seed, as it goes
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0] == "file_name,prediction" and len(rows) == 1 + 360  # digits' test split
    assert (out / "confusion.png").read_bytes().startswith(b"\x89PNG")
    client = MlflowClient(uri)
    run = client.get_run(result["evaluation_run_id"])
    assert run.data.tags["automl.evaluates"] == best["mlflow_run_id"]
    assert run.data.tags["mlflow.parentRunId"] == best["mlflow_run_id"]  # nested under it
    assert best["mlflow_run_id"] in run.data.tags["mlflow.note.content"]  # a link to it
    assert run.info.status == "FINISHED"
    model = client.get_logged_model(result["model_uri"].removeprefix("models:/"))
    assert model.name == f"child-{best['trial']:04d}-train-devel"
    assert run.data.metrics["test_uar_mean"] == pytest.approx(result["test_uar_mean"])
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"predictions.csv", "confusion.png"} <= logged
    assert result["model_uri"].startswith("models:/")  # an MLflow 3 logged model of the run
    child = client.get_run(best["mlflow_run_id"])
    assert child.data.tags["automl.evaluation_run_id"] == run.info.run_id
    assert int(run.data.params["epochs"]) == int(child.data.metrics["best_epoch"])
    # a real MLflow model: loaded (from code, weights without pickle) and used on the
    # frontend's features of a test file, as seed 0 predicted it; registered with its UAR
    with tracking.using(uri):
        model = mlflow.pyfunc.load_model(result["model_uri"])
    digits = load_dataset("digits")
    test = digits.splits["test"]
    first, name = test.sequence(0) * digits.norm_std + digits.norm_mean, str(test.names[0])
    answer = model.predict(first.astype("float32"))
    assert answer["class"][0] == dict(r.split(",") for r in rows[1:])[name]
    assert sum(answer[f"p_{c}"][0] for c in "0123456789") == pytest.approx(1.0)
    assert result["registered"] == {"name": "digits-best", "version": 1}
    version = client.get_model_version("digits-best", "1")
    assert float(version.tags["test_uar_mean"]) == pytest.approx(result["test_uar_mean"])

    _fuse_both_children(tmp_path, evaluate, summary, client, digits)
    capsys.readouterr()

    twice = ["--run-id", best["mlflow_run_id"]] * 2
    for argv, message in [
        ([], "give one of --run-id ID (repeatable) or --best EXPERIMENT"),
        (["--best", "ev", "--fuse", "1"], "--fuse K: with --best EXPERIMENT, K >= 2"),
        (["--best", "ev", "--fuse", "3"], "only 2 finished children share the best one's"),
        (twice, "fusion: a child is named twice"),
        (["--run-id", summary["parent_run_id"]], "not a child of a search"),
        (["--run-id", "0" * 32], f"--run-id {'0' * 32}: no such run"),
        (["--best", "nope"], "--best nope: no such experiment"),
        (["--best", "ev", "--register", "bad/na:me"], "--register 'bad/na:me': Invalid model"),
    ]:
        assert main([*evaluate, *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def _fuse_both_children(tmp_path: Path, evaluate: list, summary: dict, client, digits) -> None:
    """Late fusion of the search's two children: each member's devel UAR is its search's
    (its searched weights), the fused system is scored once on test, and it is one MLflow
    model (registered, tagged) that predicts as the fused seed 0 did."""
    out, result = tmp_path / "fused", tmp_path / "fused.json"
    argv = [*evaluate, "--best", "ev", "--fuse", "2", "--seeds", "1", "--out", str(out),
            "--register", "digits-fused", "--json", str(result)]  # fmt: skip
    assert main(argv) == 0
    fused = json.loads(result.read_text())
    searched = {t["mlflow_run_id"]: t["dev_uar"] for t in summary["trials"]}
    assert {m["child_run_id"] for m in fused["members"]} == set(searched)
    for member in fused["members"]:
        assert member["devel_uar"] == pytest.approx(searched[member["child_run_id"]])
        assert len(member["test_uars"]) == 1
    assert 0 <= fused["devel_uar"] <= 1 and len(fused["test_uars"]) == 1
    run = client.get_run(fused["evaluation_run_id"])
    assert run.data.tags["automl.evaluates"] == fused["child_run_id"]
    assert run.data.metrics["test_uar_mean"] == pytest.approx(fused["test_uar_mean"])
    assert set(run.data.metrics) >= {"devel_uar", "member0/devel_uar", "member1/test_uar_mean"}
    version = client.get_model_version("digits-fused", "1")
    assert float(version.tags["test_uar_mean"]) == pytest.approx(fused["test_uar_mean"])
    with tracking.using(summary["tracking_uri"]):
        model = mlflow.pyfunc.load_model("models:/digits-fused/1")
    test = digits.splits["test"]
    rows = dict(r.split(",") for r in (out / "predictions.csv").read_text().splitlines()[1:])
    for k in range(3):
        features = test.sequence(k) * digits.norm_std + digits.norm_mean
        answer = model.predict(features.astype("float32"))
        assert answer["class"][0] == rows[str(test.names[k])]


def test_evaluate_without_test_labels_says_so_and_writes_predictions(tmp_path, local_ray, capsys):
    """A challenge corpus whose test labels are withheld ('?'): no test UAR, one line
    saying so, and the predictions in the submission format."""
    corpus = write_compare(tmp_path / "corpus")
    tsv = corpus / "lab" / "toy.tsv"
    lines = tsv.read_text().splitlines()
    tsv.write_text("\n".join(x.split("\t")[0] + "\t?" if x.startswith("test_") else x
                             for x in lines) + "\n")  # fmt: skip
    (tmp_path / "space.yaml").write_text(TINY_SPACE)
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    search = ["search", "--data", f"compare:{corpus}", "--space", str(tmp_path / "space.yaml"),
              "--trials", "1", "--epochs", "1", "--storage", str(tmp_path / "runs"),
              "--tracking-uri", db, "--experiment", "withheld"]  # fmt: skip
    assert main(search) == 0
    out = tmp_path / "eval"
    argv = ["evaluate", "--best", "withheld", "--tracking-uri", db, "--seeds", "1"]
    assert main([*argv, "--out", str(out), "--json", str(tmp_path / "ev.json")]) == 0
    printed = capsys.readouterr().out
    assert "the corpus has no test labels: no test UAR" in printed
    result = json.loads((tmp_path / "ev.json").read_text())
    assert result["test_uar_mean"] is None and result["per_class_recall"] == {}
    rows = (out / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + 8 and all(r.split(",")[1] in ("low", "high") for r in rows[1:])
    assert not (out / "confusion.png").exists()


def test_warm_start_tells_the_searcher_an_earlier_search_and_refuses_a_mismatch(
    tmp_path, local_ray, capsys
):
    """Real Ray and MLflow: the finished children of an earlier search reach the new one's
    searcher (and its model) before its first proposal, and it trains none of them again;
    a search over another space, another corpus or a missing experiment is refused in one
    line before anything trains."""
    common = ("--trials", "4", "--epochs", "1", "--workers", "2")
    code, earlier = _digits_search(tmp_path, "--searcher", "random", *common,
                                   "--experiment", "earlier")  # fmt: skip
    assert code == 0
    told = {arch_key(t["architecture"]) for t in earlier["trials"] if t["status"] == "done"}
    capsys.readouterr()
    code, later = _digits_search(tmp_path, "--searcher", "reinforce", "--searcher-opt",
                                 "warmup=2", *common, "--experiment", "later",
                                 "--warm-start", "earlier")  # fmt: skip
    assert code == 0 and later["warm_started"] == len(told) > 0
    out = capsys.readouterr().out
    assert f"told {len(told)} finished children of experiment earlier" in out
    client = MlflowClient(later["tracking_uri"])
    state = torch.load(
        client.download_artifacts(later["parent_run_id"], "searcher_state.pt", str(tmp_path)),
        weights_only=True,
    )
    assert state["n_told"] == len(told) + later["trained"] and len(state["planner"]["told"]) == 8
    assert not told & {arch_key(t["architecture"]) for t in later["trials"]}
    assert client.get_run(later["parent_run_id"]).data.params["warm_start"] == "earlier"

    for extra, message in [
        (("--epochs", "2"), "its searches are over another search space"),
        (("--data", "synth-cry"), "trained on another corpus or frontend"),
        (("--warm-start", "nowhere"), "--warm-start nowhere: no such experiment"),
    ]:
        argv = ("--searcher", "random", "--trials", "1", "--epochs", "1", "--experiment",
                "refused", "--warm-start", "earlier", *extra)  # fmt: skip
        assert _digits_search(tmp_path, *argv)[0] == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert MlflowClient(later["tracking_uri"]).get_experiment_by_name("refused") is None
        assert not (tmp_path / "runs" / "refused").exists()  # nothing started, nothing left
