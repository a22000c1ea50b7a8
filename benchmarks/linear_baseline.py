"""How hard is synth-cry? Logistic regression on MFCC statistics (mean and std per coefficient).

The built-in corpus must leave room for architecture search: a linear model on
utterance-level MFCC statistics should not saturate. Prints the dev UAR for a few
regularisation strengths, balanced and unbalanced.

    python benchmarks/linear_baseline.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from automl.child.metrics import uar
from automl.data.dataset import Split
from automl.data.prepare import load_dataset


def statistics(split: Split) -> np.ndarray:
    return np.stack(
        [
            np.concatenate([split.sequence(i).mean(0), split.sequence(i).std(0)])
            for i in range(len(split))
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/linear_baseline.json"))
    args = parser.parse_args()
    data = load_dataset("synth-cry")
    x_train, x_dev = statistics(data.splits["train"]), statistics(data.splits["devel"])
    y_train, y_dev = data.splits["train"].labels, data.splits["devel"].labels
    rows = []
    for weight in (None, "balanced"):
        for c in (0.01, 0.1, 1.0, 10.0):
            model = LogisticRegression(C=c, class_weight=weight, max_iter=5000).fit(
                x_train, y_train
            )
            rows.append(
                {
                    "C": c,
                    "class_weight": weight or "none",
                    "dev_uar": uar(y_dev, model.predict(x_dev)),
                }
            )
            print(f"C={c:<6} class_weight={weight or 'none':9} dev UAR {rows[-1]['dev_uar']:.4f}")
    best = max(r["dev_uar"] for r in rows)
    print(f"best linear dev UAR {best:.4f} (chance 0.3333)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "linear_baseline",
                "data": "synth-cry",
                "rows": rows,
                "best_dev_uar": best,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
