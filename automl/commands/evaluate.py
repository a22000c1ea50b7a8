"""``automl evaluate``: a searched child under the ComParE protocol, logged to MLflow."""

from __future__ import annotations

import argparse
import csv
import io
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.cli import add_options, from_args, option, positive_int
from runtime.errors import UserError
from runtime.files import atomic_write, check_writable, write_json


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
    from automl.report import evaluate
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
    folder = Path(config.out)
    files = _write_files(result, folder)
    eval_run = _log(uri, child, result, config.seeds, files)
    model_uri = _log_model(uri, eval_run, child, result)
    summary = _summary(child, result, eval_run, files, model_uri)
    if config.register:
        summary["registered"] = _register(uri, model_uri, config.register, summary)
    if config.json:
        write_json(Path(config.json), summary)
    if result.labelled:
        print(
            f"test UAR {summary['test_uar_mean']:.4f} +- {summary['test_uar_std']:.4f} "
            f"({config.seeds} seeds, train+devel, {child.epochs} epochs); per class: "
            + ", ".join(f"{c} {r:.3f}" for c, r in result.per_class_recall.items())
        )
    else:
        print("the corpus has no test labels: no test UAR; predictions written for submission")
    print(f"predictions: {files['predictions']}; MLflow run {eval_run}")
    return 0


def _write_files(result: Any, folder: Path) -> dict[str, Path]:
    from automl.report.evaluate import confusion_png

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {folder}: cannot make this folder ({exc})") from None
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["file_name", "prediction"])  # ComParE's submission columns
    writer.writerows(result.predictions)
    files = {"predictions": folder / "predictions.csv"}
    atomic_write(files["predictions"], lambda handle: handle.write(text.getvalue().encode()))
    if result.labelled:
        files["confusion"] = confusion_png(result, folder / "confusion.png")
    return files


def _log(uri: str, child: Any, result: Any, seeds: int, files: dict[str, Path]) -> str:
    """An evaluation run beside the child (tagged both ways), with its metrics and files."""
    from automl.report.evaluate import EVALUATES_TAG, EVALUATION_TAG
    from runtime import tracking

    client = tracking.client(uri)
    tags = {EVALUATES_TAG: child.run_id, "automl.role": "evaluation"}
    run = client.create_run(child.experiment_id, run_name=f"evaluate-{child.run_id[:8]}", tags=tags)
    run_id = run.info.run_id
    client.log_param(run_id, "seeds", seeds)
    client.log_param(run_id, "epochs", child.epochs)
    if result.labelled:
        client.log_metric(run_id, "test_uar_mean", statistics.fmean(result.test_uars))
        client.log_metric(run_id, "test_uar_std", _std(result.test_uars))
        for name, recall in result.per_class_recall.items():
            client.log_metric(run_id, f"recall/{name}", recall)
    for path in files.values():
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED")
    client.set_tag(child.run_id, EVALUATION_TAG, run_id)
    return run_id


def _log_model(uri: str, run_id: str, child: Any, result: Any) -> str:
    """Seed 0's model as an MLflow model (see :mod:`automl.ship.bundle`); returns its URI."""
    import mlflow

    from automl.ship import bundle
    from runtime import tracking

    meta = bundle.ModelMeta(
        child.architecture, result.classes, result.norm_mean, result.norm_std,
        child.frontend, child.max_seconds, child.data,
    )  # fmt: skip
    with tracking.using(uri), mlflow.start_run(run_id=run_id):
        model_uri = bundle.log_model(meta, result.state_dict, result.example)
    tracking.client(uri).set_tag(run_id, bundle.MODEL_URI_TAG, model_uri)
    return model_uri


def _register(uri: str, model_uri: str, name: str, summary: dict[str, Any]) -> dict[str, Any]:
    """A new version of ``name`` in the Model Registry, tagged with its test UAR."""
    import mlflow

    from runtime import tracking

    with tracking.using(uri):
        version = mlflow.register_model(model_uri, name)
    client = tracking.client(uri)
    for key in ("test_uar_mean", "test_uar_std", "child_run_id"):
        if summary[key] is not None:
            client.set_model_version_tag(name, version.version, key, str(summary[key]))
    return {"name": name, "version": int(version.version)}


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _summary(
    child: Any, result: Any, eval_run: str, files: dict[str, Path], model_uri: str
) -> dict[str, Any]:
    labelled = result.labelled
    return {
        "child_run_id": child.run_id,
        "evaluation_run_id": eval_run,
        "epochs": child.epochs,
        "test_uar_mean": statistics.fmean(result.test_uars) if labelled else None,
        "test_uar_std": _std(result.test_uars) if labelled else None,
        "test_uars": result.test_uars,
        "per_class_recall": result.per_class_recall,
        "predictions": str(files["predictions"]),
        "model_uri": model_uri,
    }
