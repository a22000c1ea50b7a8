"""What a search finds in a fixed wall-clock budget, with and without early stopping.

Arms, each a real ``automl search`` on ``synth-cry`` over ``seed_gru`` (local Ray, its own
new SQLite tracking database, ``--workers 2``), under the same ``--time-budget``:

* ``before``: the child recipe this project had before the one-cycle recipe (Adam at a
  constant 1e-3, the last hidden state as the summary, no plateau stop), pinned in the
  space file; no early stopping. Its batches are length-bucketed like the others' (that
  cannot be switched off; ``benchmarks/length_batches.py`` measures what it saves);
* ``none``: today's default recipe, no early stopping;
* ``asha``: today's default recipe with ``--early-stop asha``.

The searcher is ``random`` with the same seed in every arm, so the arms propose the same
children in the same order and differ only in how each child is trained and stopped.
Runs go seed by seed, all arms of a seed back to back, so a slow drift of the machine
touches every arm alike. Per arm: children trained (to the end, or stopped), epochs
trained, children per hour, the best dev UAR of a child trained to the end (the model a
user gets) and of any child (a child stopped at the deadline included); the mean over
seeds and the ratio to ``none``.

    python benchmarks/time_budget.py --budget 10m --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from automl.data.prepare import load_dataset
from automl.search.config import SearchConfig
from runtime import ray_cluster
from runtime.cli import duration
from runtime.files import write_json

BEFORE = {"lr": 0.001, "schedule": "constant", "pooling": "last", "patience": 0}
ARMS: dict[str, tuple[dict[str, Any], str]] = {  # recipe pinned in the space, --early-stop
    "before": (BEFORE, "none"),
    "none": ({}, "none"),
    "asha": ({}, "asha"),
}


def write_space(folder: Path, recipe: dict[str, Any]) -> Path:
    """seed_gru with ``recipe`` added to its fixed hyperparameters."""
    space = yaml.safe_load((Path("search_spaces") / "seed_gru.yaml").read_text())
    space["fixed"] = {**space["fixed"], **recipe}
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def search(arm: str, seed: int, budget: float, folder: Path) -> dict[str, Any]:
    """One search as a user starts it: new tracking database and storage folder."""
    from automl.search.run import run_search  # imports Ray

    recipe, early_stop = ARMS[arm]
    folder.mkdir(parents=True)
    config = SearchConfig(
        data="synth-cry",
        space=str(write_space(folder, recipe)),
        searcher="random",
        trials=10_000,
        time_budget=budget,
        early_stop=early_stop,
        workers=2,
        seed=seed,
        experiment=f"{arm}-{seed}",
        tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
        storage=str(folder / "storage"),
    )
    started = time.perf_counter()
    summary = run_search(config)
    wall = time.perf_counter() - started
    trained = [t for t in summary["trials"] if t["status"] in ("done", "stopped")]
    return {
        "arm": arm,
        "seed": seed,
        "wall_seconds": wall,
        "ended": summary["ended"],
        "trained": len(trained),
        "stopped_early": sum(t["status"] == "stopped" for t in trained),
        "epochs": sum(t["epochs"] or 0 for t in trained),
        "children_per_hour": len(trained) / wall * 3600,
        "best_dev_uar": (summary["best"] or {}).get("dev_uar", 0.0),
        "best_dev_uar_any": max((t["dev_uar"] or 0.0 for t in trained), default=0.0),
        "best_architecture": (summary["best"] or {}).get("architecture"),
        "trials": [
            {k: t[k] for k in ("trial", "status", "dev_uar", "epochs", "seconds", "error")}
            for t in summary["trials"]
        ],
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean per arm over seeds, and the ratios to the ``none`` arm."""
    out: dict[str, dict[str, float]] = {}
    keys = (
        "trained",
        "stopped_early",
        "epochs",
        "children_per_hour",
        "best_dev_uar",
        "best_dev_uar_any",
    )
    for arm in dict.fromkeys(r["arm"] for r in runs):
        mine = [r for r in runs if r["arm"] == arm]
        out[arm] = {k: statistics.fmean(r[k] for r in mine) for k in keys}
        out[arm]["best_dev_uar_min"] = min(r["best_dev_uar"] for r in mine)
        out[arm]["seeds"] = len(mine)
    if "none" in out:
        base = out["none"]["children_per_hour"]
        for row in out.values():
            row["children_per_hour_vs_none"] = row["children_per_hour"] / base
    return out


def print_table(summary: dict[str, dict[str, float]]) -> None:
    head = ["arm", "seeds", "trained", "stopped", "epochs", "child/h", "vs none", "best dev"]
    print(" ".join(f"{h:>8}" for h in [*head, "worst seed", "any"]))
    for arm, row in summary.items():
        print(
            f"{arm:>8} {row['seeds']:8d} {row['trained']:8.1f} {row['stopped_early']:8.1f} "
            f"{row['epochs']:8.1f} {row['children_per_hour']:8.1f} "
            f"{row.get('children_per_hour_vs_none', float('nan')):7.2f}x "
            f"{row['best_dev_uar']:8.4f} {row['best_dev_uar_min']:10.4f} "
            f"{row['best_dev_uar_any']:8.4f}"
        )


def main() -> None:
    ray_cluster.prepare(address=None)  # loopback, as the CLI's local Ray
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=duration, default=duration("10m"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/time_budget.json"))
    args = parser.parse_args()
    load_dataset("synth-cry")  # features cached before any clock starts
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="time-budget-") as tmp:
        for seed in args.seeds:
            for arm in args.arms:
                runs.append(search(arm, seed, args.budget, Path(tmp) / f"{arm}-{seed}"))
                brief = ("best_architecture", "trials")
                print({k: v for k, v in runs[-1].items() if k not in brief}, flush=True)
                summary = summarise(runs)
                write_json(args.out, {"benchmark": "time_budget", "budget_seconds": args.budget,
                                      "summary": summary, "runs": runs})  # fmt: skip
    print_table(summary)


if __name__ == "__main__":
    main()
