"""The searcher protocol: ask for a proposal, tell its reward, save and restore state.

Like Optuna's samplers or Ray Tune's ``Searcher``, a searcher only decides: it knows
neither Ray nor MLflow nor how children train. Proposals carry an id so rewards may
come back in any order (children finish asynchronously). ``state_dict`` returns plain
containers, numbers, strings and tensors, so ``torch.save`` writes it and
``torch.load(weights_only=True)`` reads it back without unpickling code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from automl.space import SearchSpace


@dataclass(frozen=True)
class Proposal:
    """One point of the space to evaluate: ``values`` maps decision name -> choice."""

    id: int
    values: dict[str, Any]


class Searcher(ABC):
    """Base class: numbering of proposals and the bookkeeping every searcher shares."""

    name: str = "base"

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        self.space = space
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.next_id = 0
        self.pending: dict[int, dict[str, Any]] = {}
        self.best_reward = float("-inf")
        self.n_told = 0

    def ask(self) -> Proposal:
        values = self._propose()
        proposal = Proposal(self.next_id, values)
        self.pending[proposal.id] = values
        self.next_id += 1
        return proposal

    def tell(self, proposal_id: int, reward: float) -> dict[str, float]:
        """Record a reward; returns metrics worth logging (empty unless the searcher updated)."""
        values = self.pending.pop(proposal_id)
        self.n_told += 1
        self.best_reward = max(self.best_reward, reward)
        return self._observe(values, reward)

    @abstractmethod
    def _propose(self) -> dict[str, Any]: ...

    @abstractmethod
    def _observe(self, values: dict[str, Any], reward: float) -> dict[str, float]: ...

    def random_values(self) -> dict[str, Any]:
        return {d.name: d.choices[self.rng.integers(len(d.choices))] for d in self.space.decisions}

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "rng": self.rng.bit_generator.state,
            "next_id": self.next_id,
            "best_reward": self.best_reward,
            "n_told": self.n_told,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore; proposals that were pending at save time are forgotten (asked again)."""
        if state["name"] != self.name:
            raise ValueError(f"state of searcher {state['name']!r} given to {self.name!r}")
        self.seed = state["seed"]
        self.rng.bit_generator.state = state["rng"]
        self.next_id = state["next_id"]
        self.best_reward = state["best_reward"]
        self.n_told = state["n_told"]
        self.pending = {}
