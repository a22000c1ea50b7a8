"""Children on Ray Tune, and the only module of ``automl`` that knows Ray Tune.

The :class:`SearchLoop` becomes a Tune ``Searcher`` (suggest / on_trial_complete), so
trials get Ray's scheduling, resources and fault handling. Each child runs inside
:func:`runtime.trial.run_trial` (its MLflow run, its failure handling). The prepared
dataset goes into the object store once through ``tune.with_parameters``; workers map
it, they do not re-read or re-compute features. Workers are reused between children
(``reuse_actors``), which removes most of the per-trial process start-up.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune
from ray.tune.search import Searcher as TuneSearcher

from automl.data.dataset import Dataset, Split
from automl.search import SearchLoop
from automl.train import TrainConfig, train_child
from runtime import tracking
from runtime.trial import ERROR, FAILED, FINISHED, RUN_ID, Outcome, Trial, TrialContext, run_trial

METRIC = "dev_uar"
# Our own progress line and MLflow replace Tune's console tables and per-trial log files.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


@dataclass(frozen=True)
class Resources:
    workers: int = 1  # children trained at once
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0


def child_trainable(
    config: dict[str, Any], dataset: Dataset, context: TrialContext, train_config: TrainConfig
) -> None:
    """Runs in a Ray worker: train one child, its epochs logged to its nested MLflow run."""
    trial, arch = config["trial"], config["architecture"]

    def work(handle: Trial) -> Outcome:
        data = _poisoned(dataset) if handle.fault == "nan" else dataset
        result = train_child(
            arch,
            data,
            train_config,
            lambda s: handle.log(
                s.epoch,
                {
                    "epoch_dev_uar": s.dev_uar,
                    "train_loss": s.train_loss,
                    "epoch_seconds": s.seconds,
                },
            ),
        )
        metrics = {
            METRIC: result.dev_uar,
            "n_params": result.n_params,
            "best_epoch": result.best_epoch,
            "train_seconds": result.train_seconds,
            "latency_ms": result.latency_ms,
        }
        artifacts = {"weights.pt": result.state_dict, "architecture.json": result.architecture}
        return Outcome(metrics, artifacts, {"epoch": result.epochs})

    run_trial(
        context,
        trial,
        f"child-{trial:04d}",
        tracking.flatten("", arch),
        {"automl.role": "child", "automl.architecture": json.dumps(arch, sort_keys=True)},
        work,
    )


def _poisoned(data: Dataset) -> Dataset:
    """The ``nan`` fault: NaN training features, so the child's loss becomes NaN."""
    train = data.splits["train"]
    nan = Split(np.full_like(train.frames, np.nan), train.offsets, train.labels, train.names)
    return Dataset(data.name, data.classes, {**data.splits, "train": nan}, data.fingerprint)


class LoopSearcher(TuneSearcher):
    """Adapts a :class:`SearchLoop` to Tune's searcher interface."""

    def __init__(
        self,
        loop: SearchLoop,
        parent: tracking.ParentRun | None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(metric=METRIC, mode="max")
        self.loop, self.parent, self.on_change = loop, parent, on_change
        self.trials: dict[str, int] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        record = self.loop.next_child()
        self._changed()
        if record is None:
            return TuneSearcher.FINISHED
        self.trials[trial_id] = record.trial
        return {"trial": record.trial, "architecture": record.architecture}

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        trial = self.trials.pop(trial_id)
        record = self.loop.by_trial[trial]
        seconds = time.time() - record.started
        result = result or {}
        run_id = result.get(RUN_ID)
        if error or not result.get(FINISHED):
            if self.parent:  # the dead worker could not close its run
                tracking.close_abandoned(self.parent, trial)
            self.loop.child_failed(
                trial, "the worker process died (retries exhausted)", seconds, run_id
            )
        elif result.get(FAILED):
            self.loop.child_failed(trial, result[ERROR], seconds, run_id)
        else:
            self.loop.child_finished(
                trial, float(result[METRIC]), seconds, run_id, int(result["n_params"])
            )
        self._changed()

    def save(self, checkpoint_path: str) -> None:
        """Nothing to add to Tune's checkpoint: the search saves its own state file
        (``automl.runner``), which is what ``--resume`` reads."""

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its searcher for its own restore; the live loop stays in this process
        (a search resumes from its own records, not from Tune's)."""
        return {**self.__dict__, "loop": None, "on_change": None}

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


def run_on_ray(
    loop: SearchLoop,
    dataset: Dataset,
    resources: Resources,
    context: TrialContext,
    train_config: TrainConfig,
    storage: Path,
    retries: int = 2,
    on_change: Callable[[], None] | None = None,
) -> None:
    """Train the loop's children on Ray until its budget is spent (inside
    :func:`runtime.ray_cluster.ray_session`).

    A child whose worker dies is started again up to ``retries`` times."""
    trainable = tune.with_resources(
        tune.with_parameters(
            child_trainable, dataset=dataset, context=context, train_config=train_config
        ),
        {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=LoopSearcher(loop, context.parent, on_change),
            num_samples=loop.budget,
            max_concurrent_trials=resources.workers,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"search-{int(time.time())}",
            verbose=0,
            storage_path=str(storage.resolve()),
            failure_config=tune.FailureConfig(max_failures=retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    tuner.fit()
