"""``automl search``: its options, the live progress line and the final leaderboard."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from automl.child import describe
from automl.search.config import SearchConfig
from runtime import mlflow_ui
from runtime.cli import add_options, from_args
from runtime.tags import DEVICE_TAG, GPUS_TAG


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search architectures on Ray, tracked in MLflow")
    add_options(p, SearchConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from automl.search.run import run_search

    config = from_args(SearchConfig, args)
    with ProgressLine(Console(stderr=True), config.trials) as progress:
        summary = run_search(config, on_progress=progress.update)
    console = report_console()
    console.print(leaderboard_table(summary))
    if summary["warm_start"]:
        console.print(
            f"warm start: the searcher was told {summary['warm_started']} finished children of "
            f"experiment {summary['warm_start']} before its first proposal"
        )
    if summary["ended"] == "time budget":
        console.print(
            f"the search ended on time: {summary['trained']} children trained within "
            f"{config.time_budget:.0f} s; children still running then were stopped "
            "(status 'stopped'); --resume with a larger --time-budget continues it"
        )
    if summary["converged"]:
        console.print(
            f"the searcher converged: it proposed {config.max_duplicates} children in a row "
            f"that were already trained, so the search stopped after {summary['trained']} of "
            f"{config.trials} children"
        )
    if summary["gpu_unused"]:
        console.print(
            f"{len(summary['gpu_unused'])} children were given a GPU but trained on the CPU: "
            "torch on their node sees no CUDA device (a CPU build of torch on a GPU node?); "
            f"their runs' tags {GPUS_TAG} and {DEVICE_TAG} say which",
            soft_wrap=True,
        )
    _print_baselines(console, summary)
    _print_start_children(console, summary)
    for t in summary["trials"]:
        if t.get("note"):
            console.print(f"child {t['trial']}: {t['note']}", soft_wrap=True)
    _print_confirmed(console, summary)
    best = summary["best"]
    if best:
        traded = summary["objective"] != "uar"
        reward = f"best reward {best['reward_mean']:.4f}, " if traded else "best "
        over = f" (mean of {best['seeds']} seeds)" if best["seeds"] > 1 else ""
        console.print(
            f"{reward}dev UAR {best['dev_uar_mean']:.4f}{over}: "
            f"{describe(best['architecture'])} (MLflow run {best['mlflow_run_id']})"
        )
    command = mlflow_ui.serve_command(summary["tracking_uri"])
    if command:
        console.print(f"serve the MLflow UI with:  {command}", soft_wrap=True, markup=False)
    if summary["mlflow_ui"]:
        console.print(f"this search's children, best first:  {summary['mlflow_ui']}",
                      soft_wrap=True, markup=False)  # fmt: skip
    return 0


def _print_confirmed(console: Console, summary: dict[str, Any]) -> None:
    """What the leaders' second seeds said (the best is chosen by their mean)."""
    if not summary["confirmed"]:
        return
    leaders = ", ".join(
        f"child {c['trial']} {c['dev_uar']:.4f} -> "
        + (f"{c['dev_uar_mean']:.4f}" if c["seeds"] > 1 else "not finished")
        for c in summary["confirmed"]
    )
    console.print(
        f"confirmed on a second seed (dev UAR, then its mean over its seeds): {leaders}",
        soft_wrap=True,
    )


def _print_baselines(console: Console, summary: dict[str, Any]) -> None:
    """The experiment's challenge baselines (``automl baseline``), beside the best child."""
    from automl.report import baseline

    best = summary["best"]
    for found in baseline.latest(summary["tracking_uri"], summary["experiment_id"]):
        versus = ""
        if best:
            delta = best["dev_uar_mean"] - found.dev_uar
            versus = f"; the best child is {delta:+.4f} on dev"
        console.print(f"{found.describe()}{versus}", soft_wrap=True)


