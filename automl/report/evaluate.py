"""The ComParE protocol for a searched child: retrain its architecture on train + devel
with several seeds, with the recipe its search trained it with (the same epochs and
learning-rate schedule) up to the epoch its search kept, and score it once on test.

The test partition is seen only here, after the choice: no epoch or seed is selected on
it. Normalisation is refit on train + devel (the data the final model learns from).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from automl.child import build_model, normalize
from automl.child.metrics import uar
from automl.child.trainer import Padded, TrainConfig, probabilities, resolve_device, train_child
from automl.data.dataset import Dataset, Split
from runtime import mlflow_ui, tracking
from runtime.errors import UserError
from runtime.files import atomic_write
from runtime.tags import (
    ARCHITECTURE_TAG,
    DATA_TAG,
    EVALUATES_TAG,
    EVALUATION_TAG,
    FRONTEND_TAG,
    MODEL_URI_TAG,
    MODEL_VERSION_TAGS,
    NOTE_TAG,
    PARENT_TAG,
    ROLE_TAG,
    RUN_NAME_TAG,
)


@dataclass
class ChosenChild:
    """A searched child as its MLflow run records it."""

    run_id: str
    name: str  # its run's name (child-0007)
    experiment_id: str
    architecture: dict[str, Any]
    epochs: int  # the epoch its search kept (its best on dev)
    data: str
    frontend: str
    task: str | None
    max_seconds: float | None


@dataclass
class Evaluation:
    classes: list[str]
    test_uars: list[float] = field(default_factory=list)  # one per seed
    per_class_recall: dict[str, float] = field(default_factory=dict)  # mean over seeds
    confusion: np.ndarray | None = None  # summed over seeds, rows = true class
    predictions: list[tuple[str, str]] = field(default_factory=list)  # seed 0: (file, class)
    test_probabilities: list[np.ndarray] = field(default_factory=list)  # per seed [files, classes]
    state_dict: dict | None = None  # seed 0's weights
    norm_mean: list[float] = field(default_factory=list)  # from the frontend's features
    norm_std: list[float] = field(default_factory=list)
    example: np.ndarray | None = None  # a test utterance's features, before normalisation

    @property
    def labelled(self) -> bool:
        return bool(self.test_uars)

    def figures(self) -> dict[str, Any]:
        """Test UAR (mean, spread over the seeds, each seed) and per-class recall, as the
        JSON summaries write them (None without test labels)."""
        labelled = self.labelled
        return {
            "test_uar_mean": statistics.fmean(self.test_uars) if labelled else None,
            "test_uar_std": seed_std(self.test_uars) if labelled else None,
            "test_uars": self.test_uars,
            "per_class_recall": self.per_class_recall,
        }


def find_children(uri: str, run_ids: list[str], best_of: str | None, k: int) -> list[ChosenChild]:
    """``--run-id`` (repeatable) names the children; ``--best`` picks the ``k`` best
    finished children of an experiment that share the best one's frontend and crop (what
    a fusion's members must share)."""
    if best_of is None:
        return [find_child(uri, run_id) for run_id in run_ids]
    from automl.report.compare import collect, leaderboard

    board = leaderboard(collect(uri, best_of, "--best"), top=10**9)
    if not board:
        raise UserError(f"--best {best_of}: no finished child in {uri}")
    chosen = [find_child(uri, board[0]["run_id"])]
    for row in board[1:]:
        if len(chosen) == k:
            break
        child = find_child(uri, row["run_id"])
        if (child.frontend, child.max_seconds) == (chosen[0].frontend, chosen[0].max_seconds):
            chosen.append(child)
    if len(chosen) < k:
        raise UserError(
            f"--best {best_of} --fuse {k}: only {len(chosen)} finished children share the best "
            f"one's frontend ({chosen[0].frontend}) and crop"
        )
    return chosen


def find_child(uri: str, run_id: str) -> ChosenChild:
    """A finished child of a search, by its run id."""
    try:
        run = tracking.get_run(uri, run_id)
    except tracking.UnknownRun:
        raise UserError(f"--run-id {run_id}: no such run in {uri}") from None
    tags, metrics = run.tags, run.metrics
    if tags.get(ROLE_TAG) != "child" or ARCHITECTURE_TAG not in tags:
        raise UserError(f"--run-id {run_id}: not a child of a search")
    if run.status != "FINISHED" or "best_epoch" not in metrics:
        raise UserError(f"--run-id {run_id}: the child did not finish ({run.status})")
    params = tracking.get_run(uri, tags[PARENT_TAG]).params
    max_seconds = params.get("max_seconds", "None")
    return ChosenChild(
        run_id=run_id,
        name=tags.get(RUN_NAME_TAG, run_id[:8]),
        experiment_id=run.experiment_id,
        architecture=json.loads(tags[ARCHITECTURE_TAG]),
        epochs=int(metrics["best_epoch"]),
        data=tags.get(DATA_TAG) or params["data"],
        frontend=tags.get(FRONTEND_TAG) or params.get("frontend", "mfcc"),
        task=None if params.get("task", "None") == "None" else params["task"],
        max_seconds=None if max_seconds == "None" else float(max_seconds),
    )


