"""Children that learn on utterances of seconds, and the challenge baseline beside them."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_compare

from automl.child import build_model, normalize
from automl.child.rnn import Normalised, stack_frames
from automl.child.trainer import TrainConfig, train_child
from automl.cli import main
from automl.data import synth
from automl.data.prepare import load_dataset
from runtime.errors import UserError

#: utterances of 4-6 s (200-300 frames), few of them: a corpus of the kind ComParE's
#: speaker-state tasks are, small enough for a test
LONG = synth.CorpusSpec(
    "long-test", 1, (0.5, 0.3, 0.2), (("train", 8), ("devel", 4), ("test", 4)), 6, (4.0, 6.0)
)
DEEP_IN_CELL = {
    "family": "rnn",
    "layers": [{"units": 40, "activation": a} for a in ("relu", "sigmoid", "relu", "sigmoid")],
    "class_weighted": True,
    "layer_norm": "in-cell",  # seed_gru's: every layer here has an in-cell ReLU/sigmoid
    "subsample": 3,
    "epochs": 6,
}


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth.ensure_corpus(tmp_path_factory.mktemp("corpora"), LONG)


def test_stacked_frames_keep_every_length_working():
    """k frames per step for any length: shorter than k, a multiple of k, one over."""
    x = torch.arange(2 * 7 * 2, dtype=torch.float32).reshape(2, 7, 2)
    for k in (2, 3, 4):
        stacked, lengths = stack_frames(x, torch.tensor([1, 7]), k)
        assert stacked.shape == (2, math.ceil(7 / k), 2 * k)
        assert lengths.tolist() == [1, math.ceil(7 / k)]
        torch.testing.assert_close(stacked[1, 0], x[1, :k].reshape(-1))
    arch = normalize({**DEEP_IN_CELL, "subsample": 4})
    model = build_model(arch, n_features=2, n_classes=3).eval()
    for length in (1, 3, 4, 5, 9):
        out = model(torch.randn(1, length, 2), torch.tensor([length]))
        assert out.shape == (1, 3) and torch.isfinite(out).all()


def test_in_cell_layer_norm_normalises_the_relu_and_sigmoid_layers_only():
    """A tanh layer's outputs are bounded and centred already (normalising them cost a
    plain tanh GRU accuracy); an in-cell ReLU or sigmoid layer's are not."""
    layers = [{"units": 4, "activation": a} for a in ("tanh", "relu", "sigmoid", "tanh")]
    arch = normalize({"family": "rnn", "layers": layers, "layer_norm": "in-cell"})
    assert normalize(arch) == arch and arch["layer_norm"] == "in-cell"
    model = build_model(arch, n_features=2, n_classes=3)
    assert [isinstance(layer, Normalised) for layer in model.layers] == [0, 1, 1, 0]
    every = build_model({**arch, "layer_norm": True}, n_features=2, n_classes=3)
    assert all(isinstance(layer, Normalised) for layer in every.layers)
    with pytest.raises(UserError, match=r"layer_norm: expected true, false or 'in-cell'"):
        normalize({**arch, "layer_norm": "tanh"})


def test_a_deep_in_cell_relu_sigmoid_child_learns_on_long_utterances(long_corpus, tmp_path):
    """Four in-cell ReLU/sigmoid layers over 200-300 frames, with the shipped spaces'
    recipe: no NaN, well above chance on devel, through `automl train`."""
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(DEEP_IN_CELL))
    out = tmp_path / "result.json"
    data = f"compare:{long_corpus}"
    code = main(["train", "--data", data, "--task", LONG.name, "--arch", str(arch),
                 "--threads", "2", "--json", str(out)])  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    frames = load_dataset(data, task=LONG.name).splits["train"].lengths
    assert frames.min() >= 200  # the long sequences the child stepped through (in thirds)
    assert all(np.isfinite(h["train_loss"]) for h in result["history"])
    assert result["retry"] is None
    assert result["dev_uar"] >= 0.5, result["history"]  # chance is 1/3 (the recipe before
    # layer_norm and subsample: 1/3 exactly, on seeds 0-2)


def test_a_diverged_child_is_retried_once_from_its_best_epoch_at_a_lower_rate():
    data = load_dataset("digits")
    arch = {"family": "rnn", "layers": [{"units": 16, "activation": "relu"}], "epochs": 4}
    result = train_child(arch, data, TrainConfig(inject_nan_epoch=2, threads=1))
    assert result.retry == {"epoch": 2, "from_epoch": 1, "lr": pytest.approx(1e-3)}
    assert [h.epoch for h in result.history] == [1, 2, 3, 4]  # epoch 2 was trained again
    assert all(np.isfinite(h.train_loss) for h in result.history)
    assert result.best_epoch == 4 and result.dev_uar == result.history[-1].dev_uar  # annealed


