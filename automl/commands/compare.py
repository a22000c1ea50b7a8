"""``automl compare``: the searches of an experiment side by side, from MLflow."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from automl.commands.search import report_console
from runtime.cli import add_options, from_args, option, positive_int
from runtime.files import check_writable, write_json


@dataclass(kw_only=True)
class CompareConfig:
    """What ``automl compare`` takes; each option and its default written once."""

    experiment: str = field(metadata=option("the MLflow experiment whose searches to compare"))
    tracking_uri: str | None = field(
        default=None, metadata=option("MLflow URI (default: as automl search)")
    )
    top: int = field(default=10, metadata=option("children in the leaderboard", type=positive_int))
    plots: str = field(
        default="compare-plots", metadata=option("folder for the PNG plots (made if missing)")
    )
    json: str | None = field(default=None, metadata=option("write the comparison here"))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare the searches of an MLflow experiment")
    add_options(p, CompareConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from automl.report import baseline, compare
    from runtime import tracking

    config = from_args(CompareConfig, args)
    if config.json:
        check_writable(Path(config.json), "--json")
    uri = tracking.resolve_uri(config.tracking_uri)
    tracking.check_store(uri)
    searches = compare.collect(uri, config.experiment)
    board = compare.leaderboard(searches, config.top)
    paths = compare.plot(searches, Path(config.plots))
    compare.log_plots(uri, searches, paths)
    report_console().print(_table(config.experiment, len(searches), board))
    baselines = baseline.latest(uri, tracking.find_experiment(uri, config.experiment))
    for found in baselines:
        print(f"{found.describe()} (MLflow run {found.run_id})")
    print(f"plots: {', '.join(str(p) for p in paths)} (also in each search's MLflow run)")
    if config.json:
        searches_json = [
            {"run_id": s.run_id, "searcher": s.searcher, "children": len(s.children),
             "best_dev_uar": max((r["dev_uar"] for r in s.finished()), default=None)}
            for s in searches
        ]  # fmt: skip
        payload = {"experiment": config.experiment, "tracking_uri": uri,
                   "searches": searches_json, "leaderboard": board,
                   "baselines": [vars(b) for b in baselines],
                   "plots": [str(p) for p in paths]}  # fmt: skip
        write_json(Path(config.json), payload)
    return 0


def _table(experiment: str, n_searches: int, board: list[dict]) -> Table:
    table = Table(title=f"{experiment}: best children of {n_searches} searches")
    columns = ("rank", "dev UAR", "seeds", "architecture", "params", "latency ms", "searcher")
    for column in columns:
        table.add_column(column, no_wrap=column != "architecture")  # numbers stay whole
    table.add_column("MLflow run", no_wrap=True, min_width=32)  # whole: what --run-id takes
    for rank, row in enumerate(board, start=1):
        latency = f"{row['latency_ms']:.2f}" if row["latency_ms"] is not None else ""
        table.add_row(
            str(rank), f"{row['dev_uar_mean']:.4f}", str(row["seeds"]), row["architecture"],
            str(row["n_params"] or ""),
            latency, row["searcher"], row["run_id"],
        )  # fmt: skip
    return table
