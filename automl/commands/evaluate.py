"""``automl evaluate``: a searched child under the ComParE protocol, logged to MLflow."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from runtime.cli import add_options, from_args, option, positive_int
from runtime.errors import UserError
from runtime.files import check_writable, write_json


@dataclass(kw_only=True)
class EvaluateConfig:
    """What ``automl evaluate`` takes; each option and its default written once."""

    run_id: str | None = field(default=None, metadata=option("the child's MLflow run id"))
    best: str | None = field(
        default=None, metadata=option("or: the best finished child of this experiment")
    )
    seeds: int = field(
        default=5, metadata=option("seeds to retrain with (mean and std)", type=positive_int)
    )
    tracking_uri: str | None = field(
        default=None, metadata=option("MLflow URI (default: as automl search)")
    )
    data: str | None = field(
        default=None, metadata=option("the corpus (default: the one the child's search used)")
    )
    device: str = field(default="auto", metadata=option("auto (CUDA if visible), cpu, cuda"))
    out: str = field(
        default="evaluation", metadata=option("folder for predictions.csv and confusion.png")
    )
    register: str | None = field(
        default=None, metadata=option("register the model in MLflow's Model Registry as NAME")
    )
    json: str | None = field(default=None, metadata=option("write the result here"))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="retrain a searched child on train+devel and score it on test"
    )
    add_options(p, EvaluateConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from automl.data.prepare import load_dataset
    from automl.report import baseline, evaluate
    from runtime import tracking

    config = from_args(EvaluateConfig, args)
    if (config.run_id is None) == (config.best is None):
        raise UserError("give one of --run-id ID or --best EXPERIMENT")
    if config.json:
        check_writable(Path(config.json), "--json")
    uri = tracking.resolve_uri(config.tracking_uri)
    tracking.check_reachable(uri)
    child = evaluate.find_child(uri, config.run_id, config.best)
    data = load_dataset(
        config.data or child.data, child.frontend, child.task, max_seconds=child.max_seconds
    )
    result = evaluate.evaluate(child, data, config.seeds, config.device)
    files = evaluate.write_files(result, Path(config.out))
    eval_run = evaluate.log_run(uri, child, result, config.seeds, files)
    model_uri = evaluate.log_model(uri, eval_run, child, result)
    summary = evaluate.summary(child, result, eval_run, files, model_uri)
    if config.register:
        summary["registered"] = evaluate.register(uri, model_uri, config.register, summary)
    if config.json:
        write_json(Path(config.json), summary)
    if result.labelled:
        print(
            f"test UAR {summary['test_uar_mean']:.4f} +- {summary['test_uar_std']:.4f} "
            f"({config.seeds} seeds, train+devel, epoch {child.epochs} of "
            f"{child.architecture['hparams']['epochs']} under its "
            f"{child.architecture['hparams']['schedule']} schedule); per class: "
            + ", ".join(f"{c} {r:.3f}" for c, r in result.per_class_recall.items())
        )
        for found in baseline.latest(uri, child.experiment_id):
            print(f"beside it: {found.describe()}")
    else:
        print("the corpus has no test labels: no test UAR; predictions written for submission")
    print(f"predictions: {files['predictions']}; MLflow run {eval_run}")
    return 0
