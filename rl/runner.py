"""Many seeds of one agent at once: each seed (or population of seeds, for DQN) a Ray
Tune trial, and each seed a nested MLflow run."""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from rl import dqn, qlearning
from rl.common import BEST
from runtime import tracking
from runtime.cli import (
    build_config,
    option,
    overrides_option,
    parse_key_values,
    parse_overrides,
    positive_float,
    positive_int,
)
from runtime.errors import UserError
from runtime.faults import FaultPlan
from runtime.files import OutOfSpace, out_of_space, out_of_space_line, write_json
from runtime.job import GridResult, Job, JobPlan, preflight, run_job
from runtime.resources import TrialResources, join_timeout_field, max_wait_field, parse_rules
from runtime.tags import CODE_VERSION_TAG, ENV_TAG, ROLE_TAG
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
        default=None,
        metadata=option(
            f"env steps per seed (default: the agent's total_steps: "
            f"{dqn.DQNConfig.total_steps} for dqn, {qlearning.QLearningConfig.total_steps} "
            "for qlearning)",
            type=positive_int,
        ),
    )
    episodes: int | None = field(
        default=None,
        metadata=option(
            f"episodes per seed (qlearning; default: {qlearning.QLearningConfig.episodes})",
            type=positive_int,
        ),
    )
    seeds: int = field(
        default=1,
        metadata=option(
            "how many seeds: first..first+N-1 (a count here and in automl evaluate)",
            type=positive_int,
        ),
    )
    first_seed: int = field(default=0, metadata=option("the first seed", type=int, metavar="N"))
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
        metadata=overrides_option(
            "set a field of the agent's config, e.g. n_step=3: the fields of DQNConfig "
            "(rl/dqn.py) or QLearningConfig (rl/qlearning.py), each with its default and why",
            "--set",
        ),
    )
    experiment: str = field(
        default="rl",
        metadata=option("MLflow experiment name (rl's own: automl search's default is automl)"),
    )
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
    join_timeout: float = join_timeout_field()
    cpus_per_trial: float = field(
        default=1.0, metadata=option("CPUs each seed (or population) asks Ray for",
                                     type=positive_float)
    )  # fmt: skip
    trial_resources: list[str] = field(
        default_factory=list,
        metadata=overrides_option(
            "a Ray resource each seed (or population) needs, e.g. a100=1 for nodes started "
            "with `ray start --resources '{\"a100\": 1}'` (repeatable)",
            "--trial-resource",
        ),
    )
    max_wait: float | None = max_wait_field("seeds", "training")
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
        {ROLE_TAG: "rl-seed"},
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

    run_trials(context, members, {ROLE_TAG: "rl-seed"}, work)


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
    resources = TrialResources(job.cpus_per_trial, 0.0, parse_rules(job.trial_resources))
    resources.check_fields(set())  # a seed has no fields a condition could name
    plan = JobPlan(tracking_uri=tracking.resolve_uri(job.tracking_uri),
                   experiment=job.experiment, address=job.address,
                   join_timeout=job.join_timeout,
                   requests=resources.requests(), max_wait=job.max_wait)  # fmt: skip
    preflight(plan)
    start, rows, ended = time.time(), [], {}
    params = {**base, "algo": job.algo, "seeds": seeds, "workers": job.workers,
              "population": job.population}  # fmt: skip

    def close(running: Job) -> tuple[dict[str, Any], dict[str, str]]:
        summary = {
            "algo": job.algo, "env": job.env, "config": base,
            "seeds": sorted(rows + _never_ran(seeds, rows), key=lambda r: r["seed"]),
            "parent_run_id": running.parent.parent_run_id,
            "experiment_id": running.parent.experiment_id,
            "tracking_uri": plan.tracking_uri, "wall_seconds": time.time() - start,
            "checkpoint_dir": str(root), "json": job.json,
        }  # fmt: skip
        if job.json:
            write_json(Path(job.json), summary)
        ended["summary"] = summary
        return {"summary.json": summary}, {}

    open_parent = partial(tracking.start_parent, plan.tracking_uri, job.experiment,
                          f"rl-{job.algo}-{job.env}", params, role="rl")  # fmt: skip
    from runtime.tune_grid import GridOptions, run_grid  # Ray: after ray_cluster.prepare

    with (
        run_job(plan, open_parent, close) as running,
        tempfile.TemporaryDirectory(prefix="rl-tune-") as tune_files,
    ):  # Ray Tune's own records: nothing rl reads back, not the user's folder
        provenance = {ENV_TAG: job.env, CODE_VERSION_TAG: tracking.code_version()}
        context = TrialContext(running.parent, faults, tags=provenance)
        common = dict(base=base, context=context, checkpoint_root=str(root), resume=job.resume)
        options = GridOptions(workers=job.workers, resources=resources,
                              storage=Path(tune_files), max_wait=job.max_wait,
                              names=("seeds", "training"))  # fmt: skip
        if groups:
            results = run_grid(population_trainable, "seeds", groups, options, **common)
        else:
            results = run_grid(seed_trainable, "seed", seeds, options, algo=job.algo, **common)
        rows += [row for result in results for row in _rows(result)]
        if full := [r["error"] for r in rows if out_of_space(r.get("error", ""))]:
            raise OutOfSpace(f"a seed could not write its results: {out_of_space_line(full[0])}")
        if any(r["status"] == "interrupted" for r in rows):  # Tune caught a Ctrl-C
            raise KeyboardInterrupt
        if all(r["status"] == "done" for r in rows):
            running.finished()
    return ended["summary"]


def _never_ran(seeds: list[int], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for the seeds no trial reported on (the job stopped before they ran)."""
    reported = {r["seed"] for r in rows}
    return [{"seed": s, "status": "interrupted", "mlflow_run_id": None}
            for s in seeds if s not in reported]  # fmt: skip


def _populations(job: JobConfig, seeds: list[int]) -> list[list[int]]:
    """``--population P``: DQN's seeds in groups of P (one each by default); none for an
    agent trained one seed at a time."""
    if job.algo != "dqn":
        if job.population > 1:
            raise UserError(f"--population applies to --algo dqn, not {job.algo}")
        return []
    return [seeds[i : i + job.population] for i in range(0, len(seeds), job.population)]


def _rows(result: GridResult) -> list[dict[str, Any]]:
    """The summary rows of a grid trial: one seed's, or each of a population's."""
    m = result.metrics
    if not isinstance(result.value, list):
        return [_row(result.value, m, result.error)]
    members = json.loads(m[MEMBERS]) if MEMBERS in m else [{}] * len(result.value)
    return [_row(s, r, result.error) for s, r in zip(result.value, members, strict=True)]


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
