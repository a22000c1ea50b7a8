"""``automl evaluate``: a searched child under the ComParE protocol, logged to MLflow."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from automl.child.trainer import device_option
from runtime.cli import add_options, from_args, option, positive_int
from runtime.errors import UserError
from runtime.files import check_writable, write_json


def err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(kw_only=True)
class EvaluateConfig:
    """What ``automl evaluate`` takes; each option and its default written once."""

    run_id: list[str] = field(
        default_factory=list,
        metadata=option(
            "the child's MLflow run id; repeated: fuse those children", action="append"
        ),
    )
    best: str | None = field(
        default=None, metadata=option("or: the best finished child of this experiment")
    )
    fuse: int | None = field(
        default=None,
        metadata=option(
            "with --best: fuse its K best finished children (mean class probabilities; "
            "they share the best one's frontend), each retrained as one child is",
            type=positive_int, metavar="K",
        ),
    )  # fmt: skip
    seeds: int = field(
        default=5, metadata=option("seeds to retrain with (mean and std)", type=positive_int)
    )
    tracking_uri: str | None = field(
        default=None, metadata=option("MLflow URI (default: as automl search)")
    )
    data: str | None = field(
        default=None, metadata=option("the corpus (default: the one the child's search used)")
    )
    device: str = field(
        default="auto",
        metadata=option("auto (CUDA if visible), cpu, cuda, cuda:N", type=device_option),
    )
    out: str = field(
        default="evaluation", metadata=option("folder for predictions.csv and confusion.png")
    )
    register: str | None = field(
        default=None,
        metadata=option("register the model in MLflow's Model Registry under this name"),
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
    if bool(config.run_id) == (config.best is not None):
        raise UserError("give one of --run-id ID (repeatable) or --best EXPERIMENT")
    if config.fuse is not None and (config.best is None or config.fuse < 2):
        raise UserError("--fuse K: with --best EXPERIMENT, K >= 2 (or repeat --run-id)")
    if config.json:
        check_writable(Path(config.json), "--json")
    if config.register:
        tracking.check_model_name(config.register, "--register")
    uri = tracking.resolve_uri(config.tracking_uri)
    tracking.check_store(uri)
    children = evaluate.find_children(uri, config.run_id, config.best, config.fuse or 1)
    if len(children) > 1:
        from automl.report import fusion

        fusion.check_members(children)
    first = children[0]
    data = load_dataset(
        config.data or first.data, first.frontend, first.task, max_seconds=first.max_seconds
    )
    if len(children) == 1:
        summary = _one(uri, config, first, data)
    else:
        summary = _fused(uri, config, children, data)
    if config.register:
        summary["registered"] = evaluate.register(uri, summary["model_uri"], config.register,
                                                  summary)  # fmt: skip
    if config.json:
        write_json(Path(config.json), summary)
    if "registered" in summary:
        registered = summary["registered"]
        print(f"registered: models:/{registered['name']}/{registered['version']}")
    return 0


def _one(uri: str, config: EvaluateConfig, child, data) -> dict:
    from automl.report import evaluate
    from runtime import tracking

    recipe = _recipe(child)
    err(f"evaluating {child.name} ({child.run_id}): {config.seeds} seeds on train+devel, {recipe}")
    eval_run = evaluate.open_run(uri, child)
    with tracking.closed_on_error(uri, eval_run):
        result = evaluate.evaluate(child, data, config.seeds, config.device, _progress(config))
        files = evaluate.write_files(result, Path(config.out))
        evaluate.log_run(uri, eval_run, child, result, config.seeds, files)
        model_uri = evaluate.log_model(uri, eval_run, child, result)
    tracking.end_run(uri, eval_run)
    summary = evaluate.summary(child, result, eval_run, files, model_uri)
    if result.labelled:
        print(
            f"test UAR {summary['test_uar_mean']:.4f} +- {summary['test_uar_std']:.4f} "
            f"({len(result.test_uars)} seeds, train+devel, {recipe}); per class: "
            + ", ".join(f"{c} {r:.3f}" for c, r in result.per_class_recall.items())
        )
    _closing(uri, child.experiment_id, result.labelled, summary)
    return summary


def _fused(uri: str, config: EvaluateConfig, children: list, data) -> dict:
    from automl.report import evaluate, fusion
    from runtime import tracking

    err(f"fusing {len(children)} children, each retrained with {config.seeds} seeds on "
        "train+devel as one child is:")  # fmt: skip

    def on_member(child) -> Callable[[int, float | None], None]:
        err(f" {child.name} ({child.run_id}): {_recipe(child)}")
        return _progress(config)

    eval_run = fusion.open_run(uri, children)
    with tracking.closed_on_error(uri, eval_run):
        fused = fusion.fuse(uri, children, data, config.seeds, config.device, on_member)
        files = evaluate.write_files(fused.fused, Path(config.out))
        fusion.log_run(uri, eval_run, fused, config.seeds, files)
        model_uri = fusion.log_model(uri, eval_run, fused)
    tracking.end_run(uri, eval_run)
    summary = fusion.summary(fused, eval_run, files, model_uri)
    labelled = fused.fused.labelled
    for row in summary["members"]:
        test = f", test UAR {row['test_uar_mean']:.4f} +- {row['test_uar_std']:.4f}"
        print(f"{row['name']} ({row['child_run_id']}): devel UAR {row['devel_uar']:.4f}"
              f"{test if labelled else ''}")  # fmt: skip
    test = f", test UAR {summary['test_uar_mean']:.4f} +- {summary['test_uar_std']:.4f}"
    print(f"fused ({len(children)} members, mean probabilities, {config.seeds} seeds): devel "
          f"UAR {summary['devel_uar']:.4f}{test if labelled else ''}")  # fmt: skip
    _closing(uri, children[0].experiment_id, labelled, summary)
    return summary


def _recipe(child) -> str:
    hparams = child.architecture["hparams"]
    return f"epoch {child.epochs} of {hparams['epochs']} under its {hparams['schedule']} schedule"


def _closing(uri: str, experiment_id: str, labelled: bool, summary: dict) -> None:
    """The challenge baseline beside it, and where the outputs went."""
    from automl.report import baseline

    if labelled:
        for found in baseline.latest(uri, experiment_id):
            print(f"beside it: {found.describe()}")
    else:
        print("the corpus has no test labels: no test UAR; predictions written for submission")
    print(f"predictions: {summary['predictions']}; MLflow run {summary['evaluation_run_id']}")
    print(f"model (seed 0, for automl export / predict): {summary['model_uri']}")


def _progress(config: EvaluateConfig) -> Callable[[int, float | None], None]:
    """One line per retrained seed, so a long evaluation shows it is working."""
    started = time.monotonic()

    def done(seed: int, test_uar: float | None) -> None:
        score = f": test UAR {test_uar:.4f}" if test_uar is not None else ""
        took = time.monotonic() - started
        err(f"  seed {seed + 1}/{config.seeds} retrained ({took:.0f} s so far){score}")

    return done
