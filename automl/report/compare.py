"""Compare the searches of one MLflow experiment: a leaderboard of their best children and
three plots (how fast each search found good children, accuracy against size with the
Pareto front, and the controller's learning), read back from MLflow alone, so searches
run on other machines or days compare the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from automl.child.arch import describe
from automl.search.objective import pareto_front
from runtime import tracking
from runtime.errors import UserError
from runtime.tags import ARCHITECTURE_TAG, PARENT_TAG, ROLE_TAG, TRIAL_TAG

PLOTS = ("best_so_far.png", "uar_vs_params.png", "controller.png")
CONTROLLER = ("controller/mean_reward", "controller/baseline", "controller/entropy")


@dataclass
class SearchRuns:
    """One search (a parent run) and its children, as rows of plain values."""

    run_id: str
    searcher: str
    children: list[dict[str, Any]] = field(default_factory=list)
    controller: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.searcher} {self.run_id[:8]}"

    def finished(self) -> list[dict[str, Any]]:
        return [c for c in self.children if c["status"] == "FINISHED" and c["dev_uar"] is not None]

    def best_so_far(self) -> list[float | None]:
        """Best finished dev UAR after each child, in the order the children ended (as the
        parent run's own best-so-far metric counts them; children still running last)."""
        best, curve = None, []
        never = float("inf")
        ended = sorted(self.children, key=lambda c: (c["end_time"] or never, c["trial"]))
        for child in ended:
            if child["status"] == "FINISHED" and child["dev_uar"] is not None:
                best = child["dev_uar"] if best is None else max(best, child["dev_uar"])
            curve.append(best)
        return curve


def collect(uri: str, experiment: str, option: str = "--experiment") -> list[SearchRuns]:
    """Every search of ``experiment`` with its children, oldest search first (``option``:
    what the user named it with, for the message when there is none)."""
    experiment_id, parents = tracking.job_runs(uri, experiment, "search", option)
    searches = {
        run.run_id: SearchRuns(run.run_id, run.params.get("searcher", "?")) for run in parents
    }
    for run in tracking.runs_tagged(uri, experiment_id, ROLE_TAG, "child"):
        search = searches.get(run.tags.get(PARENT_TAG, ""))
        if search is not None:
            search.children.append(_child_row(run, search))
    for search in searches.values():
        search.controller = {
            key: tracking.metric_history(uri, search.run_id, key) for key in CONTROLLER
        }
    return list(searches.values())


def _child_row(run: tracking.StoredRun, search: SearchRuns) -> dict[str, Any]:
    tags, metrics = run.tags, run.metrics
    architecture = json.loads(tags.get(ARCHITECTURE_TAG, "{}"))
    return {
        "run_id": run.run_id,
        "search_run_id": search.run_id,
        "searcher": search.searcher,
        "trial": int(tags.get(TRIAL_TAG, -1)),
        "status": run.status,
        "end_time": run.end_time,
        "architecture": describe(architecture) if architecture else "?",
        "dev_uar": metrics.get("dev_uar"),
        # over the seeds it was trained on: more than one when its search confirmed it
        "dev_uar_mean": metrics.get("dev_uar_mean", metrics.get("dev_uar")),
        "seeds": int(metrics.get("seeds", 1)),
        "n_params": int(metrics["n_params"]) if "n_params" in metrics else None,
        "latency_ms": metrics.get("latency_ms"),
    }


def leaderboard(searches: list[SearchRuns], top: int) -> list[dict[str, Any]]:
    """The best finished children of all the searches, best first, as a search chooses its
    best: the leaders confirmed on a second seed first, by their mean dev UAR over their
    seeds, then the children looked at once."""
    rows = [row for search in searches for row in search.finished()]
    return sorted(rows, key=lambda r: (r["seeds"] == 1, -r["dev_uar_mean"]))[:top]


def plot(searches: list[SearchRuns], folder: Path) -> list[Path]:
    """The three comparison plots as PNG files in ``folder``."""
    try:
        import matplotlib
    except ImportError:
        raise UserError(
            "automl compare draws its plots with matplotlib: pip install 'automl-rl[plots]'"
        ) from None
    matplotlib.use("Agg")  # files only: no display on a cluster node
    import matplotlib.pyplot as plt

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--plots {folder}: cannot make this folder ({exc})") from None
    paths = [folder / name for name in PLOTS]
    figures = (
        _best_so_far(plt, searches),
        _uar_vs_params(plt, searches),
        _controller(plt, searches),
    )
    for figure, path in zip(figures, paths, strict=True):
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)
    return paths


