"""Many seeds of one agent at once: each seed (or population of seeds, for DQN) a Ray
Tune trial, and each seed a nested MLflow run."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rl import dqn, qlearning
from rl.common import BEST
from runtime import ray_cluster, tracking
from runtime.cli import (
    build_config,
    interrupts_held,
    option,
    overrides_option,
    parse_key_values,
    parse_overrides,
    positive_int,
    resumable_interrupts,
)
from runtime.errors import UserError
from runtime.faults import FaultPlan
from runtime.files import write_json
from runtime.trial import (
    ERROR,
    FAILED,
    FINISHED,
    MEMBERS,
    RUN_ID,
    Outcome,
    Trial,
    TrialContext,
    run_trial,
    run_trials,
)


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


@dataclass(kw_only=True)
class JobConfig:
    """``rl train``: which agent on which environment, how many seeds, where they run and log."""

    env: str = field(metadata=option("Gymnasium id, e.g. CartPole-v1, Taxi-v4"))
    env_args: list[str] = field(
        default_factory=list,
        metadata=overrides_option("an argument of the environment, e.g. table=T.json", "--env-arg"),
    )
    algo: str = field(default="dqn", metadata=option("the agent", choices=list(ALGOS)))
    steps: int | None = field(
        default=None, metadata=option("env steps per seed", type=positive_int)
    )
    episodes: int | None = field(
        default=None, metadata=option("episodes per seed (qlearning)", type=positive_int)
    )
    seeds: int = field(default=1, metadata=option("seeds first..first+K-1", type=positive_int))
    first_seed: int = field(default=0, metadata=option("the first seed", type=int))
    workers: int = field(
        default=1, metadata=option("seeds (or populations) trained at once", type=positive_int)
    )
    population: int = field(
        default=1,
        metadata=option(
            "dqn: train this many seeds together in one process (stacked networks, one "
            "optimizer step for all; each seed its own replay, exploration, checkpoints, "
            "results and MLflow run); 1: each seed its own process",
            type=positive_int,
        ),
    )
    overrides: list[str] = field(
        default_factory=list,
        metadata=overrides_option("set a field of the agent's config, e.g. n_step=3", "--set"),
    )
    experiment: str = field(default="rl", metadata=option("MLflow experiment name"))
    tracking_uri: str | None = field(
        default=None, metadata=option("MLflow URI (default: sqlite:///mlflow.db)")
    )
    checkpoint_dir: str = field(
        default="checkpoints", metadata=option("per-seed checkpoints go to DIR/seed-N")
    )
    resume: bool = field(
        default=False, metadata=option("continue from the checkpoints", action="store_true")
    )
    address: str | None = field(
        default=None, metadata=option("join this Ray cluster (default: local Ray)")
    )
    cpus_per_trial: float = 1.0
    json: str | None = field(default=None, metadata=option("write the summary here"))

    def agent_config(self) -> Any:
        """The algorithm's config for this job: defaults, then --steps/--episodes, then --set;
        every value checked against its type here, in the driver."""
        cls = ALGOS[self.algo].config
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {"env_id": self.env}
        if self.env_args:
            values["env_kwargs"] = parse_key_values(self.env_args, "--env-arg")
        if self.steps:
            values["total_steps"] = self.steps
        if self.episodes:
            if "episodes" not in names:
                raise UserError("--episodes applies to --algo qlearning; use --steps for dqn")
            values["episodes"] = self.episodes
        values.update(parse_overrides(cls, self.overrides, "--set"))
        return build_config(cls, values, "--set")


def seed_trainable(
    config: dict[str, Any],
    algo: str,
    base: dict[str, Any],
    context: TrialContext,
    checkpoint_root: str | None,
    resume: bool,
) -> None:
    """Runs in a Ray worker: one seed, its metrics streamed to its own MLflow run."""
    run_config = ALGOS[algo].config(**{**base, "seed": config["seed"]})
    folder = Path(checkpoint_root) / f"seed-{run_config.seed}" if checkpoint_root else None

    def work(trial: Trial) -> Outcome:
        result = ALGOS[algo].train(run_config, folder, resume, on_metrics=_log_to(trial))
        return _outcome(result, run_config.seed, folder)

    run_trial(
        context,
        run_config.seed,
        f"seed-{run_config.seed}",
        dataclasses.asdict(run_config),
        {"automl.role": "rl-seed"},
        work,
    )


def population_trainable(
    config: dict[str, Any],
    base: dict[str, Any],
    context: TrialContext,
    checkpoint_root: str,
    resume: bool,
) -> None:
    """Runs in a Ray worker: a population of DQN seeds (:func:`rl.dqn.train_population`),
    each seed's metrics streamed to its own MLflow run, its checkpoints and best policy in
    its folder."""
    agent = dqn.DQNConfig(**base)
    seeds = list(config["seeds"])
    folders = [Path(checkpoint_root) / f"seed-{seed}" for seed in seeds]
    members = [(s, f"seed-{s}", dataclasses.asdict(dataclasses.replace(agent, seed=s)))
               for s in seeds]  # fmt: skip

    def work(trials: list[Trial]) -> list[Outcome]:
        logs = [_log_to(t) for t in trials]
        results = dqn.train_population(agent, seeds, folders, resume, logs)
        return [_outcome(r, s, f) for r, s, f in zip(results, seeds, folders, strict=True)]

    run_trials(context, members, {"automl.role": "rl-seed"}, work)


def _outcome(result: Any, seed: int, folder: Path | None) -> Outcome:
    """A seed's result: its numbers to MLflow and the driver, its best policy as a file."""
    values = dataclasses.asdict(result)
    metrics = {
        k: v for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    report = {**values, "seed": seed, "checkpoint_dir": str(folder or "")}
    best = folder / BEST if folder else None
    artifacts = {BEST: torch.load(best, weights_only=True)} if best and best.is_file() else {}
    return Outcome(metrics, artifacts, report=report)


def _log_to(trial: Trial) -> Callable[[dict[str, float], int], None]:
    return lambda metrics, step: trial.log(step, metrics)


def run_seeds(job: JobConfig, agent: Any = None) -> dict[str, Any]:
    """Train every seed (``job.workers`` at once); returns the JSON summary. ``agent``: the
    algorithm's config, when not the one the job's options describe."""
    from ray import tune

    agent = agent or job.agent_config()
    try:  # a wrong environment is the user's error, not a worker's
        ALGOS[job.algo].check_env(agent)
    except (TypeError, ValueError, OSError, KeyError) as exc:
        raise UserError(f"--env {job.env} {agent.env_kwargs}: cannot make it ({exc})") from None
    base = dataclasses.asdict(agent)
    seeds = list(range(job.first_seed, job.first_seed + job.seeds))
    groups = _populations(job, seeds)
    root = Path(job.checkpoint_dir).resolve()
    faults = FaultPlan.from_env(root, data_faults=False)
    uri = tracking.resolve_uri(job.tracking_uri)
    tracking.check_reachable(uri)
    tracking.check_experiment(uri, job.experiment)
    ray_cluster.check_address(job.address)
    need = [(f"--cpus-per-trial {job.cpus_per_trial:g}", {"CPU": job.cpus_per_trial})]
    if job.address is None:
        ray_cluster.check_fits(need, None)
    start = time.time()
    with ExitStack() as after_ray, ray_cluster.ray_session(job.address):
        if job.address is not None:
            ray_cluster.check_fits(need, job.address)
        params = {**base, "algo": job.algo, "seeds": seeds, "workers": job.workers,
                  "population": job.population}  # fmt: skip
        parent = tracking.start_parent(
            uri, job.experiment, f"rl-{job.algo}-{job.env}", params, role="rl"
        )
        after_ray.enter_context(resumable_interrupts())  # checkpoints are written from here
        # Once Ray is down (a forced stop included), no seed's run can stay RUNNING.
        after_ray.callback(tracking.close_abandoned, parent)
        provenance = {"automl.env": job.env, "automl.code_version": tracking.code_version()}
        status = "FAILED"
        rows: list[dict[str, Any]] = []
        try:
            context = TrialContext(parent, faults, tags=provenance)
            if groups:
                trainable = tune.with_parameters(
                    population_trainable, base=base, context=context,
                    checkpoint_root=str(root), resume=job.resume,
                )  # fmt: skip
                space = {"seeds": tune.grid_search(groups)}
            else:
                trainable = tune.with_parameters(
                    seed_trainable, algo=job.algo, base=base, context=context,
                    checkpoint_root=str(root), resume=job.resume,
                )  # fmt: skip
                space = {"seed": tune.grid_search(seeds)}
            grid = tune.Tuner(
                tune.with_resources(trainable, {"cpu": job.cpus_per_trial}),
                param_space=space,
                tune_config=tune.TuneConfig(max_concurrent_trials=job.workers, reuse_actors=True),
                run_config=tune.RunConfig(
                    name=f"rl-{int(time.time())}",
                    verbose=0,
                    storage_path=str(root / "ray"),
                ),
            ).fit()
            rows = [row for result in grid for row in _rows(result)]
            if any(r["status"] == "interrupted" for r in rows):  # Tune caught a Ctrl-C
                raise KeyboardInterrupt
            status = "FINISHED" if all(r["status"] == "done" for r in rows) else "FAILED"
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM; a second one forces Tune's stop
            status = "KILLED"
            raise
        finally:
            with interrupts_held():
                summary = {
                    "algo": job.algo,
                    "env": job.env,
                    "config": base,
                    "seeds": sorted(rows, key=lambda r: r["seed"]),
                    "parent_run_id": parent.parent_run_id,
                    "experiment_id": parent.experiment_id,
                    "tracking_uri": uri,
                    "wall_seconds": time.time() - start,
                }
                tracking.finish_parent(parent, {"summary.json": summary}, status=status)
                if job.json:
                    write_json(Path(job.json), summary)
    return summary


def _populations(job: JobConfig, seeds: list[int]) -> list[list[int]]:
    """``--population P``: DQN's seeds in groups of P (one each by default); none for an
    agent trained one seed at a time."""
    if job.algo != "dqn":
        if job.population > 1:
            raise UserError(f"--population applies to --algo dqn, not {job.algo}")
        return []
    return [seeds[i : i + job.population] for i in range(0, len(seeds), job.population)]


def _rows(result) -> list[dict[str, Any]]:
    """The summary rows of a Tune result: one seed's, or each of a population's."""
    m = result.metrics or {}
    if "seeds" not in result.config:
        return [_row(result.config["seed"], m, result.error)]
    members = json.loads(m[MEMBERS]) if MEMBERS in m else [{}] * len(result.config["seeds"])
    return [_row(s, r, result.error) for s, r in zip(result.config["seeds"], members, strict=True)]


def _row(seed: int, m: dict[str, Any], error: Any) -> dict[str, Any]:
    if not error and not m.get(FINISHED):  # stopped by an interrupt, or never started
        return {"seed": seed, "status": "interrupted", "mlflow_run_id": m.get(RUN_ID)}
    if error or m.get(FAILED) or not m.get("steps"):
        error = str(m.get(ERROR) or error)
        return {"seed": seed, "status": "failed", "error": error, "mlflow_run_id": m.get(RUN_ID)}
    keys = (
        "final_eval_return",
        "final_eval_std",
        "best_eval_return",
        "best_eval_step",
        "returned_fresh_return",
        "returned_fresh_std",
        "steps_per_second",
        "steps_to_threshold",
        "threshold",
        "steps",
        "episodes",
        "mlflow_run_id",
        "checkpoint_dir",
    )
    return {"seed": seed, "status": "done", **{k: m[k] for k in keys}}
