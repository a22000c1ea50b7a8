"""MetaQNN (Baker et al., ICLR 2017): tabular Q-learning over the sequence of decisions.

The state is MetaQNN's abstraction of a layer's context: the position in the sequence
and the previous decision's choice (or "skipped"), ``rl``'s architecture environment's
``"local"`` observation. So an architecture's parts are valued where they occur, and a
good choice found in one child carries to others that share its context. The reward
comes at the end of the sequence (gamma 1: only the child's reward counts).

After every told child, MetaQNN's experience replay: ``replay`` finished children are
drawn from the memory (the newest always among them) and each is replayed backwards.

One change to MetaQNN's update, for a reason of this abstraction: the state after
decision t does not hold the decisions before t, so a one-step target
``max_a Q(s_{t+1}, a)`` is the same whatever those earlier decisions were, and the
final reward cannot credit them (on a reward that adds up per decision, the first
decision's Q-values come out equal). The target is therefore the lambda-return computed
backwards along the replayed episode (Peng's Q(lambda)):
``G_t = (1 - trace) * max_a Q(s_{t+1}, a) + trace * G_{t+1}``, ``G_last = reward``;
``trace`` 0 is MetaQNN's one-step Q-learning, 1 the Monte-Carlo return. Maxima run over
the actions valid in a state. Epsilon is annealed from 1.0 to 0.1 over
``explore_fraction`` of the budget. Imagined episodes (planning with the reward model,
:mod:`~automl.search.searchers.episodes`) are replayed the same way, once each, and are
not kept in the memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from automl.search.searchers.episodes import EpisodeSearcher, Step
from automl.search.searchers.planning import PlanningOptions
from automl.search.space import SearchSpace


@dataclass
class QLearningConfig(PlanningOptions):
    alpha: float = 0.1  # Q-table learning rate (MetaQNN: 0.01 over thousands of children)
    gamma: float = 1.0  # undiscounted: the child's reward is the only reward
    q_init: float = 0.5  # MetaQNN's initial Q-value
    replay: int = 100  # finished children replayed after each result (MetaQNN: 100)
    trace: float = 0.8  # lambda of the targets: 0 MetaQNN's one-step, 1 Monte-Carlo
    start_epsilon: float = 1.0
    end_epsilon: float = 0.1
    explore_fraction: float = 0.5  # of the budget over which epsilon anneals
    failure_reward: float = 0.0  # what a failed child teaches

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.alpha <= 1 or not 0 <= self.gamma <= 1 or not 0 <= self.trace <= 1:
            raise ValueError("alpha must be in (0, 1], gamma and trace in [0, 1]")
        if self.replay < 1 or not 0 <= self.end_epsilon <= self.start_epsilon <= 1:
            raise ValueError("replay must be >= 1 and 0 <= end_epsilon <= start_epsilon <= 1")


class QLearningSearcher(EpisodeSearcher):
    name = "qlearning"
    Config = QLearningConfig
    observation = "local"

    def __init__(self, space: SearchSpace, seed: int = 0, config: QLearningConfig | None = None):
        super().__init__(space, seed, config)
        n_states = int(self.env.observation_space.n)
        self.q = np.full((n_states, self.n_actions), self.config.q_init)
        self.valid = self._valid_actions(n_states)
        self.memory: list[tuple[list[int], list[int], float]] = []  # states, actions, reward

    def _valid_actions(self, n_states: int) -> np.ndarray:
        """[state, action]: which actions a state allows (none in the terminal state)."""
        valid = np.zeros((n_states, self.n_actions), bool)
        offsets, sizes = self.env.local_offsets, self.env.sizes
        valid[0, : sizes[0]] = True
        for t in range(1, len(sizes)):
            valid[offsets[t] : offsets[t] + sizes[t - 1] + 1, : sizes[t]] = True
        return valid

    def _values(self, obs: int) -> np.ndarray:
        return self.q[obs]

    def _learn(self, steps: list[Step], reward: float) -> dict[str, float]:
        self.memory.append((*_states_actions(steps), reward))
        drawn = self.rng.integers(len(self.memory), size=self.config.replay - 1)
        for i in [len(self.memory) - 1, *drawn.tolist()]:
            self._replay(*self.memory[i])
        start = self.q[0][self.valid[0]]
        return {"qlearning/start_value": float(start.max())}

    def _learn_imagined(self, episodes: list[list[Step]], rewards: np.ndarray) -> dict[str, float]:
        for steps, reward in zip(episodes, rewards.tolist(), strict=True):
            self._replay(*_states_actions(steps), reward)
        return {"qlearning/dream_reward": float(rewards.mean())}

    def _replay(self, states: list[int], actions: list[int], reward: float) -> None:
        c, target = self.config, reward
        for t in range(len(actions) - 1, -1, -1):  # backwards: G_t needs G_{t+1}
            if t < len(actions) - 1:
                after = states[t + 1]
                bootstrap = c.gamma * self.q[after][self.valid[after]].max()
                target = (1 - c.trace) * bootstrap + c.trace * c.gamma * target
            s, a = states[t], actions[t]
            self.q[s, a] += c.alpha * (target - self.q[s, a])

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "q": torch.from_numpy(self.q.copy()),
            "memory": [[list(s), list(a), r] for s, a, r in self.memory],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.q = state["q"].numpy().copy()
        self.memory = [(list(s), list(a), r) for s, a, r in state["memory"]]


def _states_actions(steps: list[Step]) -> tuple[list[int], list[int]]:
    return [s.obs for s in steps] + [steps[-1].next_obs], [s.action for s in steps]
