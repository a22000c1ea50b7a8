"""``automl export``: a logged model as one TorchScript or ONNX file for deployment."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from runtime.cli import add_options, from_args, option
from runtime.errors import UserError
from runtime.files import check_writable


@dataclass(kw_only=True)
class ExportConfig:
    """What ``automl export`` takes; each option and its default written once."""

    model: str = field(
        metadata=option(
            "models:/NAME/VERSION, models:/<id>, runs:/<run>/<model name> or a model folder"
        )
    )
    format: str = field(metadata=option("torchscript or onnx", choices=("torchscript", "onnx")))
    out: str = field(metadata=option("the file to write"))
    tracking_uri: str | None = field(
        default=None, metadata=option("MLflow URI (default: as automl search)")
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a logged model to TorchScript or ONNX")
    add_options(p, ExportConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from automl.ship import export, inference
    from runtime import tracking

    config = from_args(ExportConfig, args)
    out = check_writable(Path(config.out), "--out")
    if Path(config.model).resolve() == out.resolve():
        raise UserError(f"--out {out}: the same file as --model")
    uri = None
    if not Path(config.model).exists() and inference.is_mlflow_uri(config.model):
        uri = tracking.resolve_uri(config.tracking_uri)
        tracking.check_store(uri)
    meta, weights = inference.load_bundle(config.model, uri)
    gap = export.export(meta, weights, config.format, out, export.probe_inputs(meta))
    print(
        f"{out}: {config.format}, {len(meta.classes)} classes ({', '.join(meta.classes)}), "
        f"features [frames, {meta.n_features}] from frontend {meta.frontend or 'none'}; "
        f"largest difference from the PyTorch model {gap:.1e}"
    )
    return 0
