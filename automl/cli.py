"""The ``automl`` command: ``train`` one child, ``search`` architectures, ``compare``
searches, ``evaluate`` a child on test, ``baseline`` (the challenge's SVM recipe),
``export`` and ``predict`` with a model, ``data`` info.

User mistakes (a :class:`~runtime.errors.UserError`) end as one line on stderr and exit
code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from automl.commands import baseline, compare, data, evaluate, export, predict, search, train
from runtime.cli import Parser, help_text, run


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="automl", description=help_text(__doc__))
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (train, data, baseline, search, compare, evaluate, export, predict):
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv, "automl")


if __name__ == "__main__":
    sys.exit(main())
