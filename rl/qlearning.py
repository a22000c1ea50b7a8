"""Tabular Q-learning for Gymnasium environments with discrete observations and actions.

FrozenLake-v1, Taxi-v4, CliffWalking-v1 and the like. Read :func:`train` top to bottom.
Each episode's environment seed is fixed by (run seed, episode), and checkpoints are
written between episodes, so a resumed run continues exactly as an uninterrupted one.
The returned policy is the best-evaluated table (``best.pt``), scored again on fresh
episodes at the end; a run ended by ``total_steps`` before its episodes is evaluated then.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rl.common import (
    FRESH_SEED_OFFSET,
    EvalTracker,
    Metrics,
    Policies,
    RunResult,
    evaluate,
    latest_checkpoint,
    linear_schedule,
    save_best,
    save_checkpoint,
    segment_seed,
)
from runtime.errors import UserError


@dataclass
class QLearningConfig:
    env_id: str = "Taxi-v4"
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to gymnasium.make
    total_steps: int = 2_000_000  # env steps; whichever of steps and episodes ends first
    episodes: int = 10_000
    seed: int = 0
    alpha: float = 0.1  # learning rate
    gamma: float = 0.99
    start_epsilon: float = 1.0
    end_epsilon: float = 0.05
    exploration_fraction: float = 0.5  # of the episodes
    eval_every: int = 500  # episodes
    eval_episodes: int = 100
    checkpoint_every: int = 1_000  # episodes


def make_env(config: QLearningConfig) -> gym.Env:
    """The environment, refused with a clear message unless it is tabular."""
    env = gym.make(config.env_id, **config.env_kwargs)
    if not isinstance(env.observation_space, gym.spaces.Discrete) or not isinstance(
        env.action_space, gym.spaces.Discrete
    ):
        raise UserError(
            f"--algo qlearning needs discrete observations and actions; "
            f"{config.env_id} has {env.observation_space}"
        )
    return env


def check_env(config: QLearningConfig) -> None:
    make_env(config).close()


def train(
    config: QLearningConfig,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    on_metrics: Metrics | None = None,
) -> RunResult:
    env = make_env(config)
    q = np.zeros((env.observation_space.n, env.action_space.n))
    rng = np.random.default_rng(config.seed)
    tracker = EvalTracker(config.env_id)
    step, episode, evaluated_at = 0, 0, -1
    best_q: np.ndarray | None = None  # the best-evaluated table so far
    log = on_metrics or (lambda metrics, step: None)

    def snapshot() -> dict[str, Any]:
        return {
            "algo": "qlearning",
            "config": asdict(config),
            "q": torch.from_numpy(q),
            "rng": rng.bit_generator.state,
            "step": step,
            "episode": episode,
            "tracker": tracker.state_dict(),
            "best_q": None if best_q is None else torch.from_numpy(best_q),
            "evaluated_at": evaluated_at,
        }

    def evaluate_now() -> None:
        """Greedy episodes with the current table; keeps it when it is the best so far."""
        nonlocal best_q, evaluated_at
        [(mean, std)] = evaluate(
            _policy(q), config.env_id, config.eval_episodes, [config.seed], episode,
            config.env_kwargs,
        )  # fmt: skip
        evaluated_at = episode
        if tracker.record(mean, std, step):
            best_q = q.copy()
            if checkpoint_dir:
                save_best(checkpoint_dir, policy_state(config, best_q, step))
        elapsed = time.perf_counter() - started
        log(
            {"eval_return": mean, "eval_return_std": std, "sps": (step - steps_at_start) / elapsed},
            step,
        )

    if resume and checkpoint_dir and (path := latest_checkpoint(checkpoint_dir)):
        state = torch.load(path, weights_only=True)
        q[:] = state["q"].numpy()
        rng.bit_generator.state = state["rng"]
        step, episode = state["step"], state["episode"]
        tracker.load_state_dict(state["tracker"])
        best_q = None if state["best_q"] is None else state["best_q"].numpy()
        evaluated_at = state["evaluated_at"]

    started, steps_at_start = time.perf_counter(), step
    while episode < config.episodes and step < config.total_steps:
        if checkpoint_dir and episode > 0 and episode % config.checkpoint_every == 0:
            save_checkpoint(checkpoint_dir, step, snapshot())
        epsilon = linear_schedule(
            config.start_epsilon,
            config.end_epsilon,
            config.exploration_fraction * config.episodes,
            episode,
        )
        s, _ = env.reset(seed=segment_seed(config.seed, episode, 0))
        done, episode_return = False, 0.0
        while not done:
            explore = rng.random() < epsilon
            a = int(rng.integers(env.action_space.n)) if explore else int(_greedy(q[s], rng))
            s_next, reward, terminated, truncated, _ = env.step(a)
            bootstrap = 0.0 if terminated else config.gamma * q[s_next].max()
            q[s, a] += config.alpha * (reward + bootstrap - q[s, a])
            s, episode_return, step = s_next, episode_return + float(reward), step + 1
            done = terminated or truncated
        episode += 1
        log({"episodic_return": episode_return, "epsilon": epsilon}, step)
        if episode % config.eval_every == 0:
            evaluate_now()
    if evaluated_at != episode:  # the last episodes (or --steps ended the run early)
        evaluate_now()

    if checkpoint_dir:
        save_checkpoint(checkpoint_dir, step, snapshot())
    env.close()
    seconds = time.perf_counter() - started
    [fresh] = evaluate(
        _policy(q if best_q is None else best_q), config.env_id, config.eval_episodes,
        [config.seed], 0, config.env_kwargs, offset=FRESH_SEED_OFFSET,
    )  # fmt: skip
    return tracker.result(
        fresh=fresh,
        steps=step,
        episodes=episode,
        seconds=seconds,
        steps_per_second=(step - steps_at_start) / max(seconds, 1e-9),
    )


def _greedy(values: np.ndarray, rng: np.random.Generator) -> int:
    """Argmax with random tie-breaking, so an all-zero row does not always pick action 0."""
    best = np.flatnonzero(values == values.max())
    return int(best[0] if len(best) == 1 else rng.choice(best))


def _policy(q: np.ndarray) -> Policies:
    """Greedy on the table (the first of tied actions); observations arrive one-hot encoded."""
    return lambda obs: q[obs.argmax(axis=-1)].argmax(axis=-1)


def policy_state(config: QLearningConfig, q: np.ndarray, step: int) -> dict[str, Any]:
    return {"algo": "qlearning", "config": asdict(config), "q": torch.from_numpy(q), "step": step}


def load_policy(state: dict[str, Any]) -> tuple[QLearningConfig, Policies]:
    """A greedy policy from a checkpoint or a ``best.pt`` (for ``rl evaluate``)."""
    return QLearningConfig(**state["config"]), _policy(state["q"].numpy())
