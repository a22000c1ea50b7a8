"""``automl baseline``: the challenge's own recipe (functionals + linear SVM), logged to MLflow
beside the experiment's searches, so every report can show what a search has to beat."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from automl.data.prepare import DataOptions
from runtime.cli import add_options, from_args, option
from runtime.errors import UserError
from runtime.files import check_writable, write_json

FEATURES = ("compare", "egemaps", "mfcc-functionals")


@dataclass(kw_only=True)
class BaselineConfig(DataOptions):
    """The corpus options every command shares, with the features the SVM reads."""

    frontend: str = field(
        default="compare",
        metadata=option(
            "compare (ComParE_2016 functionals, 6,373), egemaps (eGeMAPS functionals, 88), "
            "mfcc-functionals (no extra needed), or csv:PATH (functionals extracted before: "
            "one ';'-separated row per file, with a 'name' column)",
            flag="--features",
            metavar="FEATURES",
        ),
    )
    experiment: str = field(default="automl", metadata=option("MLflow experiment name"))
    tracking_uri: str | None = field(
        default=None,
        metadata=option("MLflow URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)"),
    )
    out: str = field(
        default="baseline", metadata=option("folder for predictions.csv and confusion.png")
    )
    json: str | None = field(default=None, metadata=option("write the result here"))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "baseline",
        help="the challenge baseline: functionals + linear SVM, complexity chosen on devel",
    )
    add_options(p, BaselineConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from automl.report import baseline, evaluate
    from runtime import tracking

    config = from_args(BaselineConfig, args)
    features = config.frontend
    if features not in FEATURES and not features.startswith("csv:"):
        raise UserError(f"--features {features!r}: choose from {list(FEATURES)} or csv:PATH")
    if config.json:
        check_writable(Path(config.json), "--json")
    uri = tracking.resolve_uri(config.tracking_uri)
    tracking.check_reachable(uri)
    tracking.check_experiment(uri, config.experiment)
    data = config.load()
    if "test" not in data.splits:
        raise UserError(f"--data {config.data}: the corpus has no test partition")
    result = baseline.run_baseline(data, features)
    files = evaluate.write_outputs(
        Path(config.out), result.predictions, result.confusion, result.classes,
        f"baseline ({features} + linear SVM, C={result.complexity:g}), test",
    )  # fmt: skip
    run_id = baseline.log_run(uri, config.experiment, config.data, result, files)
    summary = {**result.to_json(), "run_id": run_id, "predictions": str(files["predictions"])}
    if config.json:
        write_json(Path(config.json), summary)
    print(_table(result))
    if result.test_uar is None:
        print("the corpus has no test labels: no test UAR; predictions written for submission")
    else:
        recalls = ", ".join(f"{c} {r:.3f}" for c, r in result.per_class_recall.items())
        print(
            f"test UAR {result.test_uar:.4f} (C={result.complexity:g}, retrained on "
            f"train+devel); per class: {recalls}"
        )
    print(f"predictions: {files['predictions']}; MLflow run {run_id}")
    return 0


def _table(result) -> str:
    rows = [f"{'C':>8}  devel UAR"]
    for c, value in result.devel_uar.items():
        mark = "  <- chosen" if c == result.complexity else ""
        rows.append(f"{c:>8g}  {value:.4f}{mark}")
    return "\n".join(rows)
