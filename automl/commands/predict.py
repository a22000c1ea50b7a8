"""``automl predict``: class and probabilities for audio files, with any shipped model."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from runtime.cli import add_options, from_args, option
from runtime.errors import UserError
from runtime.files import check_writable, write_json


@dataclass(kw_only=True)
class PredictConfig:
    """What ``automl predict`` takes; each option and its default written once."""

    model: str = field(
        metadata=option(
            "models:/NAME/VERSION, models:/<id>, runs:/<run>/<model name>, a model folder, "
            "or a file automl export wrote"
        )
    )
    tracking_uri: str | None = field(
        default=None, metadata=option("MLflow URI (default: as automl search)")
    )
    json: str | None = field(default=None, metadata=option("write the predictions here"))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify audio files with a logged or exported model")
    add_options(p, PredictConfig)
    p.add_argument("files", nargs="+", metavar="FILE.wav", help="audio files to classify")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from automl.data.prepare import features_of
    from automl.ship import inference
    from runtime import tracking

    config = from_args(PredictConfig, args)
    if config.json:
        check_writable(Path(config.json), "--json")
    missing = [f for f in args.files if not Path(f).is_file()]
    if missing:
        raise UserError(f"no such audio file: {missing[0]}")
    uri = None
    if not Path(config.model).exists() and inference.is_mlflow_uri(config.model):
        uri = tracking.resolve_uri(config.tracking_uri)
        tracking.check_store(uri)
    predictor = inference.load(config.model, uri)
    frontend = predictor.meta.audio_frontend()
    named = [(f, features_of(Path(f), frontend, predictor.meta.max_seconds)) for f in args.files]
    rows = inference.rows(predictor, named)
    for row in rows:
        probs = " ".join(f"{c} {p:.3f}" for c, p in row["probabilities"].items())
        print(f"{row['file']}\t{row['class']}\t{probs}")
    if config.json:
        write_json(Path(config.json), {"model": config.model, "predictions": rows})
    return 0
