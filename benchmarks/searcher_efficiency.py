"""How fast each searcher finds good children, replayed on a tabular benchmark.

Every searcher runs real searches through the project's own ``SearchLoop`` (duplicates,
budget and asynchrony as in ``automl search``), but training a child is a lookup in a
table built by ``benchmarks/nas_table.py``: one of the child's trained seeds, drawn at
random (the noise a real search meets), returned after the table's training seconds on
a simulated clock, so with ``--workers 4`` results come back in the order real children
would finish. A 100-child search costs milliseconds to seconds.

Per searcher and concurrency, over ``--seeds`` searches: the mean best-so-far curve (the
table's mean test UAR of the child with the best dev UAR found so far) with a 95%
interval; the mean number of children to reach random search's mean best at the full
budget; the share of searches that trained a top-1% child (by the table's mean dev UAR).
Writes JSON and a PNG plot under ``benchmarks/results/``. A searcher may be given with
options, as a variant of its own: ``reinforce:model=none`` (the controller without its
reward model). ``--timing`` adds each searcher's own seconds per child (ask + tell) over
children 250-300 of one 300-child search, one thread (``--timing-only``: that alone, to
``searcher_timing_TABLE.json``, best run on an otherwise idle machine).

    python benchmarks/searcher_efficiency.py benchmarks/data/digits_gru.json --seeds 30 \
        --searchers random evolution tpe local reinforce reinforce:model=none --timing
"""

from __future__ import annotations

import argparse
import heapq
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nas_table import Table

from automl.child import arch_key
from automl.search.ledger import SearchLoop
from automl.search.searchers import SEARCHERS, make_searcher
from automl.search.space import load_space
from runtime.files import write_json

_TABLES: dict[str, tuple[Table, Any]] = {}


def _table(path: str) -> tuple[Table, Any]:
    if path not in _TABLES:
        torch.set_num_threads(1)  # one per process: pool processes must not oversubscribe
        table = Table.load(Path(path))
        _TABLES[path] = (table, load_space(json.loads(Path(path).read_text())["space"]))
    return _TABLES[path]


def variant(label: str) -> tuple[str, dict[str, Any]]:
    """``"reinforce:model=none,warmup=5"`` -> ("reinforce", {"model": "none", "warmup": 5})."""
    name, _, rest = label.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return name, options


def replay(job: tuple[str, str, int, int, int, dict[str, Any]]) -> dict[str, Any]:
    """One search of ``budget`` children with ``workers`` in flight; its best-so-far curve."""
    path, label, seed, workers, budget, extra = job
    name, options = variant(label)
    options = {**extra, **options}
    table, space = _table(path)
    index = {k: i for i, k in enumerate(table.keys)}
    dev_mean, test_mean = table.dev.mean(1), table.test.mean(1)
    top1 = np.quantile(dev_mean, 0.99)
    loop = SearchLoop(make_searcher(name, space, seed, **options), space, budget, ("table",))
    rng = np.random.default_rng([seed, workers, 2018])
    running: list[tuple[float, int, int, float]] = []
    clock, best_dev, best_test, curve, found_top = 0.0, -np.inf, np.nan, [], False
    started = time.perf_counter()
    while True:
        while len(running) < workers and (record := loop.next_child()) is not None:
            i = index[arch_key(record.architecture)]
            s = rng.integers(table.dev.shape[1])
            heapq.heappush(running, (clock + table.seconds[i, s], record.trial, i, table.dev[i, s]))
        if not running:
            break
        clock, trial, i, dev = heapq.heappop(running)
        loop.child_finished(trial, float(dev), 0.0)
        if dev > best_dev:
            best_dev, best_test = dev, test_mean[i]
        curve.append(best_test)
        found_top = found_top or dev_mean[i] >= top1
    curve += [curve[-1]] * (budget - len(curve))  # a converged search keeps its best
    return {
        "searcher": label,
        "seed": seed,
        "workers": workers,
        "curve": curve,
        "found_top1": found_top,
        "cached": loop.cached,
        "converged": loop.converged,
        "seconds": time.perf_counter() - started,
    }


def per_child_seconds(path: str, label: str, children: int = 300, last: int = 50) -> float:
    """The searcher's own seconds per child (ask and tell) over the last ``last`` of
    ``children`` told one at a time, rewards from the table."""
    table, space = _table(path)
    index = {k: i for i, k in enumerate(table.keys)}
    name, options = variant(label)
    searcher = make_searcher(name, space, 0, **options)
    searcher.set_budget(children)
    spent = 0.0
    for n in range(children):
        started = time.perf_counter()
        proposal = searcher.ask()
        asked = time.perf_counter()
        reward = float(table.dev[index[arch_key(space.to_architecture(proposal.values))], 0])
        resumed = time.perf_counter()
        searcher.tell(proposal.id, reward)
        if n >= children - last:
            spent += (asked - started) + (time.perf_counter() - resumed)
    return spent / last


