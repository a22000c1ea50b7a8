"""Searchers: ask/tell strategies over a :class:`~automl.search.space.SearchSpace`.

``SEARCHERS`` is the registry: the command line takes its choices from it. Entries are
imported when used (as Ray Tune's search algorithm registry does), so ``--help`` and the
option checks need not import torch or Optuna.
"""

from __future__ import annotations

import importlib
from typing import Any

from automl.search.searchers.base import Proposal, Searcher, Status
from automl.search.space import SearchSpace
from runtime.cli import build_config
from runtime.errors import UserError

SEARCHERS: dict[str, str] = {
    "reinforce": "automl.search.searchers.reinforce:ReinforceSearcher",
    "random": "automl.search.searchers.random:RandomSearcher",
    "evolution": "automl.search.searchers.evolution:EvolutionSearcher",
    "tpe": "automl.search.searchers.tpe:TPESearcher",
    "local": "automl.search.searchers.local:LocalSearcher",
    "qlearning": "automl.search.searchers.qlearning:QLearningSearcher",
    "dqn": "automl.search.searchers.dqn:DQNSearcher",
}


def searcher_class(name: str) -> type[Searcher]:
    if name not in SEARCHERS:
        raise UserError(f"unknown --searcher {name!r}; choose from {sorted(SEARCHERS)}")
    module, _, cls = SEARCHERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def make_searcher(name: str, space: SearchSpace, seed: int = 0, **options: Any) -> Searcher:
    """A searcher by registry name, its ``Config`` built from ``options``."""
    cls = searcher_class(name)
    return cls(space, seed, build_config(cls.Config, options, f"--searcher {name} options"))


__all__ = ["SEARCHERS", "Proposal", "Searcher", "Status", "make_searcher", "searcher_class"]
