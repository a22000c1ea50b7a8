"""Does a child train to its potential in the epochs it is given? The default recipe on a
2x128 tanh GRU (and a 2x128 ReLU GRU for speed), through the same ``train_child`` a
search uses: dev UAR after 5, 10 and 15 epochs, seconds per epoch, on synth-cry and digits.

    python benchmarks/child_recipe.py --out benchmarks/results/child_recipe.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from automl.child.trainer import TrainConfig, train_child
from automl.data.prepare import load_dataset
from runtime.files import write_json

NETS = {
    "gru 2x128 tanh": [{"units": 128, "activation": "tanh"}] * 2,
    "gru 2x128 relu": [{"units": 128, "activation": "relu"}] * 2,
}


def measure(data: str, layers: list[dict], epochs: int, seeds: list[int], extra: dict) -> dict:
    dataset = load_dataset(data)
    arch = {"family": "rnn", "cell": "gru", "layers": layers, "class_weighted": True, **extra}
    rows = []
    for seed in seeds:
        started = time.perf_counter()
        result = train_child({**arch, "epochs": epochs}, dataset, TrainConfig(seed=seed, threads=1))
        rows.append(
            {
                "seed": seed,
                "dev_uar": result.dev_uar,
                "best_epoch": result.best_epoch,
                "epochs_run": len(result.history),
                "seconds": time.perf_counter() - started,
                "seconds_per_epoch": result.train_seconds / len(result.history),
            }
        )
    return {
        "dev_uar": statistics.fmean(r["dev_uar"] for r in rows),
        "seconds_per_epoch": statistics.fmean(r["seconds_per_epoch"] for r in rows),
        "runs": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["synth-cry", "digits"])
    parser.add_argument("--epochs", type=int, nargs="+", default=[5, 10, 15])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="the seeds themselves, a list (automl evaluate and rl train "
                        "take a count)")  # fmt: skip
    parser.add_argument("--nets", nargs="+", default=list(NETS))
    parser.add_argument("--hparams", default="{}", help="JSON hyperparameters for every child")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/child_recipe.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    extra = json.loads(args.hparams)
    results = []
    for data in args.data:
        for net in args.nets:
            for epochs in args.epochs:
                row = {"data": data, "net": net, "epochs": epochs}
                row.update(measure(data, NETS[net], epochs, args.seeds, extra))
                results.append(row)
                print(
                    f"{data:10} {net:15} {epochs:3} epochs: dev UAR {row['dev_uar']:.4f}, "
                    f"{row['seconds_per_epoch']:.2f} s/epoch"
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {"benchmark": "child_recipe", "hparams": extra, "results": results})


if __name__ == "__main__":
    main()
