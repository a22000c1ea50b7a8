"""``automl train``: train one child architecture and report its dev UAR."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from automl.child.trainer import TrainConfig
from automl.data.prepare import DataOptions
from runtime.cli import add_options, from_args, read_json_file
from runtime.files import check_writable, write_json, write_torch


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one child architecture and report its dev UAR")
    add_options(p, DataOptions)
    p.add_argument("--arch", required=True, type=Path, help="architecture JSON file")
    add_options(p, TrainConfig)
    p.add_argument("--json", type=Path, help="write the result here")
    p.add_argument("--save-model", type=Path, help="write the best weights (state_dict) here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    from automl.child import normalize
    from automl.child.trainer import train_child

    arch = normalize(read_json_file(args.arch, "--arch"), where=str(args.arch))
    for option in ("json", "save_model"):
        if getattr(args, option):
            check_writable(getattr(args, option), "--" + option.replace("_", "-"))
    options = from_args(DataOptions, args)
    if arch.get("frontend"):  # the architecture names the features it reads
        options = replace(options, frontend=arch["frontend"])
    dataset = options.load()
    config = from_args(TrainConfig, args)
    result = train_child(arch, dataset, config)
    summary = {**result.to_json(), "data": dataset.name, "seed": config.seed}
    if args.save_model:
        write_torch(args.save_model, result.state_dict)
    if args.json:
        write_json(args.json, summary)
    print(
        f"dev UAR {result.dev_uar:.4f} (epoch {result.best_epoch}/{result.epochs}), "
        f"{result.n_params} parameters, {result.train_seconds:.1f} s on {result.device}"
    )
    return 0
