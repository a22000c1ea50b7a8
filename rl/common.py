"""What the agents share: observation encoding, schedules, evaluation, checkpoints, results."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from runtime.files import write_torch

#: callback receiving (metrics, env step) while an agent trains
Metrics = Callable[[dict[str, float], int], None]
#: greedy actions of K policies, each in n episodes: observations [K, n, obs] to actions [K, n]
Policies = Callable[[np.ndarray], np.ndarray]
EVAL_SEED_OFFSET = 1_000_003  # evaluation episodes never share seeds with training ones
FRESH_SEED_OFFSET = 2_000_029  # nor the fresh ones that score the returned policy
BEST = "best.pt"  # the best-evaluated policy, beside a seed's checkpoints


def obs_size(space: gym.Space) -> int:
    """Input width of a network: one-hot for discrete observations, flattened boxes."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    return int(np.prod(space.shape))


def encode_obs(space: gym.Space, obs: Any) -> np.ndarray:
    """float32 network input: one-hot rows for Discrete spaces, flattened otherwise."""
    if isinstance(space, gym.spaces.Discrete):
        obs = np.asarray(obs, dtype=np.int64)
        return np.eye(space.n, dtype=np.float32)[obs]
    obs = np.asarray(obs, dtype=np.float32)
    return obs.reshape(obs.shape[0], -1) if obs.ndim > len(space.shape) else obs.reshape(-1)


def linear_schedule(start: float, end: float, duration: float, t: float) -> float:
    return end + (start - end) * max(0.0, 1.0 - t / max(duration, 1.0))


def segment_seed(seed: int, step: int, env_index: int) -> int:
    """Seed of env ``env_index`` when a segment starts at ``step``: fixed by the run's seed."""
    return int(np.random.SeedSequence([seed, step, env_index]).generate_state(1)[0])


def reward_threshold(env_id: str) -> float | None:
    return gym.spec(env_id).reward_threshold


def evaluate(
    act: Policies,
    env_id: str,
    episodes: int,
    seeds: Sequence[int],
    step: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    offset: int = EVAL_SEED_OFFSET,
) -> list[tuple[float, float]]:
    """Mean and std return of K greedy policies' episodes, policy k's seeded by ``seeds[k]``
    on environments of their own (``offset`` picks the seed stream: the periodic
    evaluations, or fresh episodes).

    Every episode has its own environment, reset with the seed a single environment
    playing them one after another would get, so a policy's figures do not depend on what
    is evaluated beside it; all are stepped side by side, so that one call of ``act`` acts
    in every episode of every policy (a population of 8 with 10 episodes: one batched
    product per step instead of 80). ``act`` sees the episodes that have ended too (their
    last observation), so its input keeps one shape."""
    envs = [gym.make(env_id, **(env_kwargs or {})) for _ in range(len(seeds) * episodes)]
    space = envs[0].observation_space
    first = [
        envs[k * episodes + i].reset(seed=segment_seed(seed + offset, step, i))[0]
        for k, seed in enumerate(seeds)
        for i in range(episodes)
    ]
    obs = np.stack([encode_obs(space, o) for o in first])
    returns, live = np.zeros(len(envs)), np.ones(len(envs), bool)
    while live.any():
        actions = np.asarray(act(obs.reshape(len(seeds), episodes, -1))).reshape(-1)
        for j in np.flatnonzero(live):
            raw, reward, terminated, truncated, _ = envs[j].step(int(actions[j]))
            obs[j], returns[j] = encode_obs(space, raw), returns[j] + float(reward)
            live[j] = not (terminated or truncated)
    for env in envs:
        env.close()
    per_policy = returns.reshape(len(seeds), episodes)
    return [(float(r.mean()), float(r.std())) for r in per_policy]


@dataclass
class RunResult:
    """Per seed, what `rl train` reports. The returned policy is the best-evaluated one
    (``best.pt``); it was selected on the periodic evaluations, which overstate it, so it
    is scored again on fresh episodes (``returned_fresh_*``)."""

    final_eval_return: float  # the last evaluation: of the last network
    final_eval_std: float
    best_eval_return: float
    best_eval_step: int | None
    returned_fresh_return: float
    returned_fresh_std: float
    steps_to_threshold: int | None
    threshold: float | None
    steps: int
    episodes: int
    seconds: float
    steps_per_second: float


class EvalTracker:
    """Remembers evaluation results: the last, the best, and when the threshold was first met."""

    def __init__(self, env_id: str) -> None:
        self.threshold = reward_threshold(env_id)
        self.last = (float("nan"), float("nan"))
        self.best = float("-inf")
        self.best_step: int | None = None
        self.first_solved: int | None = None

    def record(self, mean: float, std: float, step: int) -> bool:
        """Keep an evaluation; True when it is the best so far (keep that policy)."""
        self.last = (mean, std)
        improved = mean > self.best
        if improved:
            self.best, self.best_step = mean, step
        if self.first_solved is None and self.threshold is not None and mean >= self.threshold:
            self.first_solved = step
        return improved

    def result(
        self,
        fresh: tuple[float, float],
        steps: int,
        episodes: int,
        seconds: float,
        steps_per_second: float,
    ) -> RunResult:
        return RunResult(
            self.last[0],
            self.last[1],
            self.best,
            self.best_step,
            fresh[0],
            fresh[1],
            self.first_solved,
            self.threshold,
            steps,
            episodes,
            seconds,
            steps_per_second,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "last": list(self.last),
            "best": self.best,
            "best_step": self.best_step,
            "first_solved": self.first_solved,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last = tuple(state["last"])
        self.best, self.best_step = state["best"], state["best_step"]
        self.first_solved = state["first_solved"]


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"checkpoint-{step:010d}.pt"


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write atomically (a killed run never leaves half a file) and keep the newest ``keep``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = write_torch(checkpoint_path(folder, step), state)
    for old in sorted(folder.glob("checkpoint-*.pt"))[:-keep]:
        old.unlink()
    return path


def save_best(folder: Path, policy: dict[str, Any]) -> Path:
    """The best-evaluated policy so far (what ``rl evaluate`` loads by default)."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_torch(folder / BEST, policy)


def latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(Path(folder).glob("checkpoint-*.pt"))
    return found[-1] if found else None
