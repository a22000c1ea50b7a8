"""Run one search end to end: validate, prepare data, start tracking and Ray, drive the loop.

Every check a user can fail (space file, searcher name, output path, tracking URI,
data) runs before Ray starts or any child trains, so mistakes cost seconds. The JSON
summary and the searcher state are written even when the search stops early.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from automl import tracking
from automl.cli import check_writable, write_json
from automl.data import Dataset, load_dataset
from automl.execution import Resources, ray_session, run_on_ray
from automl.search import SearchLoop
from automl.searchers import Searcher, make_searcher
from automl.space import SearchSpace, load_space
from automl.train import TrainConfig


@dataclass
class SearchConfig:
    data: str
    space: str
    searcher: str = "reinforce"
    trials: int = 20
    epochs: int = 10
    workers: int = 1
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    address: str | None = None
    seed: int = 0
    experiment: str = "automl"
    tracking_uri: str | None = None
    frontend: str = "mfcc"
    task: str | None = None
    failure_reward: float = 0.0
    storage: str | None = None
    json: str | None = None

    @property
    def resources(self) -> Resources:
        return Resources(self.workers, self.cpus_per_trial, self.gpus_per_trial, self.address)


def run_search(
    config: SearchConfig, on_progress: Callable[[SearchLoop], None] | None = None
) -> dict[str, Any]:
    """Run the search; returns the JSON summary (also written to ``config.json``)."""
    space = load_space(config.space)
    searcher = make_searcher(config.searcher, space, config.seed)
    json_path = check_writable(Path(config.json), "--json") if config.json else None
    uri = tracking.resolve_uri(config.tracking_uri)
    tracking.check_reachable(uri)
    dataset = load_dataset(config.data, config.frontend, config.task)

    start = time.time()
    params = {
        **{k: v for k, v in asdict(config).items() if k not in ("json", "storage")},
        "space_decisions": len(space.decisions),
        "data_fingerprint": dataset.fingerprint,
    }
    with ThreadPoolExecutor(max_workers=1) as pool:
        # MLflow's first import and schema set-up take seconds: overlap them with Ray's start.
        pending = pool.submit(
            tracking.start_parent, uri, config.experiment, f"search-{config.searcher}", params
        )
        with ray_session(config.resources):
            search_run = pending.result()
            loop = _make_loop(config, space, searcher, dataset, search_run)
            status = "FAILED"
            try:
                run_on_ray(
                    loop,
                    dataset,
                    config.resources,
                    _train_config(config),
                    search_run,
                    Path(config.storage) if config.storage else None,
                    on_change=_on_change(loop, search_run, on_progress),
                )
                status = "FINISHED"
            finally:
                summary = make_summary(config, loop, search_run, time.time() - start)
                tracking.finish_search(search_run, summary, searcher.state_dict(), status)
                if json_path:
                    write_json(json_path, summary)
    return summary


def _train_config(config: SearchConfig) -> TrainConfig:
    return TrainConfig(
        epochs=config.epochs, seed=config.seed, threads=max(1, int(config.cpus_per_trial))
    )


def _make_loop(
    config: SearchConfig,
    space: SearchSpace,
    searcher: Searcher,
    dataset: Dataset,
    search_run: tracking.SearchRun,
) -> SearchLoop:
    def on_update(metrics: dict[str, float], step: int) -> None:
        tracking.log_search_metrics(search_run, metrics, step)

    identity = (dataset.fingerprint, config.seed, config.epochs)
    return SearchLoop(searcher, space, config.trials, identity, config.failure_reward, on_update)


def _on_change(
    loop: SearchLoop,
    search_run: tracking.SearchRun,
    on_progress: Callable[[SearchLoop], None] | None,
) -> Callable[[], None]:
    """After every suggestion or result: log a new best to the parent run, update the display."""
    best_logged = -1.0

    def on_change() -> None:
        nonlocal best_logged
        best = loop.best()
        if best is not None and best.dev_uar > best_logged:
            best_logged = best.dev_uar
            tracking.log_search_metrics(search_run, {"best_dev_uar": best.dev_uar}, loop.completed)
        if on_progress is not None:
            on_progress(loop)

    return on_change


def make_summary(
    config: SearchConfig, loop: SearchLoop, search_run: tracking.SearchRun, wall_seconds: float
) -> dict[str, Any]:
    best = loop.best()
    return {
        "searcher": config.searcher,
        "space": config.space,
        "data": config.data,
        "seed": config.seed,
        "epochs": config.epochs,
        "trials": [r.to_json() for r in loop.records],
        "best": None
        if best is None
        else {
            "trial": best.trial,
            "architecture": best.architecture,
            "dev_uar": best.dev_uar,
            "mlflow_run_id": best.mlflow_run_id,
        },
        "parent_run_id": search_run.parent_run_id,
        "experiment_id": search_run.experiment_id,
        "tracking_uri": search_run.uri,
        "wall_seconds": wall_seconds,
    }
