"""What the Q-learning and DQN searchers share: a proposal is an episode of ``rl``'s
architecture environment, played epsilon-greedily, whose reward arrives when the child
is told (in any order, several in flight).

The space becomes an :class:`rl.envs.ArchitectureEnv` (one decision per step, inactive
decisions skipped). ``ask`` plays an episode with the current value estimates and keeps
its transitions until the child is told; ``tell`` puts the reward on the last transition
and hands the finished episode to the agent (:meth:`EpisodeSearcher._learn`). Epsilon is
annealed linearly over ``explore_fraction`` of the search's budget (children trained;
a repeated child is skipped), as MetaQNN anneals it over its schedule (1.0 down to 0.1).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from automl.search.searchers.base import Proposal, Searcher, Status
from automl.search.space import SearchSpace
from rl.common import linear_schedule
from rl.envs import ArchitectureEnv

DEFAULT_BUDGET = 100  # children, when the search did not say (a searcher used on its own)


@dataclass
class Step:
    obs: Any  # what the agent saw before the decision (vector or state index)
    action: int
    next_obs: Any
    next_mask: np.ndarray  # actions valid after it (none once the episode is over)
    done: bool


def architecture_env(space: SearchSpace, observation: str) -> ArchitectureEnv:
    """The space as rl's environment: sizes, and gates as (decision index, choice index).
    A gate whose "off" value its decision cannot take (the first layer's width) never closes."""
    index = {d.name: i for i, d in enumerate(space.decisions)}
    gates = []
    for d in space.decisions:
        gating = space.decisions[index[d.gate]] if d.gate else None
        closes = gating is not None and d.gate_off in gating.choices
        gates.append((index[d.gate], gating.choices.index(d.gate_off)) if closes else None)
    return ArchitectureEnv(space.sizes, None, gates, observation)


class EpisodeSearcher(Searcher):
    """Base of the value-based RL searchers (subclasses: ``observation``, ``_values``,
    ``_learn``; the config needs the epsilon fields and ``failure_reward``)."""

    observation = "history"

    def __init__(self, space: SearchSpace, seed: int = 0, config: Any = None) -> None:
        super().__init__(space, seed, config)
        self.env = architecture_env(space, self.observation)
        self.n_actions = int(self.env.action_space.n)
        self.playing: dict[int, list[Step]] = {}  # proposal id -> its transitions

    def epsilon(self) -> float:
        c = self.config
        horizon = c.explore_fraction * (self.budget or DEFAULT_BUDGET)
        return linear_schedule(c.start_epsilon, c.end_epsilon, horizon, self.n_fresh)

    def _propose(self, proposal_id: int) -> dict[str, Any]:
        obs, info = self.env.reset()
        epsilon, steps = self.epsilon(), []
        while True:
            valid = np.flatnonzero(info["action_mask"])
            if self.rng.random() < epsilon:
                action = int(self.rng.choice(valid))
            else:
                values = self._values(obs)[valid]
                action = int(self.rng.choice(valid[values == values.max()]))
            next_obs, _, done, _, info = self.env.step(action)
            steps.append(Step(obs, action, next_obs, info["action_mask"].astype(bool), done))
            obs = next_obs
            if done:
                break
        self.playing[proposal_id] = steps
        return self.space.values_from_indices(self.env.choices)

    def _observe(
        self, proposal: Proposal, reward: float | None, status: Status, repeated: bool
    ) -> dict[str, float]:
        steps = self.playing.pop(proposal.id)
        if repeated:  # the memory holds each child once; its result taught already
            return {}
        if status is Status.FAILED:
            reward = self.config.failure_reward
        return {**self._learn(steps, float(reward)), "epsilon": self.epsilon()}

    @abstractmethod
    def _values(self, obs: Any) -> np.ndarray:
        """Value estimates of every action in ``obs`` (greedy picks the best valid one)."""

    @abstractmethod
    def _learn(self, steps: list[Step], reward: float) -> dict[str, float]:
        """Learn from a finished episode whose final reward is ``reward``."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.playing = {}
