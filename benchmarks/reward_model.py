"""Which reward model the searchers should plan against, measured on the tabular benchmarks.

For ``n`` children drawn at random from a table (each scored by one of its trained seeds,
the noise a search meets), every model kind of ``automl.search.searchers.model`` is
fitted and asked about all the other children: the Spearman correlation of its mean
with the table's mean dev UAR, the table's mean dev UAR of the child it ranks first
(optimistically: mean + std, as the searchers' acquisition does), the correlation of its
spread with its error (does it know what it does not know), and its fit seconds.

    python benchmarks/reward_model.py benchmarks/data/digits_gru.json benchmarks/data/synth_cnn.json
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nas_table import Table, _spearman

from automl.child import arch_key
from automl.search.searchers.model import Encoding, make_model
from automl.search.space import SearchSpace, load_space
from runtime.files import write_json

KINDS = ("gp", "ensemble", "forest")


def table_values(space: SearchSpace, table: Table) -> list[dict[str, Any]]:
    """One assignment of the space's decisions per table child, in the table's order."""
    names = [d.name for d in space.decisions]
    by_key: dict[str, dict[str, Any]] = {}
    for combo in itertools.product(*(d.choices for d in space.decisions)):
        values = dict(zip(names, combo, strict=True))
        by_key.setdefault(arch_key(space.to_architecture(values)), values)
    return [by_key[k] for k in table.keys]


def measure(path: Path, sizes: list[int], repeats: int) -> dict[str, Any]:
    import json

    table = Table.load(path)
    space = load_space(json.loads(path.read_text())["space"])
    x = Encoding(space)(table_values(space, table))
    truth = table.dev.mean(1)
    rows: dict[str, Any] = {}
    for kind, n in itertools.product(KINDS, sizes):
        cells: dict[str, list[float]] = {k: [] for k in ("spearman", "pick", "spread", "seconds")}
        for r in range(repeats):
            rng = np.random.default_rng([r, n])
            seen = rng.choice(len(truth), size=n, replace=False)
            rest = np.setdiff1d(np.arange(len(truth)), seen)
            y = table.dev[seen, rng.integers(table.dev.shape[1], size=n)]
            model = make_model(kind)
            started = time.perf_counter()
            model.fit(x[seen], y.astype(np.float64), np.zeros(n, bool), seed=r)
            cells["seconds"].append(time.perf_counter() - started)
            mean, std = model.predict(x[rest])
            cells["spearman"].append(_spearman(mean, truth[rest]))
            cells["pick"].append(float(truth[rest][np.argmax(mean + std)]))
            cells["spread"].append(_spearman(std, np.abs(mean - truth[rest])))
        rows[f"{kind}@{n}"] = {"kind": kind, "n": n} | {
            k: float(np.mean(v)) for k, v in cells.items()
        }
    return {"table": str(path), "best_dev": float(truth.max()), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", type=Path, nargs="+")
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 300])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/reward_model.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = [measure(t, args.sizes, args.repeats) for t in args.tables]
    for result in results:
        print(f"{result['table']} (best mean dev UAR {result['best_dev']:.4f})")
        print(
            f"{'model':>10} {'n':>5} {'spearman':>9} {'pick':>7} {'spread~error':>13} {'fit s':>7}"
        )
        for row in result["rows"].values():
            print(
                f"{row['kind']:>10} {row['n']:5d} {row['spearman']:9.3f} {row['pick']:7.4f} "
                f"{row['spread']:13.3f} {row['seconds']:7.3f}"
            )
    write_json(args.out, {"benchmark": "reward_model", "repeats": args.repeats, "results": results})
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