def test_a_child_that_diverges_again_after_its_retry_fails_saying_so():
    data = load_dataset("digits")
    train = data.splits["train"]
    train.frames[:] = np.nan  # every epoch diverges, the retry's too
    arch = {"family": "rnn", "layers": [{"units": 8, "activation": "tanh"}], "epochs": 3}
    with pytest.raises(FloatingPointError, match="again after the retry from its initial weights"):
        train_child(arch, data, TrainConfig(threads=1))


# -- automl baseline ---------------------------------------------------------------------


def _functionals_csv(corpus: Path, rng: np.random.Generator, flip_test: bool) -> Path:
    """One row of 6 features per file; the class shows in feature 0 on train and devel,
    and on test (``flip_test``) partly in feature 1, so what suits test differs."""
    rows = ["name;" + ";".join(f"f{i}" for i in range(6))]
    for line in (corpus / "lab" / "toy.tsv").read_text().splitlines()[1:]:
        name, label = line.split("\t")
        y = 1.0 if label == "high" else -1.0
        x = rng.normal(size=6)
        test = name.startswith("test")
        x[0] += y * (0.3 if test and flip_test else 1.0)
        x[1] += y * (1.5 if test and flip_test else 0.2)
        rows.append(name + ";" + ";".join(f"{v:.5f}" for v in x))
    path = corpus / "functionals.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def _per_complexity_test_uar(data) -> dict[float, float]:
    from automl.child.metrics import uar
    from automl.report import baseline

    train, devel, test = (data.splits[p] for p in ("train", "devel", "test"))
    x = np.concatenate([train.frames, devel.frames])
    y = np.concatenate([train.labels, devel.labels])
    return {
        c: uar(test.labels, baseline._fit(c, x, y).predict(test.frames))
        for c in baseline.COMPLEXITIES
    }


