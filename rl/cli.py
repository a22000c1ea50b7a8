"""The ``rl`` command: ``train`` agents over many seeds on Ray, ``evaluate`` a checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.cli import Parser, add_options, from_args, help_text, positive_int, run
from runtime.errors import UserError
from runtime.files import check_writable, read_torch_file


def build_parser() -> argparse.ArgumentParser:
    from rl.runner import JobConfig

    parser = Parser(prog="rl", description=help_text(__doc__))
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train K seeds as parallel Ray trials, tracked in MLflow")
    add_options(train, JobConfig)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="play greedy episodes from a checkpoint")
    evaluate.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        metavar="PATH",
        help="a seed's checkpoint folder (e.g. checkpoints/seed-0) or one checkpoint file",
    )
    evaluate.add_argument(
        "--which",
        choices=["best", "last"],
        default="best",
        help="in a folder: the best-evaluated policy (best.pt) or the last checkpoint "
        "(default: best)",
    )
    evaluate.add_argument(
        "--episodes", type=positive_int, default=10, metavar="N",
        help="greedy episodes to play (default: 10)",
    )  # fmt: skip
    evaluate.add_argument(
        "--seed", type=int, default=0, metavar="N",
        help="seed of the first episode's environment (default: 0)",
    )  # fmt: skip
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
        reached = row["steps_to_threshold"]
        print(
            f"{row['seed']:>4} {row['final_eval_return']:10.2f} {row['best_eval_return']:10.2f} "
            f"{row['returned_fresh_return']:16.2f} {row['steps_per_second']:8.0f} "
            f"{'not reached' if reached is None else reached:>19}"
        )
    _where_it_went(summary)
    return 0 if all(r["status"] == "done" for r in summary["seeds"]) else 1


def _where_it_went(summary: dict) -> None:
    """Where the seeds' runs, checkpoints and summary are, and how to look at them."""
    from runtime import mlflow_ui

    uri = summary["tracking_uri"]
    print(f"MLflow: parent run {summary['parent_run_id']}, one nested run per seed, in {uri}")
    print(f"checkpoints: {summary['checkpoint_dir']}/seed-N (best.pt: the returned policy)")
    if summary["json"]:
        print(f"summary: {summary['json']}")
    command = mlflow_ui.serve_command(uri)
    if command:
        print(f"serve the MLflow UI with:  {command}")
    print(f"its seeds:  {mlflow_ui.link(uri, mlflow_ui.runs_page(summary['experiment_id']))}")


def cmd_evaluate(args: argparse.Namespace) -> int:

    from rl import dqn, qlearning
    from rl.common import evaluate
    from rl.runner import ALGOS

    path = _checkpoint_file(args.checkpoint, args.which)
    state = read_torch_file(path, "an rl checkpoint", "give a checkpoint rl train wrote")
    loaders = {"dqn": dqn.load_policy, "qlearning": qlearning.load_policy}
    if not isinstance(state, dict) or state.get("algo") not in loaders:
        raise UserError(f"--checkpoint {path}: not an rl checkpoint")
    try:
        config = ALGOS[state["algo"]].config(**state["config"])
        _check_env(path, state["algo"], config)  # an edited config may name another env
        config, policy = loaders[state["algo"]](state)
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:  # edited, or another layout
        raise UserError(
            f"--checkpoint {path}: its networks do not fit its config (edited, or written by "
            f"another version of rl), cannot load it ({str(exc).splitlines()[0][:160]})"
        ) from None
    [(mean, std)] = evaluate(
        policy, config.env_id, args.episodes, [args.seed], 0, config.env_kwargs
    )
    print(
        f"{config.env_id} {state['algo']} {path.name} (step {state['step']}): "
        f"mean return {mean:.2f} +/- {std:.2f} over {args.episodes} episodes"
    )
    return 0


def _check_env(path: Path, algo: str, config) -> None:
    """The environment the checkpoint's config names, made and checked as ``rl train``
    checks it (an edited config may name one the policy cannot play)."""
    import gymnasium as gym

    from rl.runner import ALGOS

    try:
        ALGOS[algo].check_env(config)
    except (gym.error.Error, TypeError, ValueError, OSError, KeyError) as exc:
        raise UserError(
            f"--checkpoint {path}: cannot make its env {config.env_id} ({exc})"
        ) from None
    except UserError as exc:
        raise UserError(f"--checkpoint {path}: {exc}") from None


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
