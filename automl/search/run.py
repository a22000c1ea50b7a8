"""Run one search end to end: validate, prepare data, start tracking and Ray, drive the loop.

Every check a user can fail (space file, searcher and its options, output path, tracking
URI, data, fault spec, a saved state that does not fit) runs before Ray starts or any
child trains, so mistakes cost seconds.

The search keeps its state (:class:`~automl.search.state.SearchState`) in
``STORAGE/EXPERIMENT/search_state.pt``, rewritten after every child. ``resume=True``
continues from it after a crash or a killed driver: finished children are kept and not
trained again, the searcher continues from its saved state, the same MLflow parent run is
reused, and the search ends with exactly ``trials`` children. The job's life (checks, Ray,
the parent run, interrupts) is :mod:`runtime.job`'s, as ``rl train``'s is.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

from automl.child.arch import FRONTEND_KEY, HPARAM_DEFAULTS
from automl.child.trainer import TrainConfig
from automl.data.dataset import Dataset, Features
from automl.data.prepare import load_dataset
from automl.search import mlflow_view
from automl.search.config import SearchConfig
from automl.search.ledger import DONE, Confirmation, SearchLoop, TrialRecord
from automl.search.objective import Objective, pareto_front
from automl.search.placement import ChildResources, space_fields
from automl.search.ray_tune import (
    DEVICE_TAG,
    METRIC,
    EarlyStop,
    RayOptions,
    child_run_name,
    finished_records,
    run_on_ray,
)
from automl.search.searchers import Searcher, searcher_class
from automl.search.space import SearchSpace, load_space
from automl.search.state import STATE_FILE, SearchState
from automl.search.warm_start import DATA_PARAM, SPACE_PARAM, earlier_children, space_fingerprint
from automl.ship import bundle
from runtime import mlflow_ui, tracking
from runtime.cli import build_config, parse_overrides
from runtime.errors import UserError
from runtime.faults import FaultPlan
from runtime.files import check_writable, held_alone, write_json
from runtime.job import Job, JobPlan, preflight, run_job
from runtime.tags import (
    BEST_CHILD_TAG,
    CODE_VERSION_TAG,
    DATA_FINGERPRINT_TAG,
    DATA_TAG,
    ENDED_TAG,
    FRONTEND_TAG,
    NOTE_TAG,
    SEED_TAG,
)
from runtime.trial import GPUS_TAG, TrialContext

#: what must match for --resume to continue a search (trials may grow); the searcher's
#: own state checks its kind, its options and the space
RESUME_KEYS = ("data", "seed", "epochs", "frontend", "task", "objective", "target")
GRACE_SHARE, GRACE_MIN = 0.1, 10.0  # children running at the deadline: 10% more, >= 10 s


def run_search(
    config: SearchConfig, on_progress: Callable[[SearchLoop], None] | None = None
) -> dict[str, Any]:
    """Run (or resume) the search; returns the JSON summary (also written to ``config.json``)."""
    space = _load_space(config)
    searcher = _make_searcher(config, space)
    objective = _objective(config)
    early_stop = _early_stop(config, space)
    json_path = check_writable(Path(config.json), "--json") if config.json else None
    faults = FaultPlan.from_env(config.folder)
    saved, earlier = _saved_states(config, searcher)
    if not saved:  # a resumed searcher's state holds what it still has to propose
        searcher.enqueue(*space.start_with)
    resources = config.child_resources()
    resources.check_fields(space_fields(space))
    plan = _job_plan(config, resources.requests())
    preflight(plan)
    dataset = config.load()
    features = _features(config, space, dataset)
    widest = max(d.n_features for d in features.by_frontend.values())
    resources = replace(resources, n_features=widest, n_classes=dataset.n_classes)
    if saved and saved.data_fingerprint != dataset.fingerprint:
        raise UserError(f"--resume: the data changed since the search in {config.folder} began")
    warm = 0 if saved else _warm_start(config, plan.tracking_uri, searcher, objective, dataset)
    created = _prepare_folder(config)
    with held_alone(config.folder, _busy(config)):
        if earlier is not None:
            earlier.set_aside(config.folder / STATE_FILE)

        start = time.time() - (saved.wall_seconds if saved else 0.0)
        loop = _make_loop(config, space, searcher, objective=objective, dataset=dataset,
                          start=start, saved=saved)  # fmt: skip
        outcome: dict[str, Any] = {"models": {}, "gpu_unused": [], "warm_started": warm}

        def close(job: Job) -> tuple[dict[str, Any], dict[str, str]]:
            finished, loop.interrupted = job.status == "FINISHED", job.status == "KILLED"
            unsaved = None
            try:
                _save_state(config, loop, job.parent, dataset, time.time() - start, finished)
            except OSError as exc:  # a full disk: the summary may still fit (elsewhere)
                unsaved = exc
            summary = make_summary(config, loop, job.parent, time.time() - start, **outcome)
            if json_path:
                write_json(json_path, summary)
            if unsaved is not None:
                raise unsaved
            outcome["summary"] = summary
            files = {"summary.json": summary, "searcher_state.pt": searcher.state_dict()}
            return files, {ENDED_TAG: loop.ended}

        open_parent = partial(
            _open_parent, config, plan.tracking_uri, space, searcher, dataset, saved
        )
        with run_job(plan, open_parent, close, partial(_remove, created)) as job:
            parent = job.parent
            outcome["ui_page"] = mlflow_view.publish(parent)
            tracking.set_tag(parent.uri, parent.parent_run_id, NOTE_TAG, _note(parent, loop))
            loop.on_update = lambda metrics, step: tracking.log_parent_metrics(
                parent, metrics, step
            )
            if saved:
                orphans = finished_records(parent)  # finished after the driver died
                loop.adopt([r for t, r in orphans.items() if t not in loop.by_trial])
            if on_progress is not None:
                on_progress(loop)  # the search has started: show it before Tune's first child

            def save_state() -> None:
                _save_state(config, loop, parent, dataset, time.time() - start)

            save_state()  # resumable from here, even if no child's result is ever saved
            on_change = _on_change(loop, parent, save_state, on_progress)
            context = _trial_context(config, faults, dataset, parent)
            options = _ray_options(config, resources, early_stop, context, on_change, loop.deadline)
            run_on_ray(loop, features, options)
            outcome["models"] = _log_models(config, loop, features, parent)
            outcome["gpu_unused"] = _gpu_unused(parent) if resources.asks_gpus else []
            job.finished()
    return outcome["summary"]


def _busy(config: SearchConfig) -> str:
    """What a second search of one folder at once hears (two would train the same trials
    and overwrite each other's state)."""
    return (
        f"another automl search is running in {config.folder} (experiment "
        f"{config.experiment}); wait for it to end, or give another --experiment or --storage"
    )


def _features(config: SearchConfig, space: SearchSpace, dataset: Dataset) -> Features:
    """The corpus under ``--frontend`` and under every frontend the space names (fixed or a
    decision), each extracted (or read from the cache) before any child starts."""
    named = [d.choices for d in space.decisions if d.name == FRONTEND_KEY]
    names = {*(n for choices in named for n in choices), *_fixed_frontend(space)}
    by_frontend = {config.frontend: dataset}
    for name in sorted(names - {config.frontend}):
        by_frontend[name] = load_dataset(config.data, name, config.task,
                                         max_seconds=config.max_seconds)  # fmt: skip
    return Features(config.frontend, by_frontend)


def _fixed_frontend(space: SearchSpace) -> list[str]:
    return [space.fixed[FRONTEND_KEY]] if FRONTEND_KEY in space.fixed else []


def _job_plan(config: SearchConfig, requests: list[tuple[str, dict[str, float]]]) -> JobPlan:
    uri = tracking.resolve_uri(config.tracking_uri)
    return JobPlan(tracking_uri=uri, experiment=config.experiment, address=config.address,
                   requests=requests, max_wait=config.max_wait,
                   join_timeout=config.join_timeout)  # fmt: skip


def _saved_states(
    config: SearchConfig, searcher: Searcher
) -> tuple[SearchState | None, SearchState | None]:
    """The state to resume (``--resume``), or an earlier search's to set aside."""
    if config.resume and config.restart:
        raise UserError("--resume and --restart: choose one")
    if config.resume:
        return _load_state(config, searcher), None
    return None, _earlier_search(config)


def _warm_start(
    config: SearchConfig, uri: str, searcher: Searcher, objective: Objective, dataset: Dataset
) -> int:
    """Tell the searcher the finished children of ``--warm-start``'s searches; how many."""
    if config.warm_start is None:
        return 0
    children = earlier_children(
        uri, config.warm_start, searcher.space, dataset.fingerprint, objective
    )
    searcher.warm_start(children)
    return len(children)


def _make_loop(
    config: SearchConfig,
    space: SearchSpace,
    searcher: Searcher,
    *,
    objective: Objective,
    dataset: Dataset,
    start: float,
    saved: SearchState | None,
) -> SearchLoop:
    loop = SearchLoop(
        searcher,
        space,
        config.trials,
        (dataset.fingerprint, config.seed),
        None,  # the parent run's metrics, once it is open
        config.max_duplicates,
        start + config.time_budget if config.time_budget else None,
        objective,
        confirmation=Confirmation(config.leaders_confirmed, config.workers),
    )
    if saved:
        loop.restore(saved.records)
    return loop


def _trial_context(
    config: SearchConfig, faults: FaultPlan, dataset: Dataset, parent: tracking.ParentRun
) -> TrialContext:
    """What every child's trial wrapper gets: the parent, faults, provenance, the corpus."""
    tags, data_input = _provenance(config, dataset)
    tracking.log_dataset(parent.uri, parent.parent_run_id, data_input)
    return TrialContext(parent, faults, {METRIC: 0.0}, tags, data_input)


def _ray_options(
    config: SearchConfig,
    resources: ChildResources,
    early_stop: EarlyStop,
    context: TrialContext,
    on_change: Callable[[], None],
    deadline: float | None,
) -> RayOptions:
    return RayOptions(
        workers=config.workers,
        resources=resources,
        context=context,
        train_config=TrainConfig(seed=config.seed, threads=max(1, int(config.cpus_per_trial))),
        storage=config.folder / "ray",
        retries=config.retries,
        on_change=on_change,
        early_stop=early_stop,
        stop_at=_stop_at(config, deadline),
        max_wait=config.max_wait,
    )


def _remove(folders: list[Path]) -> None:
    """The folders a search created, when Ray could not be started or joined (still empty)."""
    for folder in folders:
        folder.rmdir()


def _gpu_unused(parent: tracking.ParentRun) -> list[int]:
    """Children that were given a GPU and trained on the CPU: torch on their node sees no
    CUDA device (a CPU build on a GPU node), so they ran slowly on GPUs paid for."""
    return [
        int(run.data.tags[tracking.TRIAL_TAG])
        for run in tracking.finished_children(parent)
        if GPUS_TAG in run.data.tags and run.data.tags.get(DEVICE_TAG) == "cpu"
    ]


def _load_space(config: SearchConfig) -> SearchSpace:
    """The space, with ``--epochs`` fixed in it, so every child's recorded hyperparameters
    are the ones it trained with."""
    space = load_space(config.space)
    if config.epochs is None:
        return space
    if any(d.name == "epochs" for d in space.decisions):
        raise UserError(f"--epochs: the space {config.space} searches over epochs itself")
    return space.with_fixed(epochs=config.epochs)


def _objective(config: SearchConfig) -> Objective:
    try:
        return Objective(config.objective, config.target)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _early_stop(config: SearchConfig, space: SearchSpace) -> EarlyStop:
    """The rule, with the epochs the longest child trains (its rungs' end)."""
    epochs = [d.choices for d in space.decisions if d.name == "epochs"]
    longest = max(epochs[0]) if epochs else space.fixed.get("epochs", HPARAM_DEFAULTS["epochs"])
    grace = config.grace_epochs or max(1, longest // 4)
    if config.early_stop != "none" and grace >= longest:
        raise UserError(
            f"--grace-epochs {grace}: must be below the epochs children train ({longest}), "
            "or nothing can be stopped early"
        )
    return EarlyStop(config.early_stop, longest, grace)


def _stop_at(config: SearchConfig, deadline: float | None) -> float | None:
    """When children still running after the deadline stop: the deadline plus its grace."""
    if deadline is None:
        return None
    return deadline + max(GRACE_MIN, GRACE_SHARE * config.time_budget)


def _make_searcher(config: SearchConfig, space: SearchSpace) -> Searcher:
    if not space.decisions:  # one child: nothing to search, and no policy to learn
        raise UserError(
            f"--space {config.space}: it decides nothing (every value is fixed), so it holds "
            "one child: train it with automl train --arch, or give a field a list of choices"
        )
    cls = searcher_class(config.searcher)
    options = parse_overrides(cls.Config, config.searcher_opt, "--searcher-opt")
    return cls(space, config.seed, build_config(cls.Config, options, "--searcher-opt"))


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


def _load_state(config: SearchConfig, searcher: Searcher) -> SearchState:
    """The saved search, checked against this one: options, then the searcher's own state
    (its kind, its options, the space), which is loaded into ``searcher``."""
    path = config.folder / STATE_FILE
    if not path.is_file():
        raise UserError(f"--resume: no search to resume in {config.folder} (no {STATE_FILE})")
    saved = SearchState.load(path, before="--resume: ", after="; move it away to start anew")
    uri, was = tracking.resolve_uri(config.tracking_uri), saved.parent.uri
    if uri != was:  # the search's runs are in its own store: resuming elsewhere splits them
        raise UserError(
            f"--resume: the search in {config.folder} tracks to {was}, not {uri}: resume it "
            f"with --tracking-uri {was}"
        )
    if not tracking.has_run(uri, saved.parent.parent_run_id):
        raise UserError(
            f"--resume: the search's MLflow run {saved.parent.parent_run_id} is not in {uri} "
            "(the store was deleted or replaced); start anew with --restart"
        )
    changed = [k for k in RESUME_KEYS if saved.config.get(k) != getattr(config, k)]
    if changed:
        was = {k: saved.config.get(k) for k in changed}
        raise UserError(f"--resume: options differ from the interrupted search: {was}")
    try:
        searcher.load_state_dict(saved.searcher)
    except UserError as exc:
        raise UserError(f"--resume: {exc}") from None
    return saved


def _earlier_search(config: SearchConfig) -> SearchState | None:
    """The state an earlier search of this experiment left, if any. One that did not
    finish is continued with --resume or set aside with --restart, never overwritten."""
    path = config.folder / STATE_FILE
    if not path.is_file():
        return None
    saved = SearchState.load(path, after="; move it away to start a new search")
    if not saved.finished and not config.restart:
        raise UserError(
            f"--experiment {config.experiment} holds an interrupted search ({saved.trained} of "
            f"{saved.config['trials']} children, in {config.folder}): continue it with "
            "--resume, or start over with --restart"
        )
    return saved


def _save_state(
    config: SearchConfig,
    loop: SearchLoop,
    parent: tracking.ParentRun,
    dataset: Dataset,
    wall_seconds: float,
    finished: bool = False,
) -> None:
    state = SearchState(
        config=asdict(config), records=loop.export(), searcher=loop.searcher.state_dict(),
        search_run=asdict(parent), data_fingerprint=dataset.fingerprint,
        wall_seconds=wall_seconds, finished=finished,
    )  # fmt: skip
    state.save(config.folder / STATE_FILE)


def _open_parent(
    config: SearchConfig,
    uri: str,
    space: SearchSpace,
    searcher: Searcher,
    dataset: Dataset,
    saved: SearchState | None,
) -> tracking.ParentRun:
    if saved:
        parent = saved.parent
        tracking.reopen(parent)
        return parent
    skip = ("json", "storage", "resume", "restart", "searcher_opt")
    params = {
        **{k: v for k, v in asdict(config).items() if k not in skip},
        **{f"searcher.{k}": v for k, v in asdict(searcher.config).items()},
        "space_decisions": len(space.decisions),
        SPACE_PARAM: space_fingerprint(space),
        DATA_PARAM: dataset.fingerprint,
    }
    return tracking.start_parent(
        uri, config.experiment, f"search-{config.searcher}", params, role="search"
    )


def _provenance(
    config: SearchConfig, dataset: Dataset
) -> tuple[dict[str, str], tracking.DatasetInfo]:
    """What every child run records of where it came from (tags), and the corpus as the
    run's MLflow dataset input: enough to retrain it or to tell two children's data apart."""
    tags = {
        DATA_TAG: config.data,
        FRONTEND_TAG: config.frontend,
        DATA_FINGERPRINT_TAG: dataset.fingerprint,
        SEED_TAG: str(config.seed),
        CODE_VERSION_TAG: tracking.code_version(),
    }
    profile = {k: v for k, v in dataset.summary().items() if k != "fingerprint"}
    profile["frontend"] = config.frontend
    info = tracking.DatasetInfo(dataset.name, dataset.fingerprint, config.data, json.dumps(profile))
    return tags, info


def _on_change(
    loop: SearchLoop,
    parent: tracking.ParentRun,
    save_state: Callable[[], None],
    on_progress: Callable[[SearchLoop], None] | None,
) -> Callable[[], None]:
    """After every suggestion or result: save the state when a child settled, put a
    leader's mean over its seeds on its run once a confirmation settled, log a new best to
    the parent run, update the display."""
    best_logged: tuple[int, float] | None = None
    settled, confirmed = loop.settled, set()

    def on_change() -> None:
        nonlocal best_logged, settled
        if loop.settled != settled:
            settled = loop.settled
            save_state()
        for leader in _newly_confirmed(loop, confirmed):
            metrics = {"dev_uar_mean": loop.mean_dev_uar(leader),
                       "seeds": len(loop.seeds_of(leader))}  # fmt: skip
            tracking.log_run_metrics(parent.uri, leader.mlflow_run_id, metrics)
        best = loop.best()
        if best is not None and (best.trial, loop.mean_reward(best)) != best_logged:
            best_logged = (best.trial, loop.mean_reward(best))
            metrics = {"best_reward": best_logged[1], "best_dev_uar": loop.mean_dev_uar(best)}
            links = {NOTE_TAG: _note(parent, loop)}
            if best.mlflow_run_id:
                links[BEST_CHILD_TAG] = best.mlflow_run_id
            tracking.log_parent_metrics(parent, metrics, loop.completed, links)
        if on_progress is not None:
            on_progress(loop)

    return on_change


def _newly_confirmed(loop: SearchLoop, logged: set[int]) -> list[TrialRecord]:
    """Leaders whose confirmation finished since the last call (marked in ``logged``)."""
    fresh = [r for r in loop.confirmations if r.trial not in logged and r.status == DONE]
    logged.update(r.trial for r in fresh)
    leaders = {r.confirms: loop.by_trial[r.confirms] for r in fresh}
    return [leader for leader in leaders.values() if leader.mlflow_run_id]


def _note(parent: tracking.ParentRun, loop: SearchLoop) -> str:
    """The parent run's description: its children's view, and its best child so far."""
    best = loop.best()
    if best is None or not best.mlflow_run_id:
        return mlflow_view.parent_note(parent, None)
    named = (best.mlflow_run_id, child_run_name(best.trial), loop.mean_dev_uar(best))
    return mlflow_view.parent_note(parent, named, len(loop.seeds_of(best)))


def _log_models(
    config: SearchConfig, loop: SearchLoop, features: Features, parent: tracking.ParentRun
) -> dict[int, str]:
    """The best ``--log-models`` finished children as MLflow models: trial -> model URI,
    best first. A resumed search keeps the models it logged before."""
    done = [r for r in loop.searched if r.status == DONE and r.mlflow_run_id]
    done.sort(key=loop.mean_reward, reverse=True)
    chosen = done if config.log_models is None else done[: config.log_models]
    if not chosen:
        return {}
    models = {}
    for record in chosen:
        dataset = features.of(record.architecture)
        meta = bundle.ModelMeta(
            record.architecture, dataset.classes, dataset.norm_mean.tolist(),
            dataset.norm_std.tolist(), features.frontend_of(record.architecture),
            config.max_seconds, config.data,
        )  # fmt: skip
        example = bundle.denormalised(dataset.splits["devel"].sequence(0), meta)
        models[record.trial] = bundle.log_child_model(
            parent.uri, record.mlflow_run_id, meta, example
        )
    return models


def _confirmed(loop: SearchLoop) -> list[dict[str, Any]]:
    """The leaders trained on a second seed: their first seed's figure and their means."""
    return [
        {"trial": leader.trial, "dev_uar": leader.dev_uar,
         "dev_uar_mean": loop.mean_dev_uar(leader), "reward_mean": loop.mean_reward(leader),
         "seeds": len(loop.seeds_of(leader))}
        for leader in loop.searched
        if leader.trial in loop.retrained
    ]  # fmt: skip


def make_summary(
    config: SearchConfig,
    loop: SearchLoop,
    parent: tracking.ParentRun,
    wall_seconds: float,
    models: dict[int, str] | None = None,
    gpu_unused: list[int] | None = None,
    warm_started: int = 0,
    ui_page: str | None = None,
) -> dict[str, Any]:
    """The search as JSON; ``gpu_unused``: children Ray gave a GPU that trained on the CPU;
    ``ui_page``: its children's view in MLflow's UI."""
    best = loop.best()
    finished = [r.to_json() for r in loop.searched if r.status == DONE]
    return {
        "searcher": config.searcher,
        "ended": loop.ended,
        "time_budget": config.time_budget,
        "objective": config.objective,
        "target": config.target,
        "searcher_options": asdict(loop.searcher.config),
        "space": config.space,
        "data": config.data,
        "seed": config.seed,
        "epochs": config.epochs,
        "warm_start": config.warm_start,
        "warm_started": warm_started,
        "trained": loop.trained,
        "cached": loop.cached,
        "converged": loop.converged,
        "trials": [r.to_json() for r in loop.records],
        "best": None
        if best is None
        else {
            "trial": best.trial,
            "architecture": best.architecture,
            "dev_uar": best.dev_uar,
            "reward": best.reward,
            "mlflow_run_id": best.mlflow_run_id,
            "dev_uar_mean": loop.mean_dev_uar(best),  # over its seeds (one, unless confirmed)
            "reward_mean": loop.mean_reward(best),
            "seeds": len(loop.seeds_of(best)),
        },
        "confirmed": _confirmed(loop),
        "pareto": {
            cost: [
                {k: r[k] for k in ("trial", "dev_uar", cost, "mlflow_run_id")}
                for r in pareto_front(finished, cost)
            ]
            for cost in ("n_params", "latency_ms")
        },
        "models": {str(trial): uri for trial, uri in (models or {}).items()},
        "gpu_unused": sorted(gpu_unused or []),
        "parent_run_id": parent.parent_run_id,
        "experiment_id": parent.experiment_id,
        "tracking_uri": parent.uri,
        "mlflow_ui": mlflow_ui.link(parent.uri, ui_page) if ui_page else None,
        "wall_seconds": wall_seconds,
    }
