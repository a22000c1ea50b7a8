"""A tabular architecture-search benchmark of the project's own (as NAS-Bench-101/201 are).

``build`` trains, once, every distinct architecture of a space small enough to enumerate,
with several seeds, and writes each child's dev and test UAR, training seconds and
parameter count to a JSON file (committed under ``benchmarks/data/``, with the command
that made it). ``benchmarks/searcher_efficiency.py`` then replays searches on it: a
child's "training" is a lookup, so a 100-child search costs milliseconds.

    python benchmarks/nas_table.py build --space benchmarks/spaces/digits_gru.yaml \\
        --data digits --seeds 0 1 --workers 2 --out benchmarks/data/digits_gru.json

A killed build continues where it stopped (the output is rewritten atomically as it goes).
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from automl.child import arch_key, normalize
from automl.child.arch import HPARAM_DEFAULTS
from automl.search.space import SearchSpace, load_space
from runtime.files import write_json


def distinct_architectures(space: SearchSpace) -> dict[str, dict[str, Any]]:
    """Every distinct child of the space (assignments that build the same network collapse)."""
    names = [d.name for d in space.decisions]
    found: dict[str, dict[str, Any]] = {}
    for combo in itertools.product(*(d.choices for d in space.decisions)):
        arch = space.to_architecture(dict(zip(names, combo, strict=True)))
        found.setdefault(arch_key(arch), arch)
    return found


_DATA: dict[str, Any] = {}


def _train(job: tuple[str, str, dict[str, Any], int]) -> dict[str, Any]:
    """In a worker process: train one (architecture, seed), score it on dev and test."""
    import torch

    from automl.child.trainer import TrainConfig, split_uar, train_child
    from automl.data.prepare import load_dataset

    data_name, key, arch, seed = job
    if data_name not in _DATA:
        torch.set_num_threads(1)
        _DATA[data_name] = load_dataset(data_name)
    data = _DATA[data_name]
    result = train_child(arch, data, TrainConfig(seed=seed, threads=1))
    return {
        "key": key,
        "seed": seed,
        "dev_uar": result.dev_uar,
        "test_uar": split_uar(result.architecture, result.state_dict, data, "test"),
        "train_seconds": result.train_seconds,
        "best_epoch": result.best_epoch,
        "n_params": result.n_params,
    }


def build(args: argparse.Namespace) -> None:
    space = load_space(args.space)
    archs = distinct_architectures(space)
    table = _read(args.out) if args.out.is_file() else _new_table(args, space)
    done = {(c["key"], s) for c in table["children"].values() for s in c["seeds"]}
    jobs = [
        (args.data, key, arch, seed)
        for key, arch in archs.items()
        for seed in args.seeds
        if (key, seed) not in done
    ]
    print(f"{len(archs)} distinct children x {len(args.seeds)} seeds; {len(jobs)} to train")
    start = time.time()
    with ProcessPoolExecutor(args.workers) as pool:
        for i, row in enumerate(pool.map(_train, jobs, chunksize=4), start=1):
            _add(table, archs, row)
            if i % 100 == 0 or i == len(jobs):
                write_json(args.out, table)
                rate = i / (time.time() - start)
                print(f"{i}/{len(jobs)} trained, {rate:.2f}/s, ETA {(len(jobs) - i) / rate:.0f} s")
    write_json(args.out, table)


def export_env(args: argparse.Namespace) -> None:
    """The table as ``rl``'s ArchitectureSearch-v0 reads it: every assignment of the space's
    decisions (skipped ones 0) -> the child's mean dev UAR, so ``rl train`` can learn on it."""
    from automl.search.searchers.episodes import architecture_env

    raw = _read(args.table)
    space = load_space(raw["space"])
    env = architecture_env(space, "history")
    mean_dev = {k: float(np.mean(c["dev_uar"])) for k, c in raw["children"].items()}
    rewards = {}
    for combo in itertools.product(*(range(n) for n in env.sizes)):
        choices: list[int] = []
        for t, c in enumerate(combo):
            choices.append(c if env.active(t, choices) else 0)
        arch = space.to_architecture(space.values_from_indices(choices))
        rewards[",".join(map(str, choices))] = mean_dev[arch_key(arch)]
    write_json(args.out, {"sizes": env.sizes, "gates": env.gates, "rewards": rewards})
    print(f"{len(rewards)} assignments written to {args.out}")


