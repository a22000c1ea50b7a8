"""Searchers: ask/tell strategies over a :class:`~automl.space.SearchSpace`."""

from __future__ import annotations

from typing import Any

from automl.errors import UserError
from automl.searchers.base import Proposal, Searcher
from automl.searchers.evolution import EvolutionSearcher
from automl.searchers.random import RandomSearcher
from automl.searchers.reinforce import ReinforceSearcher
from automl.searchers.tpe import TPESearcher
from automl.space import SearchSpace

SEARCHERS: dict[str, type[Searcher]] = {
    cls.name: cls for cls in (ReinforceSearcher, RandomSearcher, EvolutionSearcher, TPESearcher)
}


def make_searcher(name: str, space: SearchSpace, seed: int = 0, **options: Any) -> Searcher:
    if name not in SEARCHERS:
        raise UserError(f"unknown --searcher {name!r}; choose from {sorted(SEARCHERS)}")
    return SEARCHERS[name](space, seed, **options)


__all__ = ["SEARCHERS", "Proposal", "Searcher", "make_searcher"]
