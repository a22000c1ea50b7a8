"""The ``rl`` command: ``train`` agents over many seeds on Ray, ``evaluate`` a checkpoint."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from automl.cli import Parser, check_writable, positive_int, run, write_json
from automl.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="rl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train K seeds as parallel Ray trials, tracked in MLflow")
    train.add_argument("--env", required=True, help="Gymnasium id, e.g. CartPole-v1, Taxi-v4")
    train.add_argument("--algo", choices=("dqn", "qlearning"), default="dqn")
    train.add_argument("--steps", type=positive_int, help="env steps per seed")
    train.add_argument("--episodes", type=positive_int, help="episodes per seed (qlearning)")
    train.add_argument("--seeds", type=positive_int, default=1, help="seeds 0..K-1")
    train.add_argument("--first-seed", type=int, default=0)
    train.add_argument("--workers", type=positive_int, default=1, help="seeds trained at once")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (JSON value), e.g. --set n_step=3",
    )
    train.add_argument("--experiment", default="rl", help="MLflow experiment name")
    train.add_argument("--tracking-uri", help="MLflow URI (default: sqlite:///mlflow.db)")
    train.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=Path("checkpoints"),
        help="per-seed checkpoints go to DIR/seed-N (default: ./checkpoints)",
    )
    train.add_argument("--resume", action="store_true", help="continue from the checkpoints")
    train.add_argument("--address", help="join this Ray cluster (default: local Ray)")
    train.add_argument("--json", type=Path, help="write the summary here")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="play greedy episodes from a checkpoint")
    evaluate.add_argument("--checkpoint", required=True, type=Path)
    evaluate.add_argument("--episodes", type=positive_int, default=10)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.set_defaults(func=cmd_evaluate)
    return parser


def make_config(args: argparse.Namespace) -> dict:
    """The algorithm's config dataclass as a dict, with the command line's overrides."""
    from rl.runner import ALGOS

    config_cls = ALGOS[args.algo].config
    fields = {f.name for f in dataclasses.fields(config_cls)}
    values = dataclasses.asdict(config_cls(env_id=args.env))
    if args.steps:
        values["total_steps"] = args.steps
    if args.episodes:
        if "episodes" not in fields:
            raise UserError("--episodes applies to --algo qlearning; use --steps for dqn")
        values["episodes"] = args.episodes
    for item in args.set:
        key, _, text = item.partition("=")
        if key not in fields or not text:
            raise UserError(f"--set {item}: expected KEY=VALUE with KEY one of {sorted(fields)}")
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            values[key] = text
    return values


def cmd_train(args: argparse.Namespace) -> int:
    import gymnasium as gym

    from rl.runner import run_seeds

    try:
        gym.spec(args.env)
    except gym.error.Error as exc:
        raise UserError(f"--env {args.env}: {exc}") from None
    base = make_config(args)
    if args.json:
        check_writable(args.json, "--json")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    summary = run_seeds(
        args.algo,
        base,
        seeds,
        args.workers,
        args.experiment,
        args.tracking_uri,
        args.checkpoint_dir,
        args.resume,
        address=args.address,
    )
    if args.json:
        write_json(args.json, summary)
    print(f"{'seed':>4} {'eval return':>12} {'steps/s':>9} {'steps to threshold':>19}")
    for row in summary["seeds"]:
        if row["status"] != "done":
            print(f"{row['seed']:>4} failed: {row['error']}")
            continue
        print(
            f"{row['seed']:>4} {row['final_eval_return']:12.2f} {row['steps_per_second']:9.0f} "
            f"{row['steps_to_threshold']!s:>19}"
        )
    return 0 if all(r["status"] == "done" for r in summary["seeds"]) else 1


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from rl import dqn, qlearning
    from rl.common import evaluate

    if not args.checkpoint.is_file():
        raise UserError(f"--checkpoint {args.checkpoint}: file not found")
    try:
        state = torch.load(args.checkpoint, weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which, not a traceback
        raise UserError(f"--checkpoint {args.checkpoint}: not a checkpoint ({exc})") from None
    loaders = {"dqn": dqn.load_policy, "qlearning": qlearning.load_policy}
    if not isinstance(state, dict) or state.get("algo") not in loaders:
        raise UserError(f"--checkpoint {args.checkpoint}: not an rl checkpoint")
    config, policy = loaders[state["algo"]](state)
    mean, std = evaluate(policy, config.env_id, args.episodes, args.seed)
    print(
        f"{config.env_id} {state['algo']} step {state['step']}: "
        f"mean return {mean:.2f} +/- {std:.2f} over {args.episodes} episodes"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv, "rl")


if __name__ == "__main__":
    sys.exit(main())