def train_plus_devel(data: Dataset) -> Dataset:
    """train + devel as the training split (normalisation refit on them), test kept."""
    if "test" not in data.splits:
        raise UserError(f"{data.name}: no test partition to evaluate on")
    parts = [data.splits["train"], data.splits["devel"]]
    seqs = [s.sequence(i) for s in parts for i in range(len(s))]
    joined = Split.from_sequences(
        seqs, [int(x) for s in parts for x in s.labels], [str(n) for s in parts for n in s.names]
    )
    mean, std = joined.frames.mean(axis=0), joined.frames.std(axis=0)
    std[std < 1e-8] = 1.0
    test = data.splits["test"]

    def norm(s: Split) -> Split:
        return Split(((s.frames - mean) / std).astype(np.float32), s.offsets, s.labels, s.names)

    # the two standardisations compose into one, from the frontend's features
    before_mean = data.norm_mean if data.norm_mean is not None else np.zeros_like(mean)
    before_std = data.norm_std if data.norm_std is not None else np.ones_like(std)
    splits = {"train": norm(joined), "test": norm(test)}
    return Dataset(data.name, data.classes, splits, data.fingerprint,
                   before_mean + before_std * mean, before_std * std)  # fmt: skip


def evaluate(
    child: ChosenChild,
    data: Dataset,
    seeds: int,
    device: str = "auto",
    on_seed: Callable[[int, float | None], None] | None = None,
) -> Evaluation:
    """Retrain on train + devel with seeds 0..seeds-1 and score each once on test;
    ``on_seed(seed, test UAR or None)`` after each."""
    final = train_plus_devel(data)
    test = Padded.from_split(final.splits["test"])
    labels = final.splits["test"].labels
    result = Evaluation(data.classes)
    result.norm_mean, result.norm_std = final.norm_mean.tolist(), final.norm_std.tolist()
    first = final.splits["test"].sequence(0)
    result.example = (first * final.norm_std + final.norm_mean).astype(np.float32)
    for seed in range(seeds):
        # the search's recipe (its epochs, its schedule over them), stopped at the kept epoch
        config = TrainConfig(stop_after=child.epochs, seed=seed, device=device)
        trained = train_child(child.architecture, final, config, select_on_dev=False)
        model = build_model(normalize(child.architecture), final.n_features, final.n_classes)
        model.load_state_dict(trained.state_dict)
        target = resolve_device(device)
        result.test_probabilities.append(probabilities(model.to(target), test, target))
        predicted = result.test_probabilities[-1].argmax(axis=1)
        if seed == 0:
            names = [str(n) for n in final.splits["test"].names]
            result.predictions = list(zip(names, (data.classes[p] for p in predicted), strict=True))
            result.state_dict = trained.state_dict
        if (labels >= 0).all():
            score_seed(result, labels, predicted)
        if on_seed is not None:
            on_seed(seed, result.test_uars[-1] if result.test_uars else None)
    return result


def score_seed(result: Evaluation, labels: np.ndarray, predicted: np.ndarray) -> None:
    """One seed's test predictions into ``result``: its UAR, its confusion matrix (summed
    over seeds) and the per-class recall (averaged over the seeds so far)."""
    from sklearn.metrics import confusion_matrix, recall_score

    every = list(range(len(result.classes)))
    per_class = recall_score(labels, predicted, labels=every, average=None, zero_division=0)
    n = len(result.test_uars)
    for c, r in zip(result.classes, per_class, strict=True):
        result.per_class_recall[c] = (result.per_class_recall.get(c, 0.0) * n + float(r)) / (n + 1)
    result.test_uars.append(uar(labels, predicted))
    matrix = confusion_matrix(labels, predicted, labels=every)
    result.confusion = matrix if result.confusion is None else result.confusion + matrix


