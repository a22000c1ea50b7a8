"""What a search maximises: dev UAR alone, or dev UAR traded against a cost.

``uar-latency`` and ``uar-params`` use MnasNet's soft constraint (Tan et al. 2019):
``reward = UAR * (cost / target) ** weight`` with ``weight = -0.07``: a child twice as
costly as the target scores 4.7% lower, one at half the target 5% higher, so accuracy
still leads and cost breaks near-ties. Whatever the objective, the summary keeps the
Pareto fronts (dev UAR against parameters, and against latency) of the finished children.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

KINDS = {"uar": None, "uar-latency": "latency_ms", "uar-params": "n_params"}


@dataclass(frozen=True)
class Objective:
    kind: str = "uar"
    target: float | None = None  # the cost the trade-off is centred on (ms or parameters)
    weight: float = -0.07

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"--objective {self.kind}: choose from {', '.join(KINDS)}")
        if self.cost_key and (self.target is None or self.target <= 0):
            raise ValueError(f"--objective {self.kind} needs --target, a cost > 0")
        if not self.cost_key and self.target is not None:
            raise ValueError("--target needs --objective uar-latency or uar-params")

    @property
    def cost_key(self) -> str | None:
        return KINDS[self.kind]

    def reward(self, dev_uar: float, costs: dict[str, Any]) -> float:
        """The reward of a child (finished, or stopped early: its costs are measured before
        its first epoch); a cost not measured leaves its dev UAR as it is."""
        cost = costs.get(self.cost_key) if self.cost_key else None
        if cost is None or self.target is None:
            return dev_uar
        return dev_uar * (max(float(cost), 1e-9) / self.target) ** self.weight


def pareto_front(rows: Sequence[dict[str, Any]], cost_key: str) -> list[dict[str, Any]]:
    """The rows no other row beats on both dev UAR (higher) and ``cost_key`` (lower),
    cheapest first."""
    ranked = sorted(
        (r for r in rows if r.get(cost_key) is not None and r.get("dev_uar") is not None),
        key=lambda r: (r[cost_key], -r["dev_uar"]),
    )
    front: list[dict[str, Any]] = []
    for row in ranked:
        if not front or row["dev_uar"] > front[-1]["dev_uar"]:
            front.append(row)
    return front
