"""Building an architecture one decision at a time, as a Gymnasium environment.

An episode is one child network. At each step the agent makes the next decision
(``sizes[t]`` choices); a decision whose gate is off (the activation of an absent layer)
is skipped, taking its first choice. After the last decision the episode terminates and
the reward is ``evaluator(choices)``: a child's dev UAR in a search, a lookup in a
tabular benchmark. Every other step's reward is 0 (MetaQNN's setting: the reward comes
at the end of the sequence). The environment knows nothing of children or corpora:
decisions are sizes and gates, and the evaluator is injected.

Observations (``observation=``):

* ``"history"``: a float vector, one-hot of the position, then one-hot of each decision
  made so far (zeros for decisions not made yet or skipped). What a DQN reads.
* ``"local"``: a discrete state for (position, previous decision's choice, or "skipped"),
  MetaQNN's abstraction of a layer's context, so a tabular Q-learner generalises across
  architectures that share it. ``local_state`` documents the numbering.

Actions are ``Discrete(max(sizes))``. Where a decision has fewer choices, action ``a``
means choice ``a % sizes[t]``; ``info["action_mask"]`` marks the valid actions, for
agents that mask (the searchers do).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

#: (gating decision index, its choice that switches this decision off), or None
Gate = tuple[int, int] | None


class ArchitectureEnv(gym.Env):
    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        sizes: Sequence[int],
        evaluator: Callable[[list[int]], float] | None = None,
        gates: Sequence[Gate] | None = None,
        observation: str = "history",
    ) -> None:
        if not sizes or min(sizes) < 1:
            raise ValueError(f"sizes must be positive, got {list(sizes)}")
        if observation not in ("history", "local"):
            raise ValueError(f"observation must be 'history' or 'local', got {observation!r}")
        self.sizes = [int(n) for n in sizes]
        self.gates = list(gates) if gates is not None else [None] * len(self.sizes)
        self.evaluator = evaluator
        self.observation = observation
        n = len(self.sizes)
        self.action_space = gym.spaces.Discrete(max(self.sizes))
        if observation == "history":
            shape = (n + 1 + sum(self.sizes),)
            self.observation_space = gym.spaces.Box(0.0, 1.0, shape, dtype=np.float32)
        else:
            # position 0: one start state; position t > 0: one per previous choice, plus "skipped";
            # the terminal state last
            self.local_offsets = np.cumsum([0, 1, *(s + 1 for s in self.sizes[:-1])])
            self.observation_space = gym.spaces.Discrete(int(self.local_offsets[-1]) + 1)
        self.choice_offsets = np.cumsum([n + 1, *self.sizes[:-1]])
        self.choices: list[int] = []
        self.made: list[bool] = []

    # -- the episode ---------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.choices, self.made = [], []
        self._skip_inactive()
        return self._obs(), self._info()

    def step(self, action: int):
        if self.done:
            raise RuntimeError("step() after the episode ended: call reset()")
        self.choices.append(int(action) % self.sizes[len(self.choices)])
        self.made.append(True)
        self._skip_inactive()
        if not self.done:
            return self._obs(), 0.0, False, False, self._info()
        reward = float(self.evaluator(list(self.choices))) if self.evaluator else 0.0
        return self._obs(), reward, True, False, self._info()

    @property
    def done(self) -> bool:
        return len(self.choices) == len(self.sizes)

    def active(self, t: int, choices: Sequence[int]) -> bool:
        gate = self.gates[t]
        return gate is None or choices[gate[0]] != gate[1]

    def _skip_inactive(self) -> None:
        while not self.done and not self.active(len(self.choices), self.choices):
            self.choices.append(0)
            self.made.append(False)

    # -- what the agent sees ---------------------------------------------------------------

    def _info(self) -> dict[str, Any]:
        mask = np.zeros(self.action_space.n, dtype=np.int8)
        if not self.done:
            mask[: self.sizes[len(self.choices)]] = 1
        return {"action_mask": mask, "position": len(self.choices)}

    def _obs(self) -> np.ndarray | int:
        return self.history_vector() if self.observation == "history" else self.local_state()

    def history_vector(self) -> np.ndarray:
        x = np.zeros(self.observation_space.shape, dtype=np.float32)
        x[len(self.choices)] = 1.0
        for t, (choice, made) in enumerate(zip(self.choices, self.made, strict=True)):
            if made:
                x[self.choice_offsets[t] + choice] = 1.0
        return x

    def local_state(self) -> int:
        """0: the start; ``offsets[t] + c`` at position t after choice c of decision t-1
        (``c = sizes[t-1]``: it was skipped); the last state: the episode is over."""
        t = len(self.choices)
        if t == 0:
            return 0
        if self.done:
            return int(self.observation_space.n) - 1
        previous = self.choices[-1] if self.made[-1] else self.sizes[t - 1]
        return int(self.local_offsets[t] + previous)


class TableEvaluator:
    """Rewards read from a JSON table: ``{"sizes": [...], "gates": [...], "rewards":
    {"0,2,1": 0.83, ...}}``, keyed by the comma-joined choices (skipped decisions 0)."""

    def __init__(self, path: str | Path) -> None:
        raw = json.loads(Path(path).read_text())
        self.sizes = raw["sizes"]
        self.gates = [tuple(g) if g is not None else None for g in raw["gates"]]
        self.rewards = {tuple(map(int, k.split(","))): float(v) for k, v in raw["rewards"].items()}

    def __call__(self, choices: list[int]) -> float:
        return self.rewards[tuple(choices)]


def from_table(table: str, observation: str = "history") -> ArchitectureEnv:
    """The registered ``ArchitectureSearch-v0``: decisions and rewards from a table file."""
    evaluator = TableEvaluator(table)
    return ArchitectureEnv(evaluator.sizes, evaluator, evaluator.gates, observation)
