"""Framework overhead and worker scaling of `automl search`, measured side by side in one run.

* overhead: N children through the search (Ray local, 1 worker, MLflow SQLite, Ray start
  included) against the same N trainings run bare, one after another, in this process.
  Target: at most 10% extra wall time with children of about 10 s.
* scaling: the same search with 2 workers against 1 on this machine, as trained children
  per hour. Target: at least 1.7x.

Machine speed drifts by about 15% over minutes on a shared machine, so the runs are
ordered 2 workers, bare half, 1 worker, bare half, 2 workers: each comparison is
bracketed and a linear drift cancels. Every search starts as a user's first one would:
a new local Ray and a new SQLite tracking database.

Every child has the same architecture and a different learning rate, so all cost the
same and the comparison is not skewed by which architectures a run happened to draw.

Besides the two targets it prints where the time goes, from the children's MLflow runs:
the overhead outside training (Ray, Tune, MLflow, the searcher) against training being
slower in a worker; and scaling once children run (Ray's start and stop left out)
against how much slower a child trains with another one beside it on this machine.

    python benchmarks/search_overhead.py [--children 16] [--epochs 30]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from automl.child.trainer import TrainConfig, train_child
from automl.data.prepare import load_dataset
from runtime import ray_cluster


def write_space(folder: Path) -> Path:
    lrs = ", ".join(f"{lr:.6f}" for lr in np.geomspace(3e-4, 3e-2, 400))
    path = folder / "bench_space.yaml"
    path.write_text(
        "family: rnn\nfixed: {cell: gru, class_weighted: true}\n"
        f"choices: {{lr: [{lrs}]}}\n"
        "layers: {count: 1, min: 1, units: [64], activation: [tanh]}\n"
    )
    return path


def planned_architectures(space: Path, children: int) -> list[dict]:
    """The children a seed-0 random search of ``children`` trials will train, in order."""
    from automl.search.searchers import make_searcher
    from automl.search.space import load_space

    loaded = load_space(str(space))
    searcher = make_searcher("random", loaded, 0)
    return [loaded.to_architecture(searcher.ask().values) for _ in range(children)]


def search(space: Path, folder: Path, children: int, epochs: int, workers: int, name: str) -> dict:
    """One search as a user starts it: its own new tracking database and storage folder."""
    from automl.search.run import SearchConfig, run_search  # imports Ray: after prepare()

    config = SearchConfig(
        data="synth-cry",
        space=str(space),
        searcher="random",
        trials=children,
        epochs=epochs,
        workers=workers,
        seed=0,
        experiment=name,
        tracking_uri=f"sqlite:///{folder / f'{name}.db'}",
        storage=str(folder / name),
    )
    start = time.perf_counter()
    summary = run_search(config)
    wall = time.perf_counter() - start
    trained = [t for t in summary["trials"] if t["status"] == "done"]
    return {
        "workers": workers,
        "wall_seconds": wall,
        "trained": len(trained),
        "children_per_hour": len(trained) / wall * 3600,
        **children_as_tracked(config.tracking_uri, trained),
        "architectures": [t["architecture"] for t in trained],
    }


def children_as_tracked(uri: str, trained: list[dict]) -> dict:
    """What the children's MLflow runs say: their training time as the workers measured it
    (splits a search's overhead into time outside training and a slowdown inside it), and
    the span from the first child's start to the last one's end (throughput once running,
    without Ray's start and stop)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = [client.get_run(t["mlflow_run_id"]) for t in trained]
    span = max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)
    return {
        "child_train_seconds": sum(r.data.metrics["train_seconds"] for r in runs),
        "children_span_seconds": span / 1000,
    }


def bare(architectures: list[dict], epochs: int) -> dict:
    torch.set_num_threads(1)
    data = load_dataset("synth-cry")
    start = time.perf_counter()
    seconds = [
        train_child(a, data, TrainConfig(epochs=epochs, seed=0, threads=1)).train_seconds
        for a in architectures
    ]
    wall = time.perf_counter() - start
    return {
        "wall_seconds": wall,
        "trained": len(architectures),
        "child_train_seconds": float(np.sum(seconds)),
    }


def _train_in_process(architectures: list[dict], epochs: int) -> list[float]:
    torch.set_num_threads(1)
    data = load_dataset("synth-cry")
    config = TrainConfig(epochs=epochs, seed=0, threads=1)
    return [train_child(a, data, config).train_seconds for a in architectures]


def hardware_contention(architectures: list[dict], epochs: int) -> dict:
    """How much slower a child trains while another trains in a second plain process (no
    Ray, no MLflow): what this machine's two cores allow, whatever the framework does.
    Measured alone then two at once, back to back, so the machine's drift barely enters."""
    pool = multiprocessing.get_context("spawn")
    seconds = {}
    for processes in (1, 2):
        with pool.Pool(processes) as workers:
            runs = workers.starmap(_train_in_process, [(architectures, epochs)] * processes)
        seconds[processes] = float(np.mean([s for run in runs for s in run]))
    slowdown = seconds[2] / seconds[1] - 1
    return {
        "child_seconds_alone": seconds[1],
        "child_seconds_two_at_once": seconds[2],
        "slowdown": slowdown,
        "scaling_ceiling": 2 / (1 + slowdown),
    }


def main() -> None:
    ray_cluster.prepare(address=None)  # loopback, as the CLI's local Ray
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=30, help="about 10 s per child here")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/search_overhead.json"))
    args = parser.parse_args()
    load_dataset("synth-cry")  # features cached before any clock starts
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        space = write_space(folder)
        # Machine speed drifts over minutes (+-15% here), so every comparison is bracketed
        # and a linear drift cancels out: 2 workers, bare, 1 worker, bare, 2 workers.
        archs = planned_architectures(space, args.children)
        runs = [search(space, folder, args.children, args.epochs, 2, "two-a")]
        first = bare(archs[: len(archs) // 2], args.epochs)
        one = search(space, folder, args.children, args.epochs, 1, "one")
        second = bare(archs[len(archs) // 2 :], args.epochs)
        runs.append(search(space, folder, args.children, args.epochs, 2, "two-b"))
        hardware = hardware_contention(archs[:3], args.epochs)
        for run in (one, *runs):
            if run.pop("architectures") != archs:
                raise SystemExit("the search trained other children than planned")
    two = {
        "workers": 2,
        **{
            key: float(np.mean([r[key] for r in runs]))
            for key in ("wall_seconds", "child_train_seconds", "children_span_seconds")
        },
        "wall_seconds_each": [r["wall_seconds"] for r in runs],
        "trained": args.children,
    }
    two["children_per_hour"] = args.children / two["wall_seconds"] * 3600
    baseline = {
        "wall_seconds": first["wall_seconds"] + second["wall_seconds"],
        "trained": first["trained"] + second["trained"],
        "child_train_seconds": first["child_train_seconds"] + second["child_train_seconds"],
    }
    overhead = one["wall_seconds"] / baseline["wall_seconds"] - 1
    # The overhead in two parts: time outside the children's training (Ray, Tune, MLflow,
    # the searcher), and training itself being slower in a worker than in one process.
    outside = (one["wall_seconds"] - one["child_train_seconds"]) / baseline["wall_seconds"]
    inside = one["child_train_seconds"] / baseline["child_train_seconds"] - 1
    scaling = two["children_per_hour"] / one["children_per_hour"]
    # Scaling once the children run (Ray's start and stop left out), and how much slower
    # a child trains with another one beside it on this machine: the hardware's share.
    scaling_running = one["children_span_seconds"] / two["children_span_seconds"]
    contention = two["child_train_seconds"] / one["child_train_seconds"] - 1
    result = {
        "benchmark": "search_overhead",
        "children": args.children,
        "epochs": args.epochs,
        "bare": baseline,
        "search_1_worker": one,
        "search_2_workers": two,
        "overhead": overhead,
        "overhead_outside_training": outside,
        "training_slowdown_in_worker": inside,
        "overhead_target": 0.10,
        "scaling": scaling,
        "scaling_target": 1.7,
        "scaling_once_running": scaling_running,
        "training_slowdown_two_at_once": contention,
        "hardware": hardware,
    }
    print(
        f"bare, one process      {baseline['wall_seconds']:7.1f} s for "
        f"{baseline['trained']} children ({baseline['child_train_seconds']:.1f} s training)"
    )
    print(
        f"search, 1 worker       {one['wall_seconds']:7.1f} s for {one['trained']} children "
        f"({one['child_train_seconds']:.1f} s training)"
    )
    print(
        f"search, 2 workers      {two['wall_seconds']:7.1f} s for {two['trained']} children "
        f"(mean of {two['wall_seconds_each'][0]:.1f} s before and "
        f"{two['wall_seconds_each'][1]:.1f} s after)"
    )
    print(
        f"overhead {overhead:+.1%} (target <= +10%): {outside:+.1%} outside training, "
        f"{inside:+.1%} training slower in the worker"
    )
    print(
        f"scaling {scaling:.2f}x (target >= 1.7x); {scaling_running:.2f}x once children run "
        f"(Ray's start and stop left out); a child trains {contention:+.1%} slower with "
        "another beside it"
    )
    print(
        f"this machine, two plain processes: a child trains {hardware['slowdown']:+.1%} "
        f"slower with another beside it, so at most {hardware['scaling_ceiling']:.2f}x"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
