"""Many seeds of one agent at once: each seed a Ray Tune trial and a nested MLflow run."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from automl import ray_cluster, tracking
from rl import dqn, qlearning


@dataclass(frozen=True)
class Algorithm:
    config: type
    train: Callable[..., Any]
    check_env: Callable[[Any], None]


ALGOS = {
    "dqn": Algorithm(dqn.DQNConfig, dqn.train, dqn.check_env),
    "qlearning": Algorithm(qlearning.QLearningConfig, qlearning.train, qlearning.check_env),
}
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


def seed_trainable(
    config: dict[str, Any],
    algo: str,
    base: dict[str, Any],
    parent: tracking.SearchRun | None,
    checkpoint_root: str | None,
    resume: bool,
) -> None:
    """Runs in a Ray worker: one seed, its metrics streamed to its own MLflow run."""
    from ray import tune

    run_config = ALGOS[algo].config(**{**base, "seed": config["seed"]})
    run = None
    if parent:
        run = tracking.ChildRun(
            parent,
            f"seed-{run_config.seed}",
            dataclasses.asdict(run_config),
            {"automl.role": "rl-seed"},
        )
    folder = Path(checkpoint_root) / f"seed-{run_config.seed}" if checkpoint_root else None
    try:
        result = ALGOS[algo].train(
            run_config,
            folder,
            resume,
            on_metrics=(lambda m, step: run.log_metrics(step, m)) if run else None,
        )
    except Exception as exc:
        if run:
            run.fail(f"{type(exc).__name__}: {exc}")
        raise
    metrics = {
        k: v
        for k, v in dataclasses.asdict(result).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    if run:
        run.finish(metrics)
    tune.report(
        {
            **dataclasses.asdict(result),
            "seed": run_config.seed,
            "mlflow_run_id": run.run_id if run else None,
            "checkpoint_dir": str(folder) if folder else None,
        }
    )


def run_seeds(
    algo: str,
    base: dict[str, Any],
    seeds: list[int],
    workers: int,
    experiment: str,
    tracking_uri: str | None,
    checkpoint_root: Path | None,
    resume: bool = False,
    cpus_per_trial: float = 1.0,
    address: str | None = None,
) -> dict[str, Any]:
    """Train every seed (``workers`` at once); returns the JSON summary."""
    from ray import tune

    ALGOS[algo].check_env(
        ALGOS[algo].config(**base)
    )  # a wrong environment is the user's error, not a worker's
    uri = tracking.resolve_uri(tracking_uri)
    tracking.check_reachable(uri)
    ray_cluster.check_address(address)
    start = time.time()
    root = str(checkpoint_root.resolve()) if checkpoint_root else None
    with ray_cluster.ray_session(address):
        parent = tracking.start_parent(
            uri,
            experiment,
            f"rl-{algo}-{base['env_id']}",
            {**base, "algo": algo, "seeds": seeds, "workers": workers},
        )
        status = "FAILED"
        rows: list[dict[str, Any]] = []
        try:
            trainable = tune.with_resources(
                tune.with_parameters(
                    seed_trainable,
                    algo=algo,
                    base=base,
                    parent=parent,
                    checkpoint_root=root,
                    resume=resume,
                ),
                {"cpu": cpus_per_trial},
            )
            grid = tune.Tuner(
                trainable,
                param_space={"seed": tune.grid_search(seeds)},
                tune_config=tune.TuneConfig(max_concurrent_trials=workers, reuse_actors=True),
                run_config=tune.RunConfig(
                    name=f"rl-{int(time.time())}",
                    verbose=0,
                    storage_path=str(Path(tempfile.gettempdir()) / "automl-ray"),
                ),
            ).fit()
            rows = [_row(result) for result in grid]
            status = "FINISHED" if all(r["status"] == "done" for r in rows) else "FAILED"
        finally:
            summary = {
                "algo": algo,
                "env": base["env_id"],
                "config": base,
                "seeds": sorted(rows, key=lambda r: r["seed"]),
                "parent_run_id": parent.parent_run_id,
                "experiment_id": parent.experiment_id,
                "tracking_uri": uri,
                "wall_seconds": time.time() - start,
            }
            tracking.finish_search(parent, summary, status=status)
    return summary


def _row(result) -> dict[str, Any]:
    seed = result.config["seed"]
    if result.error or not result.metrics.get("steps"):
        return {"seed": seed, "status": "failed", "error": str(result.error)}
    m = result.metrics
    return {
        "seed": seed,
        "status": "done",
        "final_eval_return": m["final_eval_return"],
        "final_eval_std": m["final_eval_std"],
        "best_eval_return": m["best_eval_return"],
        "steps_per_second": m["steps_per_second"],
        "steps_to_threshold": m["steps_to_threshold"],
        "threshold": m["threshold"],
        "steps": m["steps"],
        "episodes": m["episodes"],
        "mlflow_run_id": m["mlflow_run_id"],
        "checkpoint_dir": m["checkpoint_dir"],
    }
