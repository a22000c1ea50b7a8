"""A DQN designs the network: ``rl``'s DQN agent on the architecture environment.

The state is the whole sequence so far (``rl``'s architecture environment's ``"history"``
vector: the position one-hot and every choice made, one-hot), so the Q-network
generalises across prefixes rather than tabulating them. The agent is ``rl.dqn``'s:
its Q-network, replay buffer and (double) DQN gradient step, with the actions a
decision does not have masked out of the targets. After every told child its
transitions enter the replay buffer (reward on the last one, gamma 1) and the network
takes ``gradient_steps`` steps; the target network is copied every ``target_update``.
Epsilon is annealed from 1.0 to 0.1 over ``explore_fraction`` of the budget.
Imagined episodes (planning with the reward model, :mod:`~automl.search.searchers.episodes`)
go into a replay of their own, made afresh each round (so an old draw of the model does
not linger among real children), and the network takes ``dream_steps`` steps on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from automl.search.searchers.episodes import EpisodeSearcher, Step
from automl.search.searchers.planning import PlanningOptions
from automl.search.space import SearchSpace
from rl.buffers import ReplayBuffer
from rl.dqn import DQNConfig, QNetwork, copy_weights, gradient_step, stack


@dataclass
class DQNSearcherConfig(PlanningOptions):
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    learning_rate: float = 1e-3
    batch_size: int = 32
    gradient_steps: int = 50  # per told child (replayed from its small memory)
    dream_steps: int = 10  # per told child, on its imagined episodes (with a model)
    target_update: int = 100  # gradient steps between copies to the target network
    double: bool = True
    dueling: bool = True
    gamma: float = 1.0  # undiscounted: the child's reward is the only reward
    buffer_size: int = 5_000  # transitions (a child is one per decision)
    start_epsilon: float = 1.0
    end_epsilon: float = 0.1
    explore_fraction: float = 0.5  # of the budget over which epsilon anneals
    failure_reward: float = 0.0  # what a failed child teaches

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.batch_size, self.gradient_steps, self.target_update, self.buffer_size) < 1:
            raise ValueError("batch_size, gradient_steps, target_update, buffer_size must be >= 1")
        if self.dream_steps < 1:
            raise ValueError(f"dream_steps must be >= 1, got {self.dream_steps}")
        if not 0 <= self.end_epsilon <= self.start_epsilon <= 1:
            raise ValueError("need 0 <= end_epsilon <= start_epsilon <= 1")


class DQNSearcher(EpisodeSearcher):
    name = "dqn"
    Config = DQNSearcherConfig
    observation = "history"

    def __init__(self, space: SearchSpace, seed: int = 0, config: DQNSearcherConfig | None = None):
        super().__init__(space, seed, config)
        c = self.config
        self.agent = DQNConfig(
            learning_rate=c.learning_rate,
            batch_size=c.batch_size,
            gamma=c.gamma,
            hidden=c.hidden,
            double=c.double,
            dueling=c.dueling,
        )
        n_obs = int(self.env.observation_space.shape[0])
        # a population of one, seeded by the searcher's seed (global torch state untouched)
        self.q = QNetwork(n_obs, self.n_actions, c.hidden, c.dueling, seeds=[seed])
        self.target = QNetwork(n_obs, self.n_actions, c.hidden, c.dueling, seeds=[seed])
        self.optimizer = torch.optim.Adam(self.q.parameters(), lr=c.learning_rate)
        self.buffer = ReplayBuffer(c.buffer_size, 1, (n_obs,), n_step=1, gamma=c.gamma, seed=seed)
        self.positions = len(self.space.decisions) + 1
        sizes = self.space.sizes
        self.valid = torch.zeros(self.positions, self.n_actions, dtype=torch.bool)
        for t, n in enumerate(sizes):  # the last position (the episode is over) allows none
            self.valid[t, :n] = True
        self.gradient_steps = 0

    @torch.no_grad()
    def _values(self, obs: np.ndarray) -> np.ndarray:
        return self.q(torch.from_numpy(obs)[None, None])[0, 0].numpy()

    @torch.no_grad()
    def _values_many(self, observations: list[np.ndarray]) -> list[np.ndarray]:
        if not observations:
            return []
        return list(self.q(torch.from_numpy(np.stack(observations))[None])[0].numpy())

    def _learn(self, steps: list[Step], reward: float) -> dict[str, float]:
        _add_episode(self.buffer, steps, reward)
        if len(self.buffer) < self.config.batch_size:
            return {}
        return {"dqn/loss": self._train_on(self.buffer)}

    def _learn_imagined(self, episodes: list[list[Step]], rewards: np.ndarray) -> dict[str, float]:
        c = self.config
        size = c.dream * self.positions
        dreams = ReplayBuffer(size, 1, self.buffer.obs.shape[2:], n_step=1, gamma=c.gamma,
                              seed=int(self.rng.integers(2**31)))  # fmt: skip
        for steps, reward in zip(episodes, rewards.tolist(), strict=True):
            _add_episode(dreams, steps, reward)
        if len(dreams) < c.batch_size:
            return {}
        loss = self._train_on(dreams, c.dream_steps)
        return {"dqn/dream_loss": loss, "dqn/dream_reward": float(rewards.mean())}

    def _train_on(self, buffer: ReplayBuffer, steps: int | None = None) -> float:
        """``steps`` (``gradient_steps``) double-DQN steps on batches of ``buffer``; their
        mean loss."""
        losses = []
        steps = self.config.gradient_steps if steps is None else steps
        for batch in buffer.sample_many(steps, self.config.batch_size):
            next_mask = self.valid[batch.next_obs[:, : self.positions].argmax(1)]
            loss, _ = gradient_step(
                self.q, self.target, self.optimizer, stack([batch]), self.agent, next_mask[None]
            )
            losses.append(float(loss))
            self.gradient_steps += 1
            if self.gradient_steps % self.config.target_update == 0:
                copy_weights(self.q, self.target)
        return float(np.mean(losses))

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "q": self.q.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "buffer": self.buffer.state_dict(),
            "gradient_steps": self.gradient_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.q.load_state_dict(state["q"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.buffer.load_state_dict(state["buffer"])
        self.gradient_steps = state["gradient_steps"]


def _add_episode(buffer: ReplayBuffer, steps: list[Step], reward: float) -> None:
    """An episode's transitions, its reward on the last one (gamma 1: the only reward)."""
    for i, s in enumerate(steps):
        r = reward if i == len(steps) - 1 else 0.0
        buffer.add(
            s.obs[None], s.next_obs[None], np.array([s.action]), np.array([r]),
            np.array([s.done]), np.array([False]),
        )  # fmt: skip
