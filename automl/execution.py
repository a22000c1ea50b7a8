"""Children on Ray Tune (Ray itself is started or joined by :mod:`automl.ray_cluster`).

The :class:`SearchLoop` becomes a Tune ``Searcher`` (suggest / on_trial_complete), so
trials get Ray's scheduling, resources and fault handling. The prepared dataset goes
into the object store once through ``tune.with_parameters``; workers map it, they do
not re-read or re-compute features. Workers are reused between children
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

from ray import tune
from ray.tune.search import Searcher as TuneSearcher

from automl import faults, tracking
from automl.data.dataset import Dataset
from automl.search import SearchLoop
from automl.train import TrainConfig, train_child

METRIC = "dev_uar"
# Our own progress line and MLflow replace Tune's console tables and per-trial log files.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


@dataclass(frozen=True)
class Resources:
    workers: int = 1  # children trained at once
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0


@dataclass(frozen=True)
class ChildContext:
    """What every child needs besides its architecture; sent to the workers once."""

    search_run: tracking.SearchRun | None
    train_config: TrainConfig
    faults: dict[int, str]
    fault_dir: str


def child_trainable(config: dict[str, Any], dataset: Dataset, context: ChildContext) -> None:
    """Runs in a Ray worker: train one child, its epochs logged to its nested MLflow run.

    A child that raises, hits a NaN loss or runs out of memory is reported as failed
    (with its error) rather than raised, so the search goes on; only a dead worker
    process reaches Tune as an error, and Tune retries it.
    """
    trial, arch = config["trial"], config["architecture"]
    child = None
    if context.search_run:
        tracking.close_abandoned(context.search_run, trial)
        child = tracking.ChildRun(
            context.search_run,
            f"child-{trial:04d}",
            tracking.flatten("", arch),
            {
                "automl.role": "child",
                "automl.trial": str(trial),
                "automl.architecture": json.dumps(arch, sort_keys=True),
            },
        )
        child.log_json(arch, "architecture.json")
    run_id = child.run_id if child else None

    def on_epoch(stats) -> None:
        if child:
            child.log_metrics(
                stats.epoch,
                {
                    "epoch_dev_uar": stats.dev_uar,
                    "train_loss": stats.train_loss,
                    "epoch_seconds": stats.seconds,
                },
            )

    try:
        data = faults.inject(context.faults.get(trial), trial, dataset, context.fault_dir)
        result = train_child(arch, data, context.train_config, on_epoch)
    except Exception as exc:  # the child's own failure: recorded, and the search goes on
        error = f"{type(exc).__name__}: {exc}"[:2000]
        if child:
            child.fail(error)
        tune.report(
            {METRIC: 0.0, "finished": True, "failed": True, "error": error, "mlflow_run_id": run_id}
        )
        return
    final = {
        METRIC: result.dev_uar,
        "n_params": result.n_params,
        "best_epoch": result.best_epoch,
        "train_seconds": result.train_seconds,
        "latency_ms": result.latency_ms,
    }
    artifacts = {"weights.pt": result.state_dict, "architecture.json": result.architecture}
    if child and not child.finish(final, artifacts):
        tune.report(
            {
                METRIC: 0.0,
                "finished": True,
                "failed": True,
                "mlflow_run_id": run_id,
                "error": "abandoned: its search was resumed elsewhere",
            }
        )
        return
    tune.report({**final, "epoch": result.epochs, "mlflow_run_id": run_id, "finished": True})


class LoopSearcher(TuneSearcher):
    """Adapts a :class:`SearchLoop` to Tune's searcher interface."""

    def __init__(
        self,
        loop: SearchLoop,
        search_run: tracking.SearchRun | None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(metric=METRIC, mode="max")
        self.loop, self.search_run, self.on_change = loop, search_run, on_change
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
        run_id = result.get("mlflow_run_id")
        if error or not result.get("finished"):
            if self.search_run:  # the dead worker could not close its run
                tracking.close_abandoned(self.search_run, trial)
            self.loop.child_failed(
                trial, "the worker process died (retries exhausted)", seconds, run_id
            )
        elif result.get("failed"):
            self.loop.child_failed(trial, result["error"], seconds, run_id)
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
    context: ChildContext,
    storage: Path,
    retries: int = 2,
    on_change: Callable[[], None] | None = None,
) -> None:
    """Train the loop's children on Ray until its budget is spent (inside
    :func:`automl.ray_cluster.ray_session`).

    A child whose worker dies is started again up to ``retries`` times."""
    trainable = tune.with_resources(
        tune.with_parameters(child_trainable, dataset=dataset, context=context),
        {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=LoopSearcher(loop, context.search_run, on_change),
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
