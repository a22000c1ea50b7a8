"""The ``automl`` command: ``train`` one child, ``search`` architectures, ``data`` info.

User mistakes (a :class:`~automl.errors.UserError`) end as one line on stderr and exit
code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from automl import ray_cluster
from automl.errors import UserError

EXIT_USER_ERROR = 2


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def check_writable(path: Path, option: str) -> Path:
    """Fail before hours of work, not after, when an output cannot be written."""
    parent = path.resolve().parent
    if not parent.is_dir():
        raise UserError(f"{option} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"{option} {path}: not writable")
    return path


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically, so a crash never leaves half a summary behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


class Parser(argparse.ArgumentParser):
    """argparse, except that a wrong option is one line (``automl search: error: ...``) like
    every other user error; ``--help`` still prints the full usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        required=True,
        help="synth-cry (built in), digits (built in) or compare:DIR (ComParE layout)",
    )
    p.add_argument("--task", help="task name when DIR/lab holds several <task>.tsv files")
    p.add_argument(
        "--frontend",
        default="mfcc",
        help="mfcc, logmel, compare-lld, egemaps (opensmile extra) or csv:PATH (default: mfcc)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="automl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one child architecture and report its dev UAR")
    add_data_options(train)
    train.add_argument("--arch", required=True, type=Path, help="architecture JSON file")
    train.add_argument("--epochs", type=positive_int, help="override the architecture's epochs")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto", help="auto (CUDA if visible), cpu, cuda, cuda:N")
    train.add_argument("--threads", type=positive_int, help="torch CPU threads")
    train.add_argument("--json", type=Path, help="write the result here")
    train.add_argument("--save-model", type=Path, help="write the best weights (state_dict) here")
    train.set_defaults(func=cmd_train)

    data = sub.add_parser("data", help="prepare a corpus (features cached) and print its summary")
    add_data_options(data)
    data.set_defaults(func=cmd_data)

    from automl.search_cli import add_search_parser

    add_search_parser(sub)
    return parser


def read_json_file(path: Path, option: str) -> Any:
    if not path.is_file():
        raise UserError(f"{option} {path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{option} {path}: not valid JSON ({exc})") from None


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from automl.children import normalize
    from automl.data.prepare import load_dataset
    from automl.train import TrainConfig, train_child

    arch = normalize(read_json_file(args.arch, "--arch"), where=str(args.arch))
    for option in ("json", "save_model"):
        if getattr(args, option):
            check_writable(getattr(args, option), "--" + option.replace("_", "-"))
    dataset = load_dataset(args.data, args.frontend, args.task)
    config = TrainConfig(
        epochs=args.epochs, seed=args.seed, device=args.device, threads=args.threads
    )
    result = train_child(arch, dataset, config)
    summary = {
        "dev_uar": result.dev_uar,
        "n_params": result.n_params,
        "train_seconds": result.train_seconds,
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "latency_ms": result.latency_ms,
        "device": result.device,
        "data": dataset.name,
        "seed": args.seed,
        "architecture": result.architecture,
        "history": [h.__dict__ for h in result.history],
    }
    if args.save_model:
        torch.save(result.state_dict, args.save_model)
    if args.json:
        write_json(args.json, summary)
    print(
        f"dev UAR {result.dev_uar:.4f} (epoch {result.best_epoch}/{result.epochs}), "
        f"{result.n_params} parameters, {result.train_seconds:.1f} s on {result.device}"
    )
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from automl.data.prepare import load_dataset

    print(json.dumps(load_dataset(args.data, args.frontend, args.task).summary(), indent=2))
    return 0


def run(parser: argparse.ArgumentParser, argv: list[str] | None, prog: str) -> int:
    """Parse and dispatch; a user's mistake becomes one line and exit code 2."""
    args = parser.parse_args(argv)
    ray_cluster.prepare(getattr(args, "address", None))  # before any command imports Ray
    try:
        return args.func(args)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv, "automl")


if __name__ == "__main__":
    sys.exit(main())
