"""The ``rl`` command: ``train`` agents over many seeds on Ray, ``evaluate`` a checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.cli import Parser, add_options, from_args, positive_int, run
from runtime.errors import UserError
from runtime.files import check_writable


def build_parser() -> argparse.ArgumentParser:
    from rl.runner import JobConfig

    parser = Parser(prog="rl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train K seeds as parallel Ray trials, tracked in MLflow")
    add_options(train, JobConfig)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="play greedy episodes from a checkpoint")
    evaluate.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="a seed's checkpoint folder (e.g. checkpoints/seed-0) or one checkpoint file",
    )
    evaluate.add_argument(
        "--which",
        choices=["best", "last"],
        default="best",
        help="in a folder: the best-evaluated policy (best.pt) or the last checkpoint",
    )
    evaluate.add_argument("--episodes", type=positive_int, default=10)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.set_defaults(func=cmd_evaluate)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    import gymnasium as gym

    from rl.runner import JobConfig, run_seeds

    job = from_args(JobConfig, args)
    try:
        gym.spec(job.env)
    except gym.error.Error as exc:
        raise UserError(f"--env {job.env}: {exc}") from None
    if job.json:
        check_writable(Path(job.json), "--json")
    summary = run_seeds(job)  # it writes --json, also when interrupted
    print(
        f"{'seed':>4} {'last eval':>10} {'best eval':>10} {'returned, fresh':>16} "
        f"{'steps/s':>8} {'steps to threshold':>19}"
    )
    for row in summary["seeds"]:
        if row["status"] != "done":
            print(f"{row['seed']:>4} failed: {row['error']}")
            continue
        print(
            f"{row['seed']:>4} {row['final_eval_return']:10.2f} {row['best_eval_return']:10.2f} "
            f"{row['returned_fresh_return']:16.2f} {row['steps_per_second']:8.0f} "
            f"{row['steps_to_threshold']!s:>19}"
        )
    return 0 if all(r["status"] == "done" for r in summary["seeds"]) else 1


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from rl import dqn, qlearning
    from rl.common import evaluate

    path = _checkpoint_file(args.checkpoint, args.which)
    try:
        state = torch.load(path, weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which, not a traceback
        raise UserError(f"--checkpoint {path}: not a checkpoint ({exc})") from None
    loaders = {"dqn": dqn.load_policy, "qlearning": qlearning.load_policy}
    if not isinstance(state, dict) or state.get("algo") not in loaders:
        raise UserError(f"--checkpoint {path}: not an rl checkpoint")
    try:
        config, policy = loaders[state["algo"]](state)
    except (KeyError, RuntimeError, TypeError) as exc:  # another layout of the networks
        raise UserError(
            f"--checkpoint {path}: written by another version of rl, cannot load it ({exc})"
        ) from None
    mean, std = evaluate(policy, config.env_id, args.episodes, args.seed, 0, config.env_kwargs)
    print(
        f"{config.env_id} {state['algo']} {path.name} (step {state['step']}): "
        f"mean return {mean:.2f} +/- {std:.2f} over {args.episodes} episodes"
    )
    return 0


def _checkpoint_file(path: Path, which: str) -> Path:
    """A file as given; in a seed's folder, ``best.pt`` or its latest checkpoint."""
    from rl.common import BEST, latest_checkpoint

    if path.is_file():
        return path
    if not path.is_dir():
        raise UserError(f"--checkpoint {path}: file not found")
    found = path / BEST if which == "best" else latest_checkpoint(path)
    if found is None or not found.is_file():
        raise UserError(
            f"--checkpoint {path}: no {'best.pt' if which == 'best' else 'checkpoint'} in it"
        )
    return found


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv, "rl")


if __name__ == "__main__":
    sys.exit(main())
