"""Every bad input a user can give ``automl search``: one line naming the problem and the
file or option, exit code 2, no traceback, and nothing left behind that breaks the next run.

Each case runs the real command in an empty working directory; afterwards that directory
and the feature cache must hold nothing new (no tracking database, no run folders, no
half-written files).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from conftest import CORPUS_MISTAKES, RATE, break_corpus, tone, write_compare

from automl.cli import main

GOOD_SPACE = "family: rnn\nlayers: {count: 1, units: [8]}\n"
#: a "billion laughs": 9 levels of 9 aliases each, 9**9 values from 500 bytes
LAUGHS = "family: rnn\nl0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * 9)}]\n" for k in range(1, 9)
)


def _files(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*")}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = int(exit_.code or 0)
    return code, capsys.readouterr().err


def _assert_clean_failure(code: int, err: str, message: str) -> None:
    assert code == 2, err
    assert message in err, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err  # one line: none blank before it


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current directory (where mlflow.db and automl-runs/ would be created)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def _search_args(corpus: Path, space: Path, **options: str) -> list[str]:
    args = {
        "--data": f"compare:{corpus}",
        "--space": str(space),
        "--searcher": "random",
        "--trials": "2",
        "--epochs": "1",
        **options,
    }
    return ["search", *(x for kv in args.items() for x in kv)]


@pytest.mark.parametrize(
    "case,message",
    [
        *CORPUS_MISTAKES,
        ("unreadable-wav", "devel_003.wav"),
        ("empty-wav", "devel_003.wav"),
        ("non-finite-wav", "devel_003.wav: 2 samples are NaN or infinite"),
        ("absurd-samples", "devel_003.wav: a sample of 1e\\+30, far outside \\[-1, 1\\]"),
        ("path-traversal", "names 'train_d/../../../outside_secret.wav', a path outside"),
        ("absolute-path", "outside_secret.wav' does not start with train_"),
    ],
)
def test_bad_corpus(tmp_path, workdir, automl_cache, capsys, case, message):
    corpus = write_compare(tmp_path / "corpus")
    break_corpus(corpus, case)
    space = tmp_path / "space.yaml"
    space.write_text(GOOD_SPACE)
    cache_before = _files(automl_cache)
    code, err = _run(_search_args(corpus, space), capsys)
    assert re.search(message, err), err
    _assert_clean_failure(code, err, "")
    assert _files(workdir) == set()
    assert not [p for p in _files(automl_cache) - cache_before if ".tmp" in p.name]


@pytest.mark.parametrize(
    "space_text,message",
    [
        ("family: rnn\nlayers: {count: 1, units: [8]}\ncolour: red\n", "unknown key"),
        ("family: rnn\nlayers: {count: 1, units: []}\n", "empty choices"),
        ("family: rnn\nlayers: {count: one, units: [8]}\n", "must be an integer"),
        ("family: rnn\nlayers: [1, 2\n", "YAML syntax error"),
        (LAUGHS, "expands to more than 100000 values"),  # accepted, it would take GBs
        ("family: rnn\nlayers: {count: 1, units: 8}\n", "it decides nothing"),
        (
            "family: rnn\nlayers: {count: 1, units: [8]}\nchoices: {lr: [.nan, 0.01]}\n",
            "choices.lr: choice nan is not a finite number",
        ),
    ],
)
def test_bad_search_space(tmp_path, workdir, capsys, space_text, message):
    corpus = write_compare(tmp_path / "corpus")
    space = tmp_path / "space.yaml"
    space.write_text(space_text)
    code, err = _run(_search_args(corpus, space), capsys)
    _assert_clean_failure(code, err, message)
    assert str(space) in err
    assert _files(workdir) == set()


@pytest.mark.parametrize(
    "options,message",
    [
        ({"--searcher": "bayes"}, "unknown --searcher 'bayes'"),
        ({"--space": "no_such_space.yaml"}, "--space no_such_space.yaml: file not found"),
        ({"--trials": "0"}, "argument --trials: expected a positive integer"),
        ({"--epochs": "ten"}, "argument --epochs: expected a positive integer"),
        ({"--tracking-uri": "http://127.0.0.1:9"}, "tracking server http://127.0.0.1:9"),
        ({"--tracking-uri": "sqlite:////no/such/dir/m.db"}, "/no/such/dir"),
        ({"--json": "/no/such/dir/out.json"}, "--json"),
        ({"--storage": "/proc/automl-runs"}, "--storage /proc/automl-runs"),
        ({"--address": "127.0.0.1:9"}, "--address 127.0.0.1:9"),
        ({"--searcher-opt": "lr=0.1"}, "--searcher-opt lr=0.1: expected KEY=VALUE with KEY"),
        (
            {"--searcher": "reinforce", "--searcher-opt": "lr=fast"},
            "--searcher-opt lr=fast: expected a number, got 'fast'",
        ),
        (
            {"--searcher": "evolution", "--searcher-opt": "sample=50"},
            "--searcher-opt: need 1 <= sample <= population",
        ),
        (
            {"--early-stop": "asha", "--grace-epochs": "3", "--epochs": "3"},
            "--grace-epochs 3: must be below the epochs children train (3)",
        ),
        ({"--target": "1000"}, "--target needs --objective uar-latency or uar-params"),
        ({"--gpus-per-trial": "1"}, "--gpus-per-trial 1: no node can run a trial"),
        ({"--cpus-per-trial": "64"}, "--cpus-per-trial 64 --gpus-per-trial 0: no node can"),
        ({"--trial-resource": "a100=1"}, "--trial-resource a100=1: no node can run a trial"),
        ({"--trial-resource": "a100=lots"}, "--trial-resource a100=lots: expected a number"),
        ({"--trial-resource": "GPU=1"}, "--trial-resource GPU: use --gpus-per-trial"),
        (
            {"--trial-resource": "GPU=1 if params >= 1e9"},
            "--trial-resource 'GPU=1 if params >= 1e9': no node can run a trial",
        ),
        (
            {"--trial-resource": "a100=1 if layers.0.width >= 80"},
            "--trial-resource 'a100=1 if layers.0.width >= 80': no child has a field "
            "'layers.0.width' (fields: bidirectional, cell, family, layer_norm, params",
        ),
        (
            {"--trial-resource": "a100=1 if params is big"},
            "expected a condition FIELD OP VALUE, e.g. 'params >= 200000'",
        ),
        (
            {"--trial-resource": "a100=1 if cell >= gru"},
            "--trial-resource 'a100=1 if cell >= gru': >= compares numbers, got 'gru'",
        ),
        ({"--trial-resource": "a100=-1 if params > 0"}, "a100=-1: expected a number >= 0"),
        ({"--retries": "-1"}, "argument --retries: expected an integer from 0 to 10"),
        ({"--retries": "1000"}, "argument --retries: expected an integer from 0 to 10"),
        ({"--max-wait": "soon"}, "argument --max-wait: expected a duration like 90s"),
        ({"--max-seconds": "0"}, "argument --max-seconds: expected a number > 0"),
    ],
)
def test_bad_option(tmp_path, workdir, capsys, options, message):
    corpus = write_compare(tmp_path / "corpus")
    space = tmp_path / "space.yaml"
    space.write_text(GOOD_SPACE)
    code, err = _run(_search_args(corpus, space, **options), capsys)
    _assert_clean_failure(code, err, message)
    assert _files(workdir) == set()


def test_a_cache_that_is_a_file_is_refused_before_any_work(tmp_path, workdir, capsys, monkeypatch):
    """Found before feature extraction (hours on a real corpus), not after it."""
    corpus = write_compare(tmp_path / "corpus")
    space = tmp_path / "space.yaml"
    space.write_text(GOOD_SPACE)
    cache = tmp_path / "cache-file"
    cache.write_text("not a folder")
    monkeypatch.setenv("AUTOML_CACHE", str(cache))
    code, err = _run(_search_args(corpus, space), capsys)
    _assert_clean_failure(code, err, f"AUTOML_CACHE {cache}: cannot make the cache folder")
    assert _files(workdir) == set() and cache.read_text() == "not a folder"


def test_a_deleted_experiment_is_refused_before_any_work(tmp_path, workdir, capsys):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    client = MlflowClient(uri)
    client.delete_experiment(client.create_experiment("gone"))
    capsys.readouterr()  # MLflow's own set-up chatter, not the command's
    corpus = write_compare(tmp_path / "corpus")
    space = tmp_path / "space.yaml"
    space.write_text(GOOD_SPACE)
    args = _search_args(corpus, space, **{"--experiment": "gone", "--tracking-uri": uri})
    code, err = _run(args, capsys)
    _assert_clean_failure(code, err, "--experiment gone: deleted in MLflow")
    assert "mlflow experiments restore --experiment-id" in err
    assert _files(workdir) == set()


def test_a_failed_search_leaves_nothing_that_breaks_the_next(tmp_path, workdir, capsys):
    """Fail on a bad wav after the features of the good ones were computed, fix the wav,
    run the same command again: it succeeds, in the same folder and the same cache."""
    corpus = write_compare(tmp_path / "corpus")
    wav = corpus / "wav" / "devel_003.wav"
    good = wav.read_bytes()
    space = tmp_path / "space.yaml"
    space.write_text(GOOD_SPACE)
    argv = _search_args(corpus, space, **{"--json": "out.json"})
    break_corpus(corpus, "unreadable-wav")
    code, err = _run(argv, capsys)
    _assert_clean_failure(code, err, "devel_003.wav")
    wav.write_bytes(good)
    code, err = _run(argv, capsys)
    assert code == 0, err
    assert (workdir / "out.json").is_file() and (workdir / "mlflow.db").is_file()
    assert os.listdir(workdir / "automl-runs")


def test_address_auto_without_a_cluster_leaves_nothing(tmp_path, workdir):
    """Ray itself finds no cluster at "auto" (only known once Ray tries): still one line,
    exit 2, and no tracking database or run folder. In its own process, so no Ray that an
    earlier test started in this one is joined instead."""
    corpus = write_compare(tmp_path / "corpus")
    space = tmp_path / "space.yaml"
    space.write_text(GOOD_SPACE)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    argv = _search_args(corpus, space, **{"--address": "auto"})
    proc = subprocess.run(
        [sys.executable, "-m", "automl.cli", *argv], env=env, capture_output=True, text=True
    )
    _assert_clean_failure(proc.returncode, proc.stderr, "--address auto: cannot join")
    assert _files(workdir) == set()


def test_a_very_long_file_is_reported_and_max_seconds_crops_it(
    tmp_path, workdir, automl_cache, capsys
):
    """One 30 s file among 0.5 s files: named with its length in one warning line (nothing
    cropped silently); `--max-seconds` crops every utterance, and the warning goes."""
    import json

    import soundfile as sf
    from conftest import RATE, tone

    from automl.data.prepare import load_dataset

    corpus = write_compare(tmp_path / "corpus")
    sf.write(corpus / "wav" / "train_002.wav", tone(300.0, seconds=30.0), RATE)
    code = main(["data", "--data", f"compare:{corpus}"])
    out, err = capsys.readouterr()
    assert code == 0 and json.loads(out)["counts"]["train"] == {"low": 4, "high": 4}
    assert err.splitlines() == [
        "automl: warning: 1 of 24 files are over 10x the median length (0.5 s): "
        "train_002.wav (30.0 s); each makes its batch that long in every epoch; "
        "--max-seconds S crops every utterance to its first S seconds"
    ]
    assert main(["data", "--data", f"compare:{corpus}", "--max-seconds", "0.5"]) == 0
    assert capsys.readouterr().err == ""
    cropped = load_dataset(f"compare:{corpus}", max_seconds=0.5).splits["train"].lengths
    full = load_dataset(f"compare:{corpus}").splits["train"].lengths
    assert cropped.max() == cropped.min() == full.min() and full.max() > 50 * full.min()
    code, err = _run(["data", "--data", "digits", "--max-seconds", "2"], capsys)
    _assert_clean_failure(code, err, "--max-seconds crops audio")


@pytest.mark.parametrize(
    "argv",
    [
        ["compare", "--experiment", "demo"],
        ["evaluate", "--best", "demo"],
        ["export", "--model", "models:/cry/1", "--format", "onnx", "--out", "cry.onnx"],
        ["predict", "--model", "models:/cry/1", "baby.wav"],
    ],
)
def test_commands_that_read_runs_never_create_a_store(tmp_path, workdir, capsys, argv):
    """Without a store, reading commands say so in one line and leave nothing behind (an
    SQLite URI to a missing file would create an empty store)."""
    wav = tmp_path / "baby.wav"
    sf.write(wav, tone(300), RATE)
    code, err = _run([str(wav) if a == "baby.wav" else a for a in argv], capsys)
    _assert_clean_failure(code, err, f"no MLflow store at {workdir / 'mlflow.db'}")
    assert _files(workdir) == set()


@pytest.mark.parametrize(
    "text,message",
    [
        ('{"family": "rnn", "layers": [{"units": 8}], "hparams": "fast"}',
         "arch.json.hparams: expected an object, got 'fast'"),
        ('{"family": "rnn", "layers": [{"units": 1000000, "activation": "tanh"}]}',
         "units: expected an integer from 0 to 4096, got 1000000"),
        ('{"family": "rnn", "layers": [{"units": 8}], "lr": Infinity}',
         "hparams.lr: expected a number"),
        ('{"family": "rnn", "layers": 8}', "layers: expected a list of {units, activation}"),
        ("[" * 200_000 + "]" * 200_000, "nested too deeply to be an architecture"),
    ],
    ids=["hparams-a-word", "a-million-units", "infinite-lr", "number-for-list", "deep"],
)  # fmt: skip
def test_a_bad_architecture_file_is_one_line_before_any_work(
    tmp_path, workdir, capsys, text, message
):
    (tmp_path / "arch.json").write_text(text)
    code, err = _run(["train", "--data", "digits", "--arch", str(tmp_path / "arch.json")], capsys)
    _assert_clean_failure(code, err, message)
    assert _files(workdir) == set()