def _best_so_far(plt: Any, searches: list[SearchRuns]) -> Any:
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    for search in searches:
        curve = search.best_so_far()
        axes.step(range(1, len(curve) + 1), curve, where="post", label=search.label)
    axes.set(xlabel="children ended (in the order they ended)", ylabel="best dev UAR so far",
             title="Search progress")  # fmt: skip
    axes.legend(fontsize="small")
    return figure


def _uar_vs_params(plt: Any, searches: list[SearchRuns]) -> Any:
    """Each finished child as a point; the Pareto front as circled points joined by a step
    line, each labelled with its child's trial number (its run: ``child-NNNN``)."""
    from matplotlib.ticker import EngFormatter, LogLocator

    figure, axes = plt.subplots(figsize=(7, 4.5))
    rows = [row for search in searches for row in search.finished()]
    for search in searches:
        done = [r for r in search.finished() if r["n_params"]]
        axes.scatter([r["n_params"] for r in done], [r["dev_uar"] for r in done], s=14,
                     alpha=0.7, label=search.label)  # fmt: skip
    front = pareto_front([r for r in rows if r["n_params"]], "n_params")
    x, y = [r["n_params"] for r in front], [r["dev_uar"] for r in front]
    axes.plot(x, y, color="black", drawstyle="steps-post", linewidth=1)
    axes.scatter(x, y, s=80, facecolors="none", edgecolors="black", label="Pareto front")
    for row in front:
        axes.annotate(f"#{row['trial']}", (row["n_params"], row["dev_uar"]), fontsize="x-small",
                      xytext=(4, -10), textcoords="offset points")  # fmt: skip
    axes.set(xscale="log", xlabel="parameters", ylabel="dev UAR", title="Accuracy against size")
    axes.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(EngFormatter(sep=""))  # 20k, 500k, 1M
    axes.xaxis.set_minor_formatter(plt.NullFormatter())
    axes.legend(fontsize="small")
    return figure


def _controller(plt: Any, searches: list[SearchRuns]) -> Any:
    from matplotlib.ticker import MaxNLocator

    figure, (reward, entropy) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    entropy.xaxis.set_major_locator(MaxNLocator(integer=True))  # updates are counted
    for search in searches:
        history = search.controller
        for key, style in (("controller/mean_reward", "-"), ("controller/baseline", "--")):
            if history.get(key):
                steps, values = zip(*history[key], strict=True)
                reward.plot(steps, values, style, label=f"{search.label} {key.split('/')[1]}")
        if history.get("controller/entropy"):
            steps, values = zip(*history["controller/entropy"], strict=True)
            entropy.plot(steps, values, label=search.label)
    reward.set(ylabel="reward", title="Controller (searchers that learn with a baseline)")
    entropy.set(xlabel="controller update", ylabel="policy entropy")
    for axes in (reward, entropy):
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small")
        else:
            axes.text(0.5, 0.5, "no controller metrics", ha="center", transform=axes.transAxes)
    return figure


def log_plots(uri: str, searches: list[SearchRuns], paths: list[Path]) -> None:
    """The plots beside each search's own results in MLflow (``compare/``)."""
    for run_id in (search.run_id for search in searches):
        for path in paths:
            tracking.log_artifact(uri, run_id, path, "compare")
