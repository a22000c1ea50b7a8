"""Regularized evolution (aging evolution, Real et al. 2019).

A population of the most recent ``population`` results; each proposal mutates one
active decision of the best of ``sample`` random members. The oldest member dies,
not the worst, which keeps the search from clinging to a lucky early child.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from automl.searchers.base import Searcher
from automl.space import SearchSpace


class EvolutionSearcher(Searcher):
    name = "evolution"

    def __init__(self, space: SearchSpace, seed: int = 0, population: int = 10, sample: int = 3):
        super().__init__(space, seed)
        self.population_size, self.sample_size = population, sample
        self.population: deque[tuple[dict[str, Any], float]] = deque()

    def _propose(self) -> dict[str, Any]:
        if len(self.population) < self.population_size:
            return self.random_values()
        picks = self.rng.choice(len(self.population), size=self.sample_size, replace=False)
        parent = max((self.population[i] for i in picks), key=lambda member: member[1])[0]
        return self._mutate(parent)

    def _mutate(self, parent: dict[str, Any]) -> dict[str, Any]:
        child = dict(parent)
        mutable = [
            d
            for d in self.space.decisions
            if len(d.choices) > 1 and self.space.is_active(d, parent)
        ]
        if not mutable:
            return child
        decision = mutable[self.rng.integers(len(mutable))]
        others = [c for c in decision.choices if c != parent[decision.name]]
        child[decision.name] = others[self.rng.integers(len(others))]
        return child

    def _observe(self, values: dict[str, Any], reward: float) -> dict[str, float]:
        self.population.append((values, reward))
        if len(self.population) > self.population_size:
            self.population.popleft()
        return {"population_mean": sum(r for _, r in self.population) / len(self.population)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "population": [[v, r] for v, r in self.population]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.population = deque((dict(v), r) for v, r in state["population"])
