"""Local search (White et al. 2020: the strongest simple method on small tabular NAS benchmarks).

Start from the best of ``start`` random children; evaluate the untried neighbours of the
current centre (every child one active decision away, in a random order); the first one
told that beats the centre becomes the new centre and its neighbours the new queue. When
every neighbour of a centre has been told and none beat it (a local optimum), restart:
``start`` random children again, the best of them the next centre. With several children
in flight, a proposal asked while the queue is empty but neighbours are still training
is a random child (it joins the next restart). A failed child is tried, never a centre;
a child stopped early counts with its partial reward (a lower bound).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from automl.child import arch_key
from automl.search.searchers.base import Proposal, Searcher, Status
from automl.search.space import SearchSpace

RANDOM_TRIES = 100  # random draws before a random proposal may be a child already tried


@dataclass
class LocalConfig:
    start: int = 10  # random children whose best is the first centre (and after a restart)

    def __post_init__(self) -> None:
        if self.start < 1:
            raise ValueError(f"start must be >= 1, got {self.start}")


class LocalSearcher(Searcher):
    name = "local"
    Config = LocalConfig

    def __init__(self, space: SearchSpace, seed: int = 0, config: LocalConfig | None = None):
        super().__init__(space, seed, config)
        self.centre: tuple[dict[str, Any], float] | None = None
        self.queue: list[dict[str, Any]] = []  # untried neighbours of the centre, next last
        self.pool: list[tuple[dict[str, Any], float]] = []  # this restart's random children
        self.tried: set[str] = set()  # children told
        self.in_flight: dict[int, str] = {}  # proposal id -> its child
        self.waiting: set[int] = set()  # proposals of the centre's neighbourhood in flight

    def _key(self, values: dict[str, Any]) -> str:
        return arch_key(self.space.to_architecture(values))

    def _propose(self, proposal_id: int) -> dict[str, Any]:
        while self.centre is not None and self.queue:
            values = self.queue.pop()
            if self._fresh(values):
                self.waiting.add(proposal_id)
                return self._take(proposal_id, values)
        if self.centre is not None and not self.waiting:  # a local optimum: restart
            self.centre = None
        return self._take(proposal_id, self._random_untried())

    def _adopt(self, proposal_id: int, values: dict[str, Any]) -> None:
        self.in_flight[proposal_id] = self._key(values)

    def _fresh(self, values: dict[str, Any]) -> bool:
        key = self._key(values)
        return key not in self.tried and key not in self.in_flight.values()

    def _random_untried(self) -> dict[str, Any]:
        for _ in range(RANDOM_TRIES):
            values = self.random_values()
            if self._fresh(values):
                return values
        return values

    def _take(self, proposal_id: int, values: dict[str, Any]) -> dict[str, Any]:
        self.in_flight[proposal_id] = self._key(values)
        return values

    def _observe(
        self, proposal: Proposal, reward: float | None, status: Status, repeated: bool
    ) -> dict[str, float]:
        from_centre = proposal.id in self.waiting
        self.waiting.discard(proposal.id)
        self.tried.add(self.in_flight.pop(proposal.id))
        if status is Status.FAILED:
            return {}
        if from_centre and self.centre is not None:
            if reward > self.centre[1]:
                self._move_to(proposal.values, float(reward))
        else:
            self.pool.append((proposal.values, float(reward)))
            if self.centre is None and len(self.pool) >= self.config.start:
                self._move_to(*max(self.pool, key=lambda member: member[1]))
                self.pool = []
        return {"local/centre_reward": self.centre[1]} if self.centre else {}

    def _move_to(self, values: dict[str, Any], reward: float) -> None:
        self.centre = (values, reward)
        self.queue = self.space.neighbours(values)
        order = self.rng.permutation(len(self.queue))
        self.queue = [self.queue[i] for i in order]
        self.waiting = set()  # results of the old neighbourhood count as random children

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "centre": None if self.centre is None else list(self.centre),
            "queue": list(self.queue),
            "pool": [[v, r] for v, r in self.pool],
            "tried": sorted(self.tried),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        centre = state["centre"]
        self.centre = None if centre is None else (dict(centre[0]), centre[1])
        self.queue = [dict(v) for v in state["queue"]]
        self.pool = [(dict(v), r) for v, r in state["pool"]]
        self.tried = set(state["tried"])
        self.in_flight, self.waiting = {}, set()
