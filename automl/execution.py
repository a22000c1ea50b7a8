"""Children on Ray Tune, and the only module that knows Ray.

The :class:`SearchLoop` becomes a Tune ``Searcher`` (suggest / on_trial_complete), so
trials get Ray's scheduling, resources and fault handling. The prepared dataset goes
into the object store once through ``tune.with_parameters``; workers map it, they do
not re-read or re-compute features. Workers are reused between children
(``reuse_actors``), which removes most of the per-trial process start-up.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.search import Searcher as TuneSearcher

from automl import tracking
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
    address: str | None = None  # an existing Ray cluster; None starts a local one


@contextmanager
def ray_session(resources: Resources) -> Iterator[None]:
    """Join ``address`` or start a local Ray (dashboard off); stop it after if we started it."""
    if ray.is_initialized():
        yield
        return
    ray.init(
        address=resources.address,
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()


def child_trainable(
    config: dict[str, Any],
    dataset: Dataset,
    search_run: tracking.SearchRun | None,
    train_config: TrainConfig,
) -> None:
    """Runs in a Ray worker: train one child, its epochs logged to its nested MLflow run."""
    trial, arch = config["trial"], config["architecture"]
    child = None
    if search_run:
        child = tracking.ChildRun(
            search_run,
            f"child-{trial:04d}",
            tracking.flatten("", arch),
            {"automl.role": "child", "automl.trial": str(trial)},
        )
        child.log_json(arch, "architecture.json")

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
        result = train_child(arch, dataset, train_config, on_epoch)
    except Exception as exc:
        if child:
            child.fail(f"{type(exc).__name__}: {exc}")
        raise
    final = {
        METRIC: result.dev_uar,
        "n_params": result.n_params,
        "best_epoch": result.best_epoch,
        "train_seconds": result.train_seconds,
        "latency_ms": result.latency_ms,
    }
    if child:
        child.finish(
            final, {"weights.pt": result.state_dict, "architecture.json": result.architecture}
        )
    tune.report(
        {
            **final,
            "epoch": result.epochs,
            "mlflow_run_id": child.run_id if child else None,
            "finished": True,
        }
    )


class LoopSearcher(TuneSearcher):
    """Adapts a :class:`SearchLoop` to Tune's searcher interface."""

    def __init__(self, loop: SearchLoop, on_change: Callable[[], None] | None = None) -> None:
        super().__init__(metric=METRIC, mode="max")
        self.loop, self.on_change = loop, on_change
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
        record = self.loop.records[trial]
        seconds = time.time() - record.started
        run_id = (result or {}).get("mlflow_run_id")
        if error or not result or not result.get("finished"):
            self.loop.child_failed(
                trial, "child raised an error (see its MLflow run)", seconds, run_id
            )
        else:
            self.loop.child_finished(
                trial, float(result[METRIC]), seconds, run_id, int(result["n_params"])
            )
        self._changed()

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
    train_config: TrainConfig,
    search_run: tracking.SearchRun | None,
    storage: Path | None = None,
    on_change: Callable[[], None] | None = None,
) -> None:
    """Train the loop's children on Ray (inside :func:`ray_session`) until its budget is spent."""
    trainable = tune.with_resources(
        tune.with_parameters(
            child_trainable, dataset=dataset, search_run=search_run, train_config=train_config
        ),
        {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=LoopSearcher(loop, on_change),
            num_samples=loop.budget,
            max_concurrent_trials=resources.workers,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"search-{int(time.time())}",
            verbose=0,
            storage_path=str((storage or Path(tempfile.gettempdir()) / "automl-ray").resolve()),
            failure_config=tune.FailureConfig(max_failures=0),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    tuner.fit()
