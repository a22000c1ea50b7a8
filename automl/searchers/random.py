"""Random search: every decision uniform and independent. The baseline all others must beat."""

from __future__ import annotations

from typing import Any

from automl.searchers.base import Searcher


class RandomSearcher(Searcher):
    name = "random"

    def _propose(self) -> dict[str, Any]:
        return self.random_values()

    def _observe(self, values: dict[str, Any], reward: float) -> dict[str, float]:
        return {}
