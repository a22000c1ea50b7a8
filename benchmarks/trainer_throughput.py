"""The trainer's samples/s against a minimal plain-PyTorch loop, same model and data, one run.

Both sides do the same work per epoch: shuffled mini-batches on train (forward,
backward, gradient clipping, Adam step) and a forward pass over the devel set. The
trainer adds what the product needs (best-epoch weights, UAR, history, latency); the
target is that this costs under 10% (ratio >= 0.9). Repeats alternate the two sides
so drift in machine load hits both.

    python benchmarks/trainer_throughput.py [--repeats 3] [--epochs 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from automl.child import build_model, normalize
from automl.child.trainer import Padded, TrainConfig, train_child
from automl.data.prepare import load_dataset

ARCHS = {
    "gru-tanh (fused)": {
        "family": "rnn",
        "cell": "gru",
        "layers": [{"units": 64, "activation": "tanh"}],
    },
    "gru-relu (step loop)": {
        "family": "rnn",
        "cell": "gru",
        "layers": [{"units": 64, "activation": "relu"}],
    },
    "cnn": {
        "family": "cnn",
        "blocks": [{"filters": 32, "kernel": 5}, {"filters": 32, "kernel": 3}],
        "dense": [32],
    },
}


def plain_loop(arch: dict, data, epochs: int, seed: int) -> float:
    """The minimal loop a researcher would write; returns wall seconds."""
    torch.manual_seed(seed)
    train, dev = Padded.from_split(data.splits["train"]), Padded.from_split(data.splits["devel"])
    model = build_model(arch, data.n_features, data.n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=arch["hparams"]["lr"])
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(train.labels), generator=gen).split(
            arch["hparams"]["batch_size"]
        ):
            x, lengths, y = train.batch(idx, torch.device("cpu"))
            loss = loss_fn(model(x, lengths), y)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), arch["hparams"]["grad_clip"])
            opt.step()
        model.eval()
        with torch.no_grad():
            for idx in torch.arange(len(dev.labels)).split(256):
                x, lengths, _ = dev.batch(idx, torch.device("cpu"))
                model(x, lengths).argmax(-1)
    return time.perf_counter() - start


def trainer(arch: dict, data, epochs: int, seed: int) -> float:
    start = time.perf_counter()
    train_child(arch, data, TrainConfig(epochs=epochs, seed=seed))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/trainer_throughput.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("synth-cry")
    samples = len(data.splits["train"]) * args.epochs
    rows = []
    for name, raw in ARCHS.items():
        arch = normalize(raw)
        plain_loop(arch, data, 1, 0)  # warm-up: allocator, kernels
        plain_s, trainer_s = [], []
        for r in range(args.repeats):
            plain_s.append(plain_loop(arch, data, args.epochs, r))
            trainer_s.append(trainer(arch, data, args.epochs, r))
        plain, ours = statistics.median(plain_s), statistics.median(trainer_s)
        rows.append(
            {
                "model": name,
                "plain_samples_per_s": samples / plain,
                "trainer_samples_per_s": samples / ours,
                "ratio": plain / ours,
            }
        )
    print(f"{'model':24} {'plain/s':>10} {'trainer/s':>10} {'ratio':>7}")
    for row in rows:
        print(
            f"{row['model']:24} {row['plain_samples_per_s']:10.0f} "
            f"{row['trainer_samples_per_s']:10.0f} {row['ratio']:7.3f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "trainer_throughput",
        "data": "synth-cry",
        "epochs": args.epochs,
        "threads": args.threads,
        "repeats": args.repeats,
        "rows": rows,
        "min_ratio": min(r["ratio"] for r in rows),
        "target": 0.9,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"min ratio {result['min_ratio']:.3f} (target >= 0.9); written to {args.out}")


if __name__ == "__main__":
    main()