def _print_start_children(console: Console, summary: dict[str, Any]) -> None:
    """The space's start children (the model one would build by hand), beside the best."""
    best = summary["best"]
    seeded = {c["trial"]: c for c in summary["confirmed"] if c["seeds"] > 1}
    for t in summary["trials"]:
        if not t["start"] or t["duplicate_of"] is not None or t["dev_uar"] is None:
            continue
        uar, over = t["dev_uar"], " (one seed)"
        if t["trial"] in seeded:
            uar, over = seeded[t["trial"]]["dev_uar_mean"], " (mean of its seeds)"
        versus = f"; the best child is {best['dev_uar_mean'] - uar:+.4f} on dev" if best else ""
        if best and best["seeds"] > 1 and t["trial"] not in seeded:
            versus += f" (its mean over {best['seeds']} seeds: confirmed children rank first)"
        if best and best["trial"] == t["trial"]:
            versus = "; no child the searcher proposed beat it: it is the best"
        console.print(
            f"start child {t['trial']} ({describe(t['architecture'])}, {t['status']}): "
            f"dev UAR {uar:.4f}{over}{versus}",
            soft_wrap=True,
        )


class ProgressLine:
    """children done / total, running now, best UAR so far, estimated time left."""

    def __init__(self, console: Console, total: int) -> None:
        self.bar = Progress(
            TextColumn("[bold]children"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.bar.add_task("search", total=total, status="starting")

    def __enter__(self) -> ProgressLine:
        return self  # the line appears once every check has passed and the search starts

    def update(self, loop) -> None:
        if not self.bar.live.is_started:
            self.bar.start()
        best = loop.best()
        status = f"running {loop.running - loop.unplaced}"
        status += f"  waiting {loop.unplaced} for a free worker" if loop.unplaced else ""
        status += f"  cached {loop.cached}" if loop.cached else ""
        status += f"  best UAR {loop.mean_dev_uar(best):.4f}" if best else ""
        status += f"  confirming {len(loop.confirmations)}" if loop.confirmations else ""
        self.bar.update(self.task, completed=loop.completed, status=status)

    def __exit__(self, *exc: object) -> None:
        if self.bar.live.is_started:  # stopping a line never shown would print a blank one
            self.bar.stop()


def report_console() -> Console:
    """Standard output for tables: 120 columns when it is a file or a pipe (Rich would
    take 80 and fold run ids and numbers), the terminal's width otherwise."""
    console = Console()
    return console if console.is_terminal else Console(width=120)


def leaderboard_table(summary: dict[str, Any], top: int = 10) -> Table:
    ended = {"time budget": ", ended on its time budget", "interrupted": ", interrupted"}
    table = Table(
        title=f"Leaderboard ({summary['searcher']}, {summary['trained']} children, "
        f"{summary['wall_seconds']:.0f} s{ended.get(summary['ended'], '')})"
    )
    traded = summary["objective"] != "uar"  # ranked by the reward, shown beside the UAR
    # a leader's mean over its seeds, once its confirmation finished
    seeded = {c["trial"]: c for c in summary["confirmed"] if c["seeds"] > 1}
    columns = ["rank", "trial", *(["reward"] if traded else []), "dev UAR", "seeds", "architecture"]
    for column in (*columns, "params", "latency ms", "seconds"):
        table.add_column(column, no_wrap=column != "architecture")  # numbers stay whole
    table.add_column("MLflow run", no_wrap=True, min_width=32)  # whole: what --run-id takes

    def mean(t: dict[str, Any], key: str) -> float:
        return seeded[t["trial"]][f"{key}_mean"] if t["trial"] in seeded else t[key]

    if seeded:
        table.caption = (
            "children confirmed on a second seed rank first, by their mean dev UAR over their "
            "seeds (a single figure is as optimistic as theirs were before)"
        )
    done = [t for t in summary["trials"] if t["status"] == "done" and t["confirms"] is None]
    done.sort(key=lambda t: (t["trial"] not in seeded, -mean(t, "reward")))  # as best() does
    for rank, t in enumerate(done[:top], start=1):
        table.add_row(
            str(rank),
            str(t["trial"]),
            *([f"{mean(t, 'reward'):.4f}"] if traded else []),
            f"{mean(t, 'dev_uar'):.4f}",
            str(seeded[t["trial"]]["seeds"] if t["trial"] in seeded else 1),
            describe(t["architecture"]),
            str(t["n_params"]),
            f"{t['latency_ms']:.2f}" if t["latency_ms"] is not None else "",
            f"{t['seconds']:.1f}",
            str(t["mlflow_run_id"] or ""),
        )
    return table
