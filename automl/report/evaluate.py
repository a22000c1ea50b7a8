"""The ComParE protocol for a searched child: retrain its architecture on train + devel
with several seeds, for the epochs its search chose, and score it once on test.

The test partition is seen only here, after the choice: no epoch or seed is selected on
it. Normalisation is refit on train + devel (the data the final model learns from).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from automl.child import build_model, normalize
from automl.child.metrics import uar
from automl.child.trainer import Padded, TrainConfig, predict, resolve_device, train_child
from automl.data.dataset import Dataset, Split
from runtime import tracking
from runtime.errors import UserError

EVALUATES_TAG = "automl.evaluates"  # on an evaluation run: the child it evaluates
EVALUATION_TAG = "automl.evaluation_run_id"  # on the child: its latest evaluation


@dataclass
class ChosenChild:
    """A searched child as its MLflow run records it."""

    run_id: str
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
    state_dict: dict | None = None  # seed 0's weights
    norm_mean: list[float] = field(default_factory=list)  # from the frontend's features
    norm_std: list[float] = field(default_factory=list)
    example: np.ndarray | None = None  # a test utterance's features, before normalisation

    @property
    def labelled(self) -> bool:
        return bool(self.test_uars)


def find_child(uri: str, run_id: str | None, best_of: str | None) -> ChosenChild:
    """``--run-id`` names a child; ``--best`` picks the best finished child of an experiment."""
    client = tracking.client(uri)
    if best_of is not None:
        from automl.report.compare import collect, leaderboard

        board = leaderboard(collect(uri, best_of, "--best"), top=1)
        if not board:
            raise UserError(f"--best {best_of}: no finished child in {uri}")
        run_id = board[0]["run_id"]
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:  # its own message for an unknown id is a long REST error
        raise UserError(f"--run-id {run_id}: no such run in {uri}") from None
    tags, metrics = run.data.tags, run.data.metrics
    if tags.get("automl.role") != "child" or "automl.architecture" not in tags:
        raise UserError(f"--run-id {run_id}: not a child of a search")
    if run.info.status != "FINISHED" or "best_epoch" not in metrics:
        raise UserError(f"--run-id {run_id}: the child did not finish ({run.info.status})")
    params = client.get_run(tags[tracking.PARENT_TAG]).data.params
    max_seconds = params.get("max_seconds", "None")
    return ChosenChild(
        run_id=run_id,
        experiment_id=run.info.experiment_id,
        architecture=json.loads(tags["automl.architecture"]),
        epochs=int(metrics["best_epoch"]),
        data=tags.get("automl.data") or params["data"],
        frontend=tags.get("automl.frontend") or params.get("frontend", "mfcc"),
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


def evaluate(child: ChosenChild, data: Dataset, seeds: int, device: str = "auto") -> Evaluation:
    """Retrain on train + devel with seeds 0..seeds-1 and score each once on test."""
    from sklearn.metrics import confusion_matrix, recall_score

    final = train_plus_devel(data)
    test = Padded.from_split(final.splits["test"])
    labels = final.splits["test"].labels
    result = Evaluation(data.classes)
    result.norm_mean, result.norm_std = final.norm_mean.tolist(), final.norm_std.tolist()
    first = final.splits["test"].sequence(0)
    result.example = (first * final.norm_std + final.norm_mean).astype(np.float32)
    recalls = []
    for seed in range(seeds):
        trained = train_child(
            child.architecture, final, TrainConfig(epochs=child.epochs, seed=seed, device=device),
            select_on_dev=False,
        )  # fmt: skip
        model = build_model(normalize(child.architecture), final.n_features, final.n_classes)
        model.load_state_dict(trained.state_dict)
        target = resolve_device(device)
        predicted = predict(model.to(target), test, target)
        if seed == 0:
            names = [str(n) for n in final.splits["test"].names]
            result.predictions = list(zip(names, (data.classes[p] for p in predicted), strict=True))
            result.state_dict = trained.state_dict
        if (labels >= 0).all():
            every = list(range(len(data.classes)))
            per_class = recall_score(labels, predicted, labels=every, average=None, zero_division=0)
            recalls.append(per_class)
            result.test_uars.append(uar(labels, predicted))
            matrix = confusion_matrix(labels, predicted, labels=every)
            result.confusion = matrix if result.confusion is None else result.confusion + matrix
    if recalls:
        mean = np.mean(recalls, axis=0)
        result.per_class_recall = {c: float(r) for c, r in zip(data.classes, mean, strict=True)}
    return result


def confusion_png(evaluation: Evaluation, path: Path) -> Path:
    """The confusion matrix summed over seeds, as a PNG (scikit-learn's display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    display = ConfusionMatrixDisplay(evaluation.confusion, display_labels=evaluation.classes)
    figure, axes = plt.subplots(figsize=(5, 4.5))
    display.plot(ax=axes, colorbar=False)
    axes.set_title(f"test, {len(evaluation.test_uars)} seeds summed")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
