"""The ComParE challenge's baseline recipe: utterance-level functionals and a linear SVM.

What a search has to beat, computed the way the challenge papers do: the functionals are
standardised on the data the SVM learns from, the SVM's complexity is chosen on devel
from 1e-6 ... 1, the chosen complexity is retrained on train + devel and scored once on
test. scikit-learn does the work (``StandardScaler``, ``LinearSVC``); this module only
runs the protocol. :func:`log_run` records it as a run of the experiment (role
``baseline``), which the search summary, ``automl compare`` and ``automl evaluate`` read back
(:func:`latest`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from automl.child.metrics import uar
from automl.data.dataset import Dataset, Split
from runtime import tracking
from runtime.errors import UserError
from runtime.tags import DATA_TAG, ROLE_TAG

ROLE = "baseline"

COMPLEXITIES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
MAX_ITER = 20_000  # liblinear's iterations: enough for 6,373 standardised features


@dataclass
class BaselineResult:
    features: str
    classes: list[str]
    devel_uar: dict[float, float]  # per complexity
    complexity: float  # the one chosen on devel
    test_uar: float | None = None  # None: the corpus withholds its test labels
    per_class_recall: dict[str, float] = field(default_factory=dict)
    confusion: np.ndarray | None = None  # rows = true class
    predictions: list[tuple[str, str]] = field(default_factory=list)  # (file, class) on test

    @property
    def devel_best(self) -> float:
        return self.devel_uar[self.complexity]

    def to_json(self) -> dict:
        return {
            "features": self.features,
            "devel_uar": {f"{c:g}": u for c, u in self.devel_uar.items()},
            "complexity": self.complexity,
            "devel_uar_best": self.devel_best,
            "test_uar": self.test_uar,
            "per_class_recall": self.per_class_recall,
            "confusion": None if self.confusion is None else self.confusion.tolist(),
        }


def run_baseline(
    data: Dataset, features: str, complexities: tuple[float, ...] = COMPLEXITIES
) -> BaselineResult:
    """Choose the complexity on devel, retrain on train + devel, score on test once."""
    train, devel, test = (_vectors(data.splits[p]) for p in ("train", "devel", "test"))
    devel_uar = {c: uar(devel[1], _fit(c, *train).predict(devel[0])) for c in complexities}
    chosen = max(complexities, key=lambda c: (devel_uar[c], -c))  # ties: the simpler model
    result = BaselineResult(features, list(data.classes), devel_uar, chosen)
    final = _fit(chosen, np.concatenate([train[0], devel[0]]), np.concatenate([train[1], devel[1]]))
    predicted = final.predict(test[0])
    names = data.splits["test"].names
    result.predictions = [(str(n), data.classes[k]) for n, k in zip(names, predicted, strict=True)]
    if (test[1] >= 0).all():
        from sklearn.metrics import confusion_matrix, recall_score

        labels = list(range(len(data.classes)))
        result.test_uar = uar(test[1], predicted)
        recalls = recall_score(test[1], predicted, labels=labels, average=None, zero_division=0)
        result.per_class_recall = dict(zip(data.classes, map(float, recalls), strict=True))
        result.confusion = confusion_matrix(test[1], predicted, labels=labels)
    return result


def _vectors(split: Split) -> tuple[np.ndarray, np.ndarray]:
    """One vector per utterance: a functionals frontend gives exactly one frame each."""
    if not np.all(split.lengths == 1):
        raise UserError(
            "--features: the baseline takes one feature vector (functionals) per file; "
            f"these have up to {int(split.lengths.max())} rows per file"
        )
    return split.frames, split.labels


def _fit(complexity: float, x: np.ndarray, y: np.ndarray):
    """Standardise on what the SVM learns from, then fit it (scikit-learn's pipeline)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    svm = LinearSVC(C=complexity, random_state=0, max_iter=MAX_ITER)
    with warnings.catch_warnings():  # at the largest complexities liblinear may stop at
        warnings.simplefilter("ignore", ConvergenceWarning)  # MAX_ITER: devel judges it
        return make_pipeline(StandardScaler(), svm).fit(x, y)


def log_run(
    uri: str, experiment: str, data: str, result: BaselineResult, files: dict[str, Path]
) -> str:
    """The baseline as a run of ``experiment``: devel UAR per complexity, test UAR, files."""
    experiment_id = tracking.ensure_experiment(uri, experiment)
    tags = {ROLE_TAG: ROLE, DATA_TAG: data}
    run_id = tracking.start_run(uri, experiment_id, f"baseline-{result.features}", tags)
    metrics = {f"devel_uar/C_{c:g}": u for c, u in result.devel_uar.items()}
    metrics["dev_uar"] = result.devel_best
    if result.test_uar is not None:
        metrics["test_uar"] = result.test_uar
        recalls = result.per_class_recall.items()
        metrics.update({tracking.metric_key("recall", c): r for c, r in recalls})
    params = {"features": result.features, "complexity": result.complexity, "data": data}
    tracking.log_values(uri, run_id, params, metrics)
    for path in files.values():
        tracking.log_artifact(uri, run_id, path)
    tracking.end_run(uri, run_id)
    return run_id


@dataclass
class StoredBaseline:
    features: str
    dev_uar: float
    test_uar: float | None
    run_id: str

    def describe(self) -> str:
        test = "" if self.test_uar is None else f", test UAR {self.test_uar:.4f}"
        return f"baseline ({self.features} + SVM): dev UAR {self.dev_uar:.4f}{test}"


def latest(uri: str, experiment_id: str) -> list[StoredBaseline]:
    """The experiment's newest finished baseline run per feature set, strongest on devel
    first (empty when none was run)."""
    runs = tracking.runs_tagged(uri, experiment_id, ROLE_TAG, ROLE)
    newest: dict[str, StoredBaseline] = {}
    for run in sorted(runs, key=lambda r: r.start_time or 0):
        if run.status == "FINISHED" and "dev_uar" in run.metrics:
            features = run.params.get("features", "?")
            newest[features] = StoredBaseline(
                features, run.metrics["dev_uar"], run.metrics.get("test_uar"), run.run_id
            )
    return sorted(newest.values(), key=lambda b: -b.dev_uar)