def confusion_png(confusion: np.ndarray, classes: list[str], title: str, path: Path) -> Path:
    """The confusion matrix as a PNG (see :func:`confusion_figure`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = confusion_figure(plt, confusion, classes, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def confusion_figure(plt: Any, confusion: np.ndarray, classes: list[str], title: str) -> Any:
    """scikit-learn's confusion display, each row normalised to the recall of its true
    class (UAR is their diagonal's mean) on a 0-1 colour bar, the counts beside them."""
    from sklearn.metrics import ConfusionMatrixDisplay

    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    display = ConfusionMatrixDisplay(rows, display_labels=classes)
    figure, axes = plt.subplots(figsize=(5.5, 4.5))
    display.plot(ax=axes, colorbar=True, values_format=".2f", im_kw={"vmin": 0, "vmax": 1})
    for (i, j), text in np.ndenumerate(display.text_):
        text.set_text(f"{rows[i, j]:.2f}\n({confusion[i, j]})")
    axes.set_title(title)
    axes.set_ylabel("true class (row: its recall)")
    figure.tight_layout()
    return figure


def write_files(result: Evaluation, folder: Path) -> dict[str, Path]:
    """``predictions.csv`` (ComParE's submission columns) and, with test labels,
    ``confusion.png`` in ``folder``; returns them by name."""
    title = f"test, {len(result.test_uars)} seeds summed"
    confusion = result.confusion if result.labelled else None
    return write_outputs(folder, result.predictions, confusion, result.classes, title)


def write_outputs(
    folder: Path,
    predictions: list[tuple[str, str]],
    confusion: np.ndarray | None,
    classes: list[str],
    title: str,
) -> dict[str, Path]:
    """``predictions.csv`` and, given a confusion matrix, ``confusion.png`` in ``folder``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {folder}: cannot make this folder ({exc})") from None
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["file_name", "prediction"])  # ComParE's submission columns
    writer.writerows(predictions)
    files = {"predictions": folder / "predictions.csv"}
    atomic_write(files["predictions"], lambda handle: handle.write(text.getvalue().encode()))
    if confusion is not None:
        files["confusion"] = confusion_png(confusion, classes, title, folder / "confusion.png")
    return files


def open_run(uri: str, child: ChosenChild) -> str:
    """The evaluation's run, opened before the retraining (so its duration is the
    evaluation's) and nested under the child it evaluates, its description linking there."""
    page = mlflow_ui.run_page(child.experiment_id, child.run_id)
    tags = {
        EVALUATES_TAG: child.run_id,
        ROLE_TAG: "evaluation",
        PARENT_TAG: child.run_id,
        NOTE_TAG: f"Evaluates [{child.name}]({page}) on test (train + devel retraining)",
    }
    return tracking.start_run(uri, child.experiment_id, f"evaluate-{child.name}", tags)


def log_run(
    uri: str,
    run_id: str,
    child: ChosenChild,
    result: Evaluation,
    seeds: int,
    files: dict[str, Path],
) -> None:
    """The evaluation's metrics and files into its run (tagged both ways with the child)."""
    metrics = {}
    if result.labelled:
        metrics["test_uar_mean"] = statistics.fmean(result.test_uars)
        metrics["test_uar_std"] = seed_std(result.test_uars)
        for label, recall in result.per_class_recall.items():
            metrics[tracking.metric_key("recall", label)] = recall
    tracking.log_values(uri, run_id, {"seeds": seeds, "epochs": child.epochs}, metrics)
    for path in files.values():
        tracking.log_artifact(uri, run_id, path)
    tracking.set_tag(uri, child.run_id, EVALUATION_TAG, run_id)


def log_model(uri: str, run_id: str, child: ChosenChild, result: Evaluation) -> str:
    """Seed 0's model as an MLflow model (see :mod:`automl.ship.bundle`), named after the
    child and what it learnt from (``child-0007-train-devel``); returns its URI."""
    from automl.ship import bundle

    meta = bundle.ModelMeta(
        child.architecture, result.classes, result.norm_mean, result.norm_std,
        child.frontend, child.max_seconds, child.data,
    )  # fmt: skip
    name = f"{child.name}-train-devel"
    model_uri = bundle.log_model(uri, run_id, name, meta, result.state_dict, result.example)
    tracking.set_tag(uri, run_id, MODEL_URI_TAG, model_uri)
    return model_uri


def register(uri: str, model_uri: str, name: str, summary: dict[str, Any]) -> dict[str, Any]:
    """A new version of ``name`` in the Model Registry, tagged with its test UAR."""
    tags = {key: str(summary[key]) for key in MODEL_VERSION_TAGS if summary[key] is not None}
    return {"name": name, "version": tracking.register_model(uri, model_uri, name, tags)}


def seed_std(values: list[float]) -> float:
    """The spread of the seeds' test UARs (0 for one seed)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summary(
    child: ChosenChild, result: Evaluation, eval_run: str, files: dict[str, Path], model_uri: str
) -> dict[str, Any]:
    """What ``automl evaluate --json`` writes (and registers the model version with)."""
    return {
        "child_run_id": child.run_id,
        "evaluation_run_id": eval_run,
        "epochs": child.epochs,
        **result.figures(),
        "predictions": str(files["predictions"]),
        "model_uri": model_uri,
    }
