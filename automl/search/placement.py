"""What each child asks Ray for: :mod:`runtime.resources`' rules, with what a child is.

A condition may name ``params`` (the child's trainable parameters on this corpus, counted
from the network it will train) or any field of its architecture as its MLflow run names
it (``layers.count``, ``layers.0.units``, ``hparams.batch_size``, ``family``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from automl.search.space import SearchSpace
from runtime.resources import Rule, TrialResources, parse_rules
from runtime.tracking import flatten

__all__ = ["PARAMS", "ChildResources", "Rule", "parse_rules", "space_fields"]
PARAMS = "params"


@dataclass(frozen=True)
class ChildResources(TrialResources):
    """A search's children: conditions see the architecture and its parameter count."""

    trial = "child"
    n_features: int = 0  # of the corpus, to count a child's parameters
    n_classes: int = 0

    def for_child(self, architecture: dict[str, Any]) -> dict[str, float]:
        return self.for_trial(architecture)

    def facts(self, description: dict[str, Any]) -> dict[str, str]:
        """The architecture's fields, and its parameter count when a condition names it."""
        facts = super().facts(description)
        if any(r.when.field == PARAMS for r in self.conditional):
            from automl.child import build_model, count_parameters  # torch: when asked

            model = build_model(description, self.n_features, self.n_classes)
            facts[PARAMS] = str(count_parameters(model))
        return facts

    def derived_fields(self) -> set[str]:
        return {PARAMS}


def space_fields(space: SearchSpace) -> set[str]:
    """The fields the children of ``space`` can have: those of the architectures that take
    each decision's first, second, ... choice (so every block and every choice's fields)."""
    known: set[str] = set()
    for i in range(max(space.sizes, default=1)):
        values = space.values_from_indices([min(i, n - 1) for n in space.sizes])
        known |= flatten("", space.to_architecture(values)).keys()
    return known
