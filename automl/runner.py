"""Run one search end to end: validate, prepare data, start tracking and Ray, drive the loop.

Every check a user can fail (space file, searcher name, output path, tracking URI,
data, fault spec) runs before Ray starts or any child trains, so mistakes cost seconds.

The search keeps its state in ``STORAGE/EXPERIMENT/search_state.pt`` (settled
children, searcher state, MLflow parent run), rewritten atomically after every child.
``resume=True`` continues from it after a crash or a killed driver: finished children
are kept and not trained again, the searcher continues from its saved state, the same
MLflow parent run is reused, and the search ends with exactly ``trials`` children.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from automl import faults, ray_cluster, tracking
from automl.cli import check_writable, write_json
from automl.data.dataset import Dataset
from automl.data.prepare import load_dataset
from automl.errors import UserError
from automl.execution import ChildContext, Resources, run_on_ray
from automl.search import SearchLoop
from automl.searchers import Searcher, make_searcher
from automl.space import SearchSpace, load_space
from automl.train import TrainConfig

STATE_FILE = "search_state.pt"
#: what must match for --resume to continue a search (trials may grow)
RESUME_KEYS = ("data", "space", "searcher", "seed", "epochs", "frontend", "task")


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
    retries: int = 2
    storage: str = "automl-runs"
    resume: bool = False
    json: str | None = None

    @property
    def resources(self) -> Resources:
        return Resources(self.workers, self.cpus_per_trial, self.gpus_per_trial)

    @property
    def folder(self) -> Path:
        return Path(self.storage).resolve() / self.experiment


def run_search(
    config: SearchConfig, on_progress: Callable[[SearchLoop], None] | None = None
) -> dict[str, Any]:
    """Run (or resume) the search; returns the JSON summary (also written to ``config.json``)."""
    space = load_space(config.space)
    searcher = make_searcher(config.searcher, space, config.seed)
    json_path = check_writable(Path(config.json), "--json") if config.json else None
    injected = faults.parse(os.environ.get(faults.ENV))
    saved = _load_state(config) if config.resume else None
    uri = tracking.resolve_uri(config.tracking_uri)
    tracking.check_reachable(uri)
    ray_cluster.check_address(config.address)
    dataset = load_dataset(config.data, config.frontend, config.task)
    if saved and saved["data_fingerprint"] != dataset.fingerprint:
        raise UserError(f"--resume: the data changed since the search in {config.folder} began")
    created = _prepare_folder(config)

    start = time.time() - (saved["wall_seconds"] if saved else 0.0)
    open_parent = partial(_open_parent, config, uri, space, dataset, saved)
    with ThreadPoolExecutor(max_workers=1) as pool, ExitStack() as session:
        # A local Ray: MLflow's first import and schema set-up (seconds) overlap its start.
        # Joining a cluster can still fail (no cluster at "auto"): join first, then open the
        # parent run, so a failed join leaves nothing behind.
        pending = pool.submit(open_parent) if config.address is None else None
        try:
            session.enter_context(ray_cluster.ray_session(config.address))
        except UserError:
            for folder in created:  # empty: nothing was written yet
                folder.rmdir()
            raise
        search_run = pending.result() if pending else open_parent()
        loop = _make_loop(config, space, searcher, dataset, search_run)
        if saved:
            searcher.load_state_dict(saved["searcher"])
            loop.restore(saved["records"])
            loop.adopt(tracking.orphans(search_run, set(loop.by_trial)))

        def save_state() -> None:
            _save_state(config, loop, searcher, search_run, dataset, time.time() - start)

        context = ChildContext(search_run, _train_config(config), injected, faults.marker_dir())
        status = "FAILED"
        try:
            run_on_ray(
                loop,
                dataset,
                config.resources,
                context,
                config.folder / "ray",
                config.retries,
                _on_change(loop, search_run, save_state, on_progress),
            )
            status = "FINISHED"
        finally:
            save_state()
            summary = make_summary(config, loop, search_run, time.time() - start)
            tracking.finish_search(search_run, summary, searcher.state_dict(), status)
            if json_path:
                write_json(json_path, summary)
    return summary


def _prepare_folder(config: SearchConfig) -> list[Path]:
    """Create the search's folder now, so an unusable ``--storage`` fails before any work.
    Returns the folders this created, innermost first."""
    missing = [p for p in (config.folder, *config.folder.parents) if not p.exists()]
    try:
        config.folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"--storage {config.storage}: cannot create {config.folder} ({exc})"
        ) from None
    if not os.access(config.folder, os.W_OK):
        raise UserError(f"--storage {config.storage}: {config.folder} is not writable")
    return missing


def _load_state(config: SearchConfig) -> dict[str, Any]:
    path = config.folder / STATE_FILE
    if not path.is_file():
        raise UserError(f"--resume: no search to resume in {config.folder} (no {STATE_FILE})")
    try:
        saved = torch.load(path, weights_only=True)
    except Exception as exc:  # truncated or foreign file: name it instead of a traceback
        raise UserError(f"--resume: cannot read {path} ({exc})") from None
    changed = [k for k in RESUME_KEYS if saved["config"].get(k) != getattr(config, k)]
    if changed:
        was = {k: saved["config"].get(k) for k in changed}
        raise UserError(f"--resume: options differ from the interrupted search: {was}")
    return saved


def _save_state(
    config: SearchConfig,
    loop: SearchLoop,
    searcher: Searcher,
    search_run: tracking.SearchRun,
    dataset: Dataset,
    wall_seconds: float,
) -> None:
    """Atomic rewrite: a kill at any moment leaves the previous or the new state, never half."""
    path = config.folder / STATE_FILE
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(
        {
            "config": asdict(config),
            "records": loop.export(),
            "searcher": searcher.state_dict(),
            "search_run": asdict(search_run),
            "data_fingerprint": dataset.fingerprint,
            "wall_seconds": wall_seconds,
        },
        tmp,
    )
    os.replace(tmp, path)


def _open_parent(
    config: SearchConfig,
    uri: str,
    space: SearchSpace,
    dataset: Dataset,
    saved: dict[str, Any] | None,
) -> tracking.SearchRun:
    if saved:
        search_run = tracking.SearchRun(**saved["search_run"])
        tracking.reopen(search_run)
        return search_run
    params = {
        **{k: v for k, v in asdict(config).items() if k not in ("json", "storage", "resume")},
        "space_decisions": len(space.decisions),
        "data_fingerprint": dataset.fingerprint,
    }
    return tracking.start_parent(uri, config.experiment, f"search-{config.searcher}", params)


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
    save_state: Callable[[], None],
    on_progress: Callable[[SearchLoop], None] | None,
) -> Callable[[], None]:
    """After every suggestion or result: save the state when a child settled, log a new
    best to the parent run, update the display."""
    best_logged, settled = -1.0, loop.completed

    def on_change() -> None:
        nonlocal best_logged, settled
        if loop.completed != settled:
            settled = loop.completed
            save_state()
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
