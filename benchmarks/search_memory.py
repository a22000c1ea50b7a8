"""Peak memory (all processes) of a search with 2 workers against 1, same corpus and children.

Memory is the proportional set size (PSS) summed over the driver and every process it
started (Ray's services and workers), sampled every 0.25 s: shared pages, such as the
dataset in Ray's object store, count once in total rather than once per process.
Target: 2 workers use at most 1.5x the peak of 1 worker, i.e. features are shared,
not copied per child.

    python benchmarks/search_memory.py [--children 6] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil

from automl.data.prepare import load_dataset
from runtime import ray_cluster


class PeakMemory:
    """Samples the PSS of this process tree in a thread; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        root = psutil.Process(os.getpid())
        total = 0
        for proc in [root, *root.children(recursive=True)]:
            try:
                total += proc.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(workers: int, children: int, epochs: int, folder: Path) -> dict:
    from automl.search.run import SearchConfig, run_search  # imports Ray: after prepare()

    config = SearchConfig(
        data="synth-cry",
        space="seed_gru",
        searcher="random",
        trials=children,
        epochs=epochs,
        workers=workers,
        seed=0,
        experiment=f"memory-{workers}",
        tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
        storage=str(folder),
    )
    with PeakMemory() as memory:
        summary = run_search(config)
    return {
        "workers": workers,
        "peak_pss_mib": memory.peak / 2**20,
        "trained": sum(t["status"] == "done" for t in summary["trials"]),
    }


def main() -> None:
    ray_cluster.prepare(address=None)  # loopback, as the CLI's local Ray
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/search_memory.json"))
    args = parser.parse_args()
    data = load_dataset("synth-cry")
    feature_mib = sum(s.frames.nbytes for s in data.splits.values()) / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        one = measure(1, args.children, args.epochs, Path(tmp))
        two = measure(2, args.children, args.epochs, Path(tmp))
    ratio = two["peak_pss_mib"] / one["peak_pss_mib"]
    print(f"features {feature_mib:.1f} MiB")
    print(f"1 worker : peak {one['peak_pss_mib']:.0f} MiB (all processes)")
    print(f"2 workers: peak {two['peak_pss_mib']:.0f} MiB (all processes)")
    print(f"ratio {ratio:.2f} (target <= 1.5)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "search_memory",
                "features_mib": feature_mib,
                "one_worker": one,
                "two_workers": two,
                "ratio": ratio,
                "target": 1.5,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
