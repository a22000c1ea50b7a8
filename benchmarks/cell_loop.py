"""The step loop of in-cell ReLU/sigmoid GRU layers against a plain one and the fused kernel.

A child's in-cell ReLU/sigmoid layers run a Python step loop (no fused kernel takes
another activation). Side by side on one thread, forward + backward of one layer:

- ``plain``: the loop as first written (``x[:, t]`` per step, a mask per step, the gates
  one by one), kept here as the reference;
- ``ours``: :class:`automl.child.rnn.ActivationCell` (``unbind``, fused gates, ``lerp``, no
  per-step mask);
- ``fused``: ``nn.GRU`` (tanh only), what a tanh layer runs on.

    python benchmarks/cell_loop.py
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import torch
from torch import nn

from automl.child.rnn import ActivationCell


def plain_loop(cell: ActivationCell, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The first step loop: index each step, mask each step, every gate on its own."""
    projected = cell.input_proj(x)
    h = x.new_zeros(x.shape[0], cell.units)
    outputs = []
    for t in range(x.shape[1]):
        gi, gh = projected[:, t], cell.hidden_proj(h)
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        reset, update = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        h_new = (1 - update) * torch.relu(i_n + reset * h_n) + update * h
        h = torch.where(mask[:, t, None], h_new, h)
        outputs.append(h)
    return torch.stack(outputs, dim=1)


def timed(step, repeats: int) -> float:
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--units", type=int, default=200)
    parser.add_argument("--features", type=int, default=39)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cell_loop.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cell = ActivationCell("gru", args.features, args.units, "relu")
    fused = nn.GRU(args.features, args.units, batch_first=True)
    rows = []
    print(f"{'steps':>6} {'plain ms':>9} {'ours ms':>8} {'fused ms':>9} {'plain/ours':>11}")
    for steps in (42, 85, 170, 250):  # 2.5 s / 5 s of 20-ms frames, stacked by 3 or not
        x = torch.randn(args.batch, steps, args.features)
        lengths = torch.full((args.batch,), steps)
        mask = torch.ones(args.batch, steps, dtype=torch.bool)
        runs = {
            "plain_ms": partial(lambda x, m: plain_loop(cell, x, m).sum().backward(), x, mask),
            "ours_ms": partial(lambda x, n: cell(x, n)[0].sum().backward(), x, lengths),
            "fused_ms": partial(lambda x: fused(x)[0].sum().backward(), x),
        }
        row = {"steps": steps, **{k: timed(run, args.repeats) for k, run in runs.items()}}
        rows.append(row)
        print(f"{steps:>6} {row['plain_ms']:>9.1f} {row['ours_ms']:>8.1f} {row['fused_ms']:>9.1f}"
              f" {row['plain_ms'] / row['ours_ms']:>10.2f}x")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    args.out.write_text(json.dumps({"benchmark": "cell_loop", "settings": settings,
                                    "rows": rows}, indent=2) + "\n")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
