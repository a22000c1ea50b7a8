"""Our DQN against stable-baselines3's on CartPole-v1, side by side in one run.

Same hyperparameters (rl-zoo's CartPole-v1 DQN config), same torch threads (1), one
environment, seeds run alternately (ours, SB3, ours, ...) so drift in machine speed
hits both. Both are evaluated the same way: 10 greedy episodes every 5k steps with this
project's evaluation (same seeds); evaluation time is excluded from env steps/s on both
sides. Two variants of ours: the same algorithm as SB3 (vanilla DQN) and our default
(double DQN + dueling). Needs the benchmark-only extra: pip install -e '.[bench]'.

    python benchmarks/rl_vs_sb3.py [--seeds 5] [--steps 50000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from rl.common import evaluate
from rl.dqn import DQNConfig, train

EVAL_EVERY, EVAL_EPISODES, THRESHOLD = 5_000, 10, 475.0


def run_ours(seed: int, steps: int, **variant) -> dict:
    result = train(
        DQNConfig(
            seed=seed,
            total_steps=steps,
            eval_every=EVAL_EVERY,
            eval_episodes=EVAL_EPISODES,
            threads=1,
            **variant,
        )
    )
    return {
        "steps_per_second": result.steps_per_second,
        "best_eval": result.best_eval_return,
        "steps_to_threshold": result.steps_to_threshold,
    }


def run_sb3(seed: int, steps: int) -> dict:
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback

    class Evaluate(BaseCallback):
        """Our evaluation, every EVAL_EVERY steps; its time is kept apart."""

        def __init__(self) -> None:
            super().__init__()
            self.seconds, self.best, self.solved_at = 0.0, float("-inf"), None

        def _act(self, obs: np.ndarray) -> np.ndarray:
            """Greedy actions of SB3's policy, [1, episodes, obs] -> [1, episodes]."""
            return self.model.predict(obs[0], deterministic=True)[0][None]

        def _on_step(self) -> bool:
            if self.num_timesteps % EVAL_EVERY == 0:
                started = time.perf_counter()
                [(mean, _)] = evaluate(
                    self._act, "CartPole-v1", EVAL_EPISODES, [seed], self.num_timesteps
                )
                self.best = max(self.best, mean)
                if self.solved_at is None and mean >= THRESHOLD:
                    self.solved_at = self.num_timesteps
                self.seconds += time.perf_counter() - started
            return True

    torch.set_num_threads(1)
    ours = DQNConfig()  # rl-zoo's CartPole-v1 values: SB3 gets exactly the same ones
    model = DQN(
        "MlpPolicy",
        gym.make("CartPole-v1"),
        learning_rate=ours.learning_rate,
        batch_size=ours.batch_size,
        buffer_size=ours.buffer_size,
        learning_starts=ours.learning_starts,
        gamma=ours.gamma,
        target_update_interval=ours.target_update,
        train_freq=ours.train_freq,
        gradient_steps=ours.gradient_steps,
        exploration_fraction=ours.exploration_fraction,
        exploration_initial_eps=ours.start_epsilon,
        exploration_final_eps=ours.end_epsilon,
        max_grad_norm=ours.max_grad_norm,
        policy_kwargs={"net_arch": ours.hidden},
        seed=seed,
        device="cpu",
        verbose=0,
    )
    callback = Evaluate()
    started = time.perf_counter()
    model.learn(steps, callback=callback)
    seconds = time.perf_counter() - started - callback.seconds
    return {
        "steps_per_second": steps / seconds,
        "best_eval": callback.best,
        "steps_to_threshold": callback.solved_at,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/rl_vs_sb3.json"))
    args = parser.parse_args()
    runners = {
        "ours, vanilla DQN (as SB3)": lambda s: run_ours(
            s, args.steps, double=False, dueling=False
        ),
        "ours, double + dueling (default)": lambda s: run_ours(s, args.steps),
        "stable-baselines3 DQN": lambda s: run_sb3(s, args.steps),
    }
    runs: dict[str, list[dict]] = {name: [] for name in runners}
    for seed in range(args.seeds):
        for name, run in runners.items():
            runs[name].append(run(seed))
            print(f"seed {seed} {name}: {runs[name][-1]}", flush=True)
    sb3_sps = statistics.median(r["steps_per_second"] for r in runs["stable-baselines3 DQN"])
    rows = []
    for name, results in runs.items():
        sps = statistics.median(r["steps_per_second"] for r in results)
        solved = sum(r["steps_to_threshold"] is not None for r in results)
        rows.append(
            {
                "agent": name,
                "median_steps_per_second": sps,
                "speedup_vs_sb3": sps / sb3_sps,
                "seeds_solved": solved,
                "seeds": len(results),
                "mean_best_eval": float(np.mean([r["best_eval"] for r in results])),
            }
        )
    print(f"\n{'agent':34} {'env steps/s':>11} {'vs SB3':>7} {'solved':>7} {'best eval':>9}")
    for row in rows:
        print(
            f"{row['agent']:34} {row['median_steps_per_second']:11.0f} "
            f"{row['speedup_vs_sb3']:6.2f}x {row['seeds_solved']:>3}/{row['seeds']:<3} "
            f"{row['mean_best_eval']:9.1f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "rl_vs_sb3",
                "env": "CartPole-v1",
                "steps": args.steps,
                "threads": 1,
                "rows": rows,
                "runs": runs,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