def summarise(runs: list[dict[str, Any]], budget: int) -> dict[str, Any]:
    """Per (searcher, workers): mean curve with 95% interval, children to reach random's best."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["searcher"], run["workers"]), []).append(run)
    out: dict[str, Any] = {}
    for (name, workers), group in sorted(groups.items()):
        curves = np.array([r["curve"] for r in group])
        half = 1.96 * curves.std(0, ddof=1) / np.sqrt(len(curves))
        out[f"{name}@{workers}"] = {
            "searcher": name,
            "workers": workers,
            "seeds": len(group),
            "mean": curves.mean(0).tolist(),
            "ci95": half.tolist(),
            "found_top1_share": float(np.mean([r["found_top1"] for r in group])),
            "cached_mean": float(np.mean([r["cached"] for r in group])),
            "seconds_mean": float(np.mean([r["seconds"] for r in group])),
            "_curves": curves,
        }
    for row in out.values():
        target = out[f"random@{row['workers']}"]["mean"][budget - 1]
        reached = [int(np.argmax(c >= target)) + 1 if (c >= target).any() else None
                   for c in row.pop("_curves")]  # fmt: skip
        row["random_best_at_budget"] = target
        row["reached_random_best_share"] = float(np.mean([r is not None for r in reached]))
        row["children_to_random_best"] = float(np.mean([r or budget for r in reached]))
    return out


def print_table(summary: dict[str, Any], budget: int) -> None:
    marks = [m for m in (25, 50, budget) if m <= budget]
    head = " ".join(f"{'best@' + str(m):>15}" for m in marks)
    print(
        f"{'searcher':>22} {'workers':>7} {head} {'to random':>10} {'reach':>6} {'top1%':>6} "
        f"{'s/child@300':>11}"
    )
    for row in summary.values():
        cells = " ".join(
            f"{row['mean'][m - 1]:.4f}+-{row['ci95'][m - 1]:.4f}".rjust(15) for m in marks
        )
        timing = row["seconds_per_child_at_300"]
        print(
            f"{row['searcher']:>22} {row['workers']:>7} {cells} "
            f"{row['children_to_random_best']:10.1f} {row['reached_random_best_share']:6.0%} "
            f"{row['found_top1_share']:6.0%} {'' if timing is None else f'{timing:.3f}':>11}"
        )


def plot(summary: dict[str, Any], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workers = sorted({row["workers"] for row in summary.values()})
    fig, axes = plt.subplots(1, len(workers), figsize=(6 * len(workers), 4.5), squeeze=False)
    for ax, w in zip(axes[0], workers, strict=True):
        for row in summary.values():
            if row["workers"] != w:
                continue
            mean, half = np.array(row["mean"]), np.array(row["ci95"])
            x = np.arange(1, len(mean) + 1)
            ax.plot(x, mean, label=row["searcher"])
            ax.fill_between(x, mean - half, mean + half, alpha=0.2)
        ax.set_title(f"{title}: {w} in flight")
        ax.set_xlabel("children trained")
        ax.set_ylabel("test UAR of the best-dev child so far")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def time_only(table: Path, names: list[str], processes: int, out: Path | None) -> None:
    """Each searcher's own seconds per child at 300 children, one per process and core."""
    with ProcessPoolExecutor(processes) as pool:
        seconds = dict(zip(names, pool.map(per_child_seconds, [str(table)] * len(names), names),
                           strict=True))  # fmt: skip
    for name, value in seconds.items():
        print(f"{name:>22} {value:.3f} s per child (ask + tell) over children 250-300")
    out = out or Path("benchmarks/results") / f"searcher_timing_{_table(str(table))[0].name}.json"
    write_json(out, {"benchmark": "searcher_timing", "table": str(table), "children": 300,
                     "seconds_per_child": seconds})  # fmt: skip
    print(f"written to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", type=Path)
    parser.add_argument("--searchers", nargs="+", default=list(SEARCHERS))
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument(
        "--opt", action="append", default=[], metavar="SEARCHER:KEY=VALUE",
        help="a searcher option, e.g. qlearning:alpha=0.2 (for ablations)",
    )  # fmt: skip
    parser.add_argument("--timing", action="store_true", help="seconds per child at 300")
    parser.add_argument(
        "--timing-only", action="store_true",
        help="only the seconds per child at 300 (searcher_timing_TABLE.json)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="JSON path (default: benchmarks/results/...)")
    args = parser.parse_args()
    options: dict[str, dict[str, Any]] = {}
    for item in args.opt:
        name, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        options.setdefault(name, {})[key] = json.loads(value)
    names = ["random", *(n for n in args.searchers if n != "random")]
    jobs = [
        (str(args.table), name, seed, w, args.budget, options.get(variant(name)[0], {}))
        for name in names
        for w in args.workers
        for seed in range(args.seeds)
    ]
    started = time.time()
    if args.timing_only:
        return time_only(args.table, names, args.processes, args.out)
    with ProcessPoolExecutor(args.processes) as pool:
        runs = list(pool.map(replay, jobs, chunksize=4))
        timed = names if args.timing else []
        seconds = pool.map(per_child_seconds, [str(args.table)] * len(timed), timed)
        timing = dict(zip(timed, seconds, strict=True))
    summary = summarise(runs, args.budget)
    for row in summary.values():
        row["seconds_per_child_at_300"] = timing.get(row["searcher"])
    table, _ = _table(str(args.table))
    print(f"{table.name}: {table.summary()}")
    print_table(summary, args.budget)
    out = args.out or Path("benchmarks/results") / f"searcher_efficiency_{table.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "searcher_efficiency",
        "table": str(args.table),
        "table_summary": table.summary(),
        "budget": args.budget,
        "options": options,
        "wall_seconds": time.time() - started,
        "results": summary,
    }
    write_json(out, result)
    plot(summary, out.with_suffix(".png"), table.name)
    print(f"written to {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