def test_baseline_chooses_its_complexity_on_devel_only(compare_corpus, tmp_path, capsys):
    """A corpus where the complexity best on test is not the one best on devel: the
    command keeps devel's and reports the test UAR of that one, logged as a baseline run."""
    root = compare_corpus(per_class={"low": 14, "high": 10})
    for seed in range(40):
        features = _functionals_csv(root, np.random.default_rng(seed), flip_test=True)
        data = load_dataset(f"compare:{root}", f"csv:{features}", "toy")
        from automl.report.baseline import run_baseline

        chosen = run_baseline(data, "csv").complexity
        on_test = _per_complexity_test_uar(data)
        if on_test[chosen] < max(on_test.values()):
            break
    else:
        pytest.fail("no corpus where test prefers another complexity")
    out, uri = tmp_path / "baseline.json", f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = ["baseline", "--data", f"compare:{root}", "--features", f"csv:{features}",
            "--experiment", "toy", "--tracking-uri", uri, "--out", str(tmp_path / "files"),
            "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(out.read_text())
    devel = {float(c): u for c, u in result["devel_uar"].items()}
    assert result["complexity"] == chosen == max(devel, key=lambda c: (devel[c], -c))
    assert result["test_uar"] == pytest.approx(on_test[chosen])
    assert result["test_uar"] < max(on_test.values())  # not the complexity best on test
    printed = capsys.readouterr().out
    assert "<- chosen" in printed and f"test UAR {result['test_uar']:.4f}" in printed
    assert (tmp_path / "files" / "confusion.png").is_file()
    from mlflow import MlflowClient

    run = MlflowClient(uri).get_run(result["run_id"])
    assert run.data.tags["automl.role"] == "baseline"
    assert run.data.metrics["test_uar"] == pytest.approx(result["test_uar"])


def test_baseline_with_withheld_test_labels_writes_predictions(tmp_path, capsys):
    root = write_compare(tmp_path / "corpus", per_class={"low": 5, "high": 5})
    label_file = root / "lab" / "toy.tsv"
    lines = label_file.read_text().splitlines()
    label_file.write_text(
        "\n".join(line.split("\t")[0] + "\t" if line.startswith("test") else line
                  for line in lines) + "\n"
    )  # fmt: skip
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = ["baseline", "--data", f"compare:{root}", "--features", "mfcc-functionals",
            "--tracking-uri", uri, "--out", str(tmp_path / "files")]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "no test labels: no test UAR" in printed and "test UAR 0" not in printed
    predictions = (tmp_path / "files" / "predictions.csv").read_text().splitlines()
    assert predictions[0] == "file_name,prediction" and len(predictions) == 11
    assert not (tmp_path / "files" / "confusion.png").exists()


def test_baseline_without_the_opensmile_extra_says_how_to_install_it(tmp_path):
    """An environment without opensmile (it is an optional extra): one line, exit 2."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "opensmile.py").write_text("raise ImportError('No module named opensmile')\n")
    root = write_compare(tmp_path / "corpus")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from automl.cli import main; "
        "sys.exit(main(sys.argv[2:]))"
    )
    argv = ["baseline", "--data", f"compare:{root}", "--features", "egemaps",
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", code, str(blocker), *argv], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "pip install 'automl-rl[opensmile]'" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


FRONTEND_SPACE = """\
family: mlp
fixed: {class_weighted: true}
choices:
  frontend: [mfcc-functionals, mfcc]
layers: {count: 1, min: 1, units: [16], activation: [relu]}
"""


def test_a_search_over_frontends_and_functionals_shows_the_baseline_beside_it(
    tmp_path, local_ray, capsys
):
    """The representation as a decision, with the functionals family, end to end: `automl
    baseline`, then a search whose two children read MFCC functionals and MFCC frames;
    each child records its own frontend, `evaluate` retrains it on that one, and the
    search, `compare` and `evaluate` each name the experiment's baseline. The classes'
    labels hold what MLflow's metric keys may not (brackets, commas, an emoji, a slash):
    every command still ends with its results."""
    labels = {"low": "low (quiet), ok", "high": "high/🙂 loud"}
    root = write_compare(tmp_path / "corpus", per_class={"low": 6, "high": 6}, named=labels)
    space = tmp_path / "space.yaml"
    space.write_text(FRONTEND_SPACE)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--data", f"compare:{root}", "--tracking-uri", uri]
    assert main(["baseline", *common, "--features", "mfcc-functionals", "--experiment", "fx",
                 "--out", str(tmp_path / "baseline")]) == 0  # fmt: skip
    summary = tmp_path / "summary.json"
    assert main(["search", *common, "--space", str(space), "--searcher", "random",
                 "--trials", "2", "--epochs", "2", "--workers", "2", "--experiment", "fx",
                 "--storage", str(tmp_path / "runs"), "--json", str(summary)]) == 0  # fmt: skip
    trials = [t for t in json.loads(summary.read_text())["trials"] if t["status"] != "cached"]
    assert [t["status"] for t in trials] == ["done", "done"]
    assert {t["architecture"]["frontend"] for t in trials} == {"mfcc-functionals", "mfcc"}
    from mlflow import MlflowClient

    for t in trials:
        run = MlflowClient(uri).get_run(t["mlflow_run_id"])
        assert run.data.tags["automl.frontend"] == t["architecture"]["frontend"]
    searched = capsys.readouterr().out
    assert "baseline (mfcc-functionals + SVM): dev UAR" in searched
    assert "the best child is" in searched
    assert main(["compare", "--experiment", "fx", "--tracking-uri", uri,
                 "--plots", str(tmp_path / "plots")]) == 0  # fmt: skip
    assert "baseline (mfcc-functionals + SVM)" in capsys.readouterr().out
    for t in trials:
        argv = ["evaluate", "--run-id", t["mlflow_run_id"], "--seeds", "1", "--tracking-uri",
                uri, "--out", str(tmp_path / "evaluation"),
                "--json", str(tmp_path / "ev.json")]  # fmt: skip
        assert main(argv) == 0
        evaluated = capsys.readouterr().out
        assert "beside it: baseline (mfcc-functionals + SVM)" in evaluated
        assert "epoch " in evaluated and "onecycle schedule" in evaluated
        result = json.loads((tmp_path / "ev.json").read_text())
        assert set(result["per_class_recall"]) == set(labels.values())
        assert 0.0 <= result["test_uar_mean"] <= 1.0
        evaluation = MlflowClient(uri).get_run(result["evaluation_run_id"])
        assert evaluation.info.status == "FINISHED"
        assert sum(k.startswith("recall/") for k in evaluation.data.metrics) == 2
    rows = (tmp_path / "evaluation" / "predictions.csv").read_text(encoding="utf-8")
    assert '"low (quiet), ok"' in rows or "high/🙂 loud" in rows  # quoted where it must be
