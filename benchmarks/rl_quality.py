"""Learning quality of the RL agents, each seed a Ray trial (2 at a time here).

Targets, on the policy each seed returns (its best-evaluated one), scored on fresh
episodes not used to select it: CartPole-v1, 5 of 5 seeds >= 475 after 50k env steps;
Acrobot-v1 >= -100 after 100k; Taxi-v4 (tabular Q-learning) >= 7 after 10k episodes.
Evaluation: 10 greedy episodes (100 for Taxi) on a separately seeded environment every
5k steps (every 500 episodes for Taxi), and as many fresh ones at the end.

    python benchmarks/rl_quality.py [--only CartPole-v1] [--seeds 5] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from rl.dqn import DQNConfig
from rl.qlearning import QLearningConfig
from rl.runner import JobConfig, run_seeds
from runtime import ray_cluster

# rl-zoo's hyperparameters for the two DQN tasks; our defaults add double DQN and dueling.
TASKS = {
    "CartPole-v1": ("dqn", DQNConfig(env_id="CartPole-v1", total_steps=50_000), 475.0),
    "Acrobot-v1": (
        "dqn",
        DQNConfig(
            env_id="Acrobot-v1",
            total_steps=100_000,
            learning_rate=6.3e-4,
            batch_size=128,
            buffer_size=50_000,
            learning_starts=0,
            target_update=250,
            train_freq=4,
            gradient_steps=4,
            exploration_fraction=0.12,
            end_epsilon=0.1,
        ),
        -100.0,
    ),
    "Taxi-v4": ("qlearning", QLearningConfig(env_id="Taxi-v4", episodes=10_000), 7.0),
}


def main() -> None:
    ray_cluster.prepare(address=None)  # loopback, as the CLI's local Ray
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(TASKS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/rl_quality.json"))
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for env_id, (algo, config, target) in TASKS.items():
            if args.only and env_id != args.only:
                continue
            job = JobConfig(
                env=env_id,
                algo=algo,
                seeds=args.seeds,
                workers=args.workers,
                experiment="rl-quality",
                tracking_uri=f"sqlite:///{tmp}/mlflow.db",
                checkpoint_dir=f"{tmp}/checkpoints",
            )
            summary = run_seeds(job, config)
            best = [s["best_eval_return"] for s in summary["seeds"]]
            returned = [s["returned_fresh_return"] for s in summary["seeds"]]
            reached = sum(r >= target for r in returned)
            results[env_id] = {
                "algo": algo,
                "target": target,
                "seeds": summary["seeds"],
                "reached": reached,
                "of": args.seeds,
                "wall_seconds": summary["wall_seconds"],
            }
            print(
                f"{env_id:12} {algo:9} returned policy >= {target} in {reached}/{args.seeds} "
                f"seeds; fresh returns {[round(r, 1) for r in returned]}; "
                f"best periodic evaluations {[round(b, 1) for b in best]}; "
                f"first step reaching it {[s['steps_to_threshold'] for s in summary['seeds']]}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.only and args.out.is_file():  # one task re-run: the others' results stay
        results = {**json.loads(args.out.read_text())["tasks"], **results}
    args.out.write_text(json.dumps({"benchmark": "rl_quality", "tasks": results}, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
