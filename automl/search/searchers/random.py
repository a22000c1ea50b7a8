"""Random search: every decision uniform and independent. The baseline all others must beat."""

from __future__ import annotations

from typing import Any

from automl.search.searchers.base import Proposal, Searcher, Status


class RandomSearcher(Searcher):
    """Failures and partial results change nothing: the next proposal ignores the past."""

    name = "random"

    def _propose(self, proposal_id: int) -> dict[str, Any]:
        return self.random_values()

    def _observe(
        self, proposal: Proposal, reward: float | None, status: Status, repeated: bool
    ) -> dict[str, float]:
        return {}
