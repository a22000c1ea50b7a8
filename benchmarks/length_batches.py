"""What batching utterances of similar length saves, side by side in one run.

The same children through ``train_child`` on ``synth-cry`` with the trainer's batches as
they are (shuffled pools of 16 batches, each pool sorted by length: ``POOL_BATCHES`` 16)
and as plain shuffled batches (``POOL_BATCHES`` 1: a pool is one batch, so its length
spread is a random draw). Reported: seconds per epoch (training and the dev pass) and the
share of padded steps a recurrent layer would run over. Repeats alternate the two sides,
so a drift in the machine's load touches both alike.

    python benchmarks/length_batches.py [--epochs 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

import automl.child.recipe
from automl.child.trainer import TrainConfig, train_child
from automl.data.prepare import load_dataset
from runtime.files import write_json

NETS = {
    "gru 2x128 tanh (fused)": [{"units": 128, "activation": "tanh"}] * 2,
    "gru 2x128 relu (step loop)": [{"units": 128, "activation": "relu"}] * 2,
}
SIDES = {"length pools": 16, "plain shuffle": 1}


def padding_share(lengths: torch.Tensor, pool_batches: int, batch_size: int = 32) -> float:
    """Share of (utterance, step) cells that are padding, over one epoch's batches."""
    automl.child.recipe.POOL_BATCHES = pool_batches
    generator = torch.Generator().manual_seed(0)
    batches = automl.child.recipe.length_batches(lengths, batch_size, generator)
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    return 1 - int(lengths.sum()) / padded


def seconds_per_epoch(layers: list[dict], pool_batches: int, epochs: int, dataset) -> float:
    automl.child.recipe.POOL_BATCHES = pool_batches
    arch = {"family": "rnn", "cell": "gru", "layers": layers, "epochs": epochs, "patience": 0}
    result = train_child(arch, dataset, TrainConfig(seed=0, threads=1))
    return result.train_seconds / len(result.history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/length_batches.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = load_dataset("synth-cry")
    lengths = torch.as_tensor(dataset.splits["train"].lengths)
    padding = {side: padding_share(lengths, pools) for side, pools in SIDES.items()}
    rows = []
    for net, layers in NETS.items():
        times: dict[str, list[float]] = {side: [] for side in SIDES}
        for repeat in range(args.repeats):
            order = list(SIDES) if repeat % 2 == 0 else list(reversed(SIDES))
            for side in order:
                times[side].append(seconds_per_epoch(layers, SIDES[side], args.epochs, dataset))
        row = {"net": net, **{f"{side} s/epoch": statistics.fmean(t) for side, t in times.items()}}
        row["speed-up"] = row["plain shuffle s/epoch"] / row["length pools s/epoch"]
        rows.append(row)
        print(
            f"{net:28} pools {row['length pools s/epoch']:6.2f} s/epoch, plain "
            f"{row['plain shuffle s/epoch']:6.2f} s/epoch, speed-up {row['speed-up']:.2f}x"
        )
    print("padded steps: " + ", ".join(f"{side} {share:.0%}" for side, share in padding.items()))
    write_json(args.out, {"benchmark": "length_batches", "padding_share": padding, "rows": rows})


if __name__ == "__main__":
    main()
