"""Regularized evolution (aging evolution, Real et al. 2019).

A population of the most recent ``population`` results; each proposal mutates one
active decision of the best of ``sample`` random members. The oldest member dies,
not the worst, which keeps the search from clinging to a lucky early child. A failed
child never joins the population: it cannot be a parent, and it pushes no one out.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from automl.search.searchers.base import Proposal, Searcher, Status
from automl.search.space import SearchSpace


@dataclass
class EvolutionConfig:
    population: int = 10  # members kept (the most recent results)
    sample: int = 3  # tournament size: the best of this many random members is the parent

    def __post_init__(self) -> None:
        if not 1 <= self.sample <= self.population:
            raise ValueError(
                f"need 1 <= sample <= population, got {self.sample}, {self.population}"
            )


class EvolutionSearcher(Searcher):
    name = "evolution"
    Config = EvolutionConfig

    def __init__(self, space: SearchSpace, seed: int = 0, config: EvolutionConfig | None = None):
        super().__init__(space, seed, config)
        self.population: deque[tuple[dict[str, Any], float]] = deque()

    def _propose(self, proposal_id: int) -> dict[str, Any]:
        if len(self.population) < self.config.population:
            return self.random_values()
        picks = self.rng.choice(len(self.population), size=self.config.sample, replace=False)
        parent = max((self.population[i] for i in picks), key=lambda member: member[1])[0]
        return self.space.mutate(parent, self.rng)

    def _observe(
        self, proposal: Proposal, reward: float | None, status: Status, repeated: bool
    ) -> dict[str, float]:
        if status is Status.FAILED:
            return {}
        self.population.append((proposal.values, float(reward)))
        if len(self.population) > self.config.population:
            self.population.popleft()
        return {"population_mean": sum(r for _, r in self.population) / len(self.population)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "population": [[v, r] for v, r in self.population]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.population = deque((dict(v), r) for v, r in state["population"])
