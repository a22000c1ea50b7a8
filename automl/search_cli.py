"""``automl search``: wire space, searcher, data, tracking and Ray together, show progress.

Every check a user can fail (space file, searcher name, output path, tracking URI,
data) runs before any child trains, so mistakes cost seconds, not a GPU night.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from automl import tracking
from automl.children import describe
from automl.cli import (
    add_data_options,
    check_writable,
    non_negative_float,
    positive_int,
    write_json,
)
from automl.search import SearchLoop
from automl.searchers import SEARCHERS, make_searcher
from automl.space import load_space


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


def add_search_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search architectures on Ray, tracked in MLflow")
    add_data_options(p)
    p.add_argument(
        "--space",
        required=True,
        help="search-space YAML file, or a built-in name (seed_gru, cnn, gru_hparams)",
    )
    p.add_argument("--searcher", default="reinforce", help=f"one of {sorted(SEARCHERS)}")
    p.add_argument("--trials", type=positive_int, default=20, help="children to evaluate")
    p.add_argument("--epochs", type=positive_int, default=10, help="training epochs per child")
    p.add_argument("--workers", type=positive_int, default=1, help="children trained at once")
    p.add_argument("--cpus-per-trial", type=non_negative_float, default=1.0)
    p.add_argument(
        "--gpus-per-trial",
        type=non_negative_float,
        default=0.0,
        help="GPUs per child; fractions share a GPU (0.5 = two children per GPU)",
    )
    p.add_argument("--address", help="join this Ray cluster (default: start Ray locally)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--experiment", default="automl", help="MLflow experiment name")
    p.add_argument(
        "--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)"
    )
    p.add_argument("--failure-reward", type=float, default=0.0, help="reward of a child that fails")
    p.add_argument("--storage", help="folder for Ray Tune's trial records (default: a temp folder)")
    p.add_argument("--json", help="write the summary here")
    p.set_defaults(func=cmd_search)


def cmd_search(args: argparse.Namespace) -> int:
    keys = SearchConfig.__dataclass_fields__
    config = SearchConfig(**{k: v for k, v in vars(args).items() if k in keys})
    summary = run_search(config, Console(stderr=True))
    best = summary["best"]
    console = Console()
    console.print(leaderboard_table(summary))
    if best:
        console.print(
            f"best dev UAR {best['dev_uar']:.4f}: {describe(best['architecture'])} "
            f"(MLflow run {best['mlflow_run_id']})"
        )
    uri = summary["tracking_uri"]
    console.print(
        f"open the MLflow UI with:  mlflow ui --backend-store-uri {uri}"
        if uri.startswith("sqlite")
        else f"MLflow UI: {uri}"
    )
    return 0


def run_search(config: SearchConfig, console: Console | None = None) -> dict[str, Any]:
    """Validate everything, then run the search; returns the JSON summary."""
    from automl.data import load_dataset
    from automl.execution import Resources, run_on_ray
    from automl.train import TrainConfig

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
    search_run = tracking.start_search(uri, config.experiment, f"search-{config.searcher}", params)

    def on_update(metrics: dict[str, float], step: int) -> None:
        tracking.log_search_metrics(search_run, metrics, step)

    loop = SearchLoop(
        searcher,
        space,
        config.trials,
        (dataset.fingerprint, config.seed, config.epochs),
        config.failure_reward,
        on_update,
    )
    train_config = TrainConfig(
        epochs=config.epochs, seed=config.seed, threads=max(1, int(config.cpus_per_trial))
    )
    resources = Resources(
        config.workers, config.cpus_per_trial, config.gpus_per_trial, config.address
    )
    best_logged = [-1.0]

    def on_change() -> None:
        best = loop.best()
        if best is not None and best.dev_uar > best_logged[0]:
            best_logged[0] = best.dev_uar
            tracking.log_search_metrics(search_run, {"best_dev_uar": best.dev_uar}, loop.completed)
        show(loop)

    status = "FAILED"
    with _progress(console, config.trials) as show:
        try:
            run_on_ray(
                loop,
                dataset,
                resources,
                train_config,
                search_run,
                Path(config.storage) if config.storage else None,
                on_change=on_change,
            )
            status = "FINISHED"
        finally:
            summary = make_summary(config, loop, search_run, time.time() - start)
            tracking.finish_search(search_run, summary, searcher.state_dict(), status)
            if json_path:
                write_json(json_path, summary)
    return summary


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


class _progress:
    """A live line: children done / total, running, best UAR so far, time left."""

    def __init__(self, console: Console | None, total: int) -> None:
        self.bar = Progress(
            TextColumn("[bold]children"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=console is None,
        )
        self.task = self.bar.add_task("search", total=total, status="starting Ray")

    def __enter__(self):
        self.bar.start()
        return self.update

    def update(self, loop: SearchLoop) -> None:
        best = loop.best()
        status = f"running {loop.running}" + (f"  best UAR {best.dev_uar:.4f}" if best else "")
        self.bar.update(self.task, completed=loop.completed, status=status)

    def __exit__(self, *exc) -> None:
        self.bar.stop()


def leaderboard_table(summary: dict[str, Any], top: int = 10) -> Table:
    table = Table(
        title=f"Leaderboard ({summary['searcher']}, {len(summary['trials'])} children, "
        f"{summary['wall_seconds']:.0f} s)"
    )
    for column in ("rank", "trial", "dev UAR", "architecture", "params", "seconds", "MLflow run"):
        table.add_column(column)
    done = sorted(
        (t for t in summary["trials"] if t["status"] == "done"), key=lambda t: -t["dev_uar"]
    )
    for rank, t in enumerate(done[:top], start=1):
        table.add_row(
            str(rank),
            str(t["trial"]),
            f"{t['dev_uar']:.4f}",
            describe(t["architecture"]),
            str(t["n_params"]),
            f"{t['seconds']:.1f}",
            str(t["mlflow_run_id"])[:12],
        )
    return table