def _new_table(args: argparse.Namespace, space: SearchSpace) -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "benchmark": space.name,
        "space": str(args.space),
        "space_description": space.describe(),
        "data": args.data,
        "seeds": args.seeds,
        "command": "python " + " ".join(sys.argv),
        "code_version": commit,
        "created": time.strftime("%Y-%m-%d"),
        "children": {},
    }


def _add(table: dict[str, Any], archs: dict[str, dict[str, Any]], row: dict[str, Any]) -> None:
    child = table["children"].setdefault(
        row["key"],
        {"key": row["key"], "architecture": archs[row["key"]], "n_params": row["n_params"]}
        | {k: [] for k in ("seeds", "dev_uar", "test_uar", "train_seconds", "best_epoch")},
    )
    for k in ("dev_uar", "test_uar", "train_seconds", "best_epoch"):
        child[k].append(row[k])
    child["seeds"].append(row["seed"])


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@dataclass
class Table:
    """A built table in the form replays need: per child key, arrays over seeds."""

    name: str
    keys: list[str]
    dev: np.ndarray  # [children, seeds]
    test: np.ndarray
    seconds: np.ndarray

    @classmethod
    def load(cls, path: Path) -> Table:
        raw = _read(path)
        space = load_space(raw["space"])
        children = sorted(raw["children"].values(), key=lambda c: c["key"])
        n = min(len(c["seeds"]) for c in children)

        def column(name: str) -> np.ndarray:
            return np.array([c[name][:n] for c in children])

        keys = [arch_key(_as_built(c["architecture"], space)) for c in children]
        return cls(
            raw["benchmark"], keys, column("dev_uar"), column("test_uar"), column("train_seconds")
        )

    def summary(self) -> dict[str, float]:
        dev, test = self.dev.mean(1), self.test.mean(1)
        return {
            "children": len(self.keys),
            "seeds": self.dev.shape[1],
            "dev_mean": float(dev.mean()),
            "dev_best": float(dev.max()),
            "dev_top1pct": float(np.quantile(dev, 0.99)),
            "test_of_best_dev": float(test[dev.argmax()]),
            "dev_test_spearman": float(_spearman(dev, test)),
            "seed_noise_dev_std": float(self.dev.std(1, ddof=1).mean()),
        }


def _as_built(arch: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
    """A stored architecture in this code's canonical form: fields it lacks (the format
    grew since the table was built) take the values its space file pins, which are the
    ones the table was built with, so it keys like the space's own children."""
    pinned = {k: v for k, v in space.fixed.items() if k not in arch}
    hparams = {**{k: v for k, v in pinned.items() if k in HPARAM_DEFAULTS}, **arch["hparams"]}
    fields = {k: v for k, v in pinned.items() if k not in HPARAM_DEFAULTS}
    return normalize({**arch, **fields, "hparams": hparams})


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = a.argsort().argsort(), b.argsort().argsort()
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="train every child of a space and write the table")
    b.add_argument("--space", type=Path, required=True)
    b.add_argument("--data", required=True)
    b.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                   help="the seeds themselves, a list (automl evaluate and rl train take a "
                   "count)")  # fmt: skip
    b.add_argument("--workers", type=int, default=2)
    b.add_argument("--out", type=Path, required=True)
    b.set_defaults(func=build)
    e = sub.add_parser("export-env", help="write the table for rl's ArchitectureSearch-v0")
    e.add_argument("--table", type=Path, required=True)
    e.add_argument("--out", type=Path, required=True)
    e.set_defaults(func=export_env)
    s = sub.add_parser("summary", help="print a built table's spread and noise")
    s.add_argument("table", type=Path)
    s.set_defaults(func=lambda a: print(json.dumps(Table.load(a.table).summary(), indent=2)))
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
