"""``automl data``: prepare a corpus (features cached) and print its summary."""

from __future__ import annotations

import argparse
import json

from automl.data.prepare import DataOptions
from runtime.cli import add_options, from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="prepare a corpus (features cached) and print its summary")
    add_options(p, DataOptions)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(json.dumps(from_args(DataOptions, args).load().summary(), indent=2))
    return 0
