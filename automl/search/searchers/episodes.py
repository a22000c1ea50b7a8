"""What the Q-learning and DQN searchers share: a proposal is an episode of ``rl``'s
architecture environment, played epsilon-greedily, whose reward arrives when the child
is told (in any order, several in flight).

The space becomes an :class:`rl.envs.ArchitectureEnv` (one decision per step, inactive
decisions skipped). ``ask`` plays an episode with the current value estimates and keeps
its transitions until the child is told; ``tell`` puts the reward on the last transition
and hands the finished episode to the agent (:meth:`EpisodeSearcher._learn`). Epsilon is
annealed linearly over ``explore_fraction`` of the search's budget (children trained;
a repeated child is skipped), as MetaQNN anneals it over its schedule (1.0 down to 0.1).

With a reward model (the default; ``model=none`` is the agent alone) the agent plans
(:mod:`~automl.search.searchers.planning`): a proposal is the best by the model's
acquisition of ``candidates`` epsilon-greedy episodes and ``mutations`` of the best
children (a mutation is played as the episode that makes its decisions), and after
every real child the agent learns from ``dream`` epsilon-greedy episodes scored by one
Thompson draw of the model (:meth:`EpisodeSearcher._dream`).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from automl.search.searchers.base import Proposal, Searcher, Status
from automl.search.searchers.planning import Planner
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
    ``_learn``, ``_learn_imagined``; the config is a ``PlanningOptions`` with the epsilon
    fields and ``failure_reward``)."""

    observation = "history"

    def __init__(self, space: SearchSpace, seed: int = 0, config: Any = None) -> None:
        super().__init__(space, seed, config)
        self.env = architecture_env(space, self.observation)
        self.n_actions = int(self.env.action_space.n)
        self.playing: dict[int, list[Step]] = {}  # proposal id -> its transitions
        self.planner = Planner(space, self.config, seed)
        width = max(self.config.candidates, self.config.dream) if self.planner.model else 0
        self.envs = [architecture_env(space, self.observation) for _ in range(width)]

    def epsilon(self) -> float:
        c = self.config
        horizon = c.explore_fraction * (self.budget or DEFAULT_BUDGET)
        return linear_schedule(c.start_epsilon, c.end_epsilon, horizon, self.n_fresh)

    def _propose(self, proposal_id: int) -> dict[str, Any]:
        epsilon = self.epsilon()
        steps = self._play(epsilon)
        values = self.space.values_from_indices(self.env.choices)
        if self.planner.active:
            played = [(steps, values), *self._play_many(self.config.candidates - 1, epsilon)]
            candidates = [v for _, v in played] + self.planner.mutations(self.rng)
            chosen = self.planner.pick(candidates, list(self.pending.values())) or 0
            values = candidates[chosen]
            steps = played[chosen][0] if chosen < len(played) else self._replay_of(values)
        self.playing[proposal_id] = steps
        self.planner.claim(values)
        return values

    def _adopt(self, proposal_id: int, values: dict[str, Any]) -> None:
        self.playing[proposal_id] = self._replay_of(values)
        self.planner.claim(values)

    def _play(self, epsilon: float, forced: list[int] | None = None) -> list[Step]:
        """One episode, epsilon-greedy (or making the decisions ``forced`` gives)."""
        obs, info = self.env.reset()
        steps = []
        while True:
            valid = np.flatnonzero(info["action_mask"])
            if forced is not None:
                action = forced[info["position"]]
            elif self.rng.random() < epsilon:
                action = int(self.rng.choice(valid))
            else:
                values = self._values(obs)[valid]
                action = int(self.rng.choice(valid[values == values.max()]))
            next_obs, _, done, _, info = self.env.step(action)
            steps.append(Step(obs, action, next_obs, info["action_mask"].astype(bool), done))
            obs = next_obs
            if done:
                return steps

    def _play_many(self, n: int, epsilon: float) -> list[tuple[list[Step], dict[str, Any]]]:
        """``n`` epsilon-greedy episodes played side by side (one value estimate per
        decision for all of them), each with the values it makes."""
        envs = self.envs[:n]
        state = [env.reset() for env in envs]
        steps: list[list[Step]] = [[] for _ in envs]
        live = list(range(n))
        while live:
            explore = self.rng.random(len(live)) < epsilon
            greedy = [i for i, e in zip(live, explore, strict=True) if not e]
            values = dict(
                zip(greedy, self._values_many([state[i][0] for i in greedy]), strict=True)
            )
            for i in live:
                obs, info = state[i]
                valid = np.flatnonzero(info["action_mask"])
                if i in values:
                    best = values[i][valid]
                    action = int(self.rng.choice(valid[best == best.max()]))
                else:
                    action = int(self.rng.choice(valid))
                next_obs, _, done, _, info = envs[i].step(action)
                steps[i].append(Step(obs, action, next_obs, info["action_mask"].astype(bool), done))
                state[i] = (next_obs, info)
            live = [i for i in live if not envs[i].done]
        return [
            (s, self.space.values_from_indices(e.choices)) for s, e in zip(steps, envs, strict=True)
        ]

    def _replay_of(self, values: dict[str, Any]) -> list[Step]:
        """The episode whose decisions make ``values``."""
        return self._play(0.0, forced=self.space.indices_from_values(values))

    def _observe(
        self, proposal: Proposal, reward: float | None, status: Status, repeated: bool
    ) -> dict[str, float]:
        steps = self.playing.pop(proposal.id)
        if repeated:  # the memory holds each child once; its result taught already
            return {}
        self.planner.observe(proposal.values, reward, status, repeated)
        if status is Status.FAILED:
            reward = self.config.failure_reward
        metrics = {**self._learn(steps, float(reward)), "epsilon": self.epsilon()}
        if self.planner.active and self.config.dream:
            metrics.update(self._dream())
        return metrics

    def _dream(self) -> dict[str, float]:
        """Dyna: learn from ``dream`` imagined episodes, played as the agent would play."""
        played = self._play_many(self.config.dream, self.epsilon())
        rewards = self.planner.imagine([v for _, v in played], self.rng)
        return self._learn_imagined([s for s, _ in played], rewards)

    @abstractmethod
    def _values(self, obs: Any) -> np.ndarray:
        """Value estimates of every action in ``obs`` (greedy picks the best valid one)."""

    def _values_many(self, observations: list[Any]) -> list[np.ndarray]:
        """:meth:`_values` of several observations (an agent may batch them)."""
        return [self._values(obs) for obs in observations]

    @abstractmethod
    def _learn(self, steps: list[Step], reward: float) -> dict[str, float]:
        """Learn from a finished episode whose final reward is ``reward``."""

    @abstractmethod
    def _learn_imagined(self, episodes: list[list[Step]], rewards: np.ndarray) -> dict[str, float]:
        """Learn from imagined episodes (kept out of the memory of real children)."""

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "planner": self.planner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.playing = {}
        self.planner.load_state_dict(state["planner"])
