"""The searcher protocol: ask for a proposal, tell how it went, save and restore state.

The life of a proposal, which is all a new searcher's author needs to know:

1. ``ask()`` gives the proposal the next id (ids count up from 0; the count is part of
   the saved state) and calls the subclass's ``_propose(proposal_id)`` with it for one
   value per decision of the space; it returns them as a :class:`Proposal`. A subclass
   that must remember something until the result comes back (REINFORCE the
   log-probability it sampled with, TPE its Optuna trial, the RL searchers the episode
   they played) keys it by the ``proposal_id`` it was given: only ``ask`` allocates ids.
   The caller may ask again before telling (several children train at once).
2. The caller evaluates it, and ``tell(id, ...)`` reports back, in any order (the
   subclass's ``_observe`` gets the :class:`Proposal` back, id and values):

   * ``tell(id, reward)``: the child finished; ``reward`` is its dev UAR, or the
     search's objective of it (``--objective``: dev UAR traded against a cost);
   * ``tell(id, None, Status.FAILED)``: the child failed (an exception, a NaN loss, a
     dead worker). A failure is not a number: each searcher decides what it means (TPE
     marks the trial failed, evolution leaves it out of its population, the RL
     searchers learn their configured ``failure_reward``, random search ignores it);
   * ``tell(id, reward, Status.PARTIAL)``: the child was stopped early; ``reward`` is
     the best it reached so far, an underestimate of what it would have reached.

   ``repeated=True`` says the proposal was a child already trained, told its earlier
   result again (it used no budget): a searcher may weigh it as a new sample of its
   policy (REINFORCE, TPE, evolution) or skip it (the value-based RL searchers, whose
   memory holds each child once). Schedules over the search count ``n_fresh``.

3. ``enqueue(values)`` queues a child to propose before the searcher's own (the space's
   ``start_with``, as Optuna's ``enqueue_trial``): ``ask`` hands it out under the next id
   and calls the subclass's ``_adopt(proposal_id, values)``, which sets up what
   ``_observe`` needs for a proposal the searcher did not make.
   ``warm_start(children)`` tells, before the first proposal, the results of children an
   earlier search trained (``automl search --warm-start``): each gets an id as if asked,
   is adopted the same way, and is told like any other.

4. ``state_dict()`` / ``load_state_dict()`` save and restore everything (a resumed
   search continues as if it never stopped). The state holds plain containers,
   numbers, strings and tensors, so ``torch.save`` writes it and
   ``torch.load(weights_only=True)`` reads it back without unpickling code. It carries a
   fingerprint of the space and the searcher's options: a state refuses to load into a
   searcher over another space, of another kind, or with other options.

A subclass implements ``_propose(proposal_id)`` and ``_observe(proposal, reward, status,
repeated)``, and ``_adopt`` when its ``_observe`` needs what ``_propose`` kept; its
options are a dataclass named ``Config`` (what ``--searcher-opt KEY=VALUE`` sets, with
the defaults written there only); it extends ``state_dict``/``load_state_dict`` when it
keeps more state. Like Optuna's samplers or Ray Tune's ``Searcher``, a searcher only
decides: it knows neither Ray nor MLflow nor how children train.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, ClassVar

import numpy as np

from automl.search.space import SearchSpace
from runtime.errors import UserError


class Status(StrEnum):
    COMPLETE = "complete"
    FAILED = "failed"
    PARTIAL = "partial"


@dataclass(frozen=True)
class Proposal:
    """One point of the space to evaluate: ``values`` maps decision name -> choice."""

    id: int
    values: dict[str, Any]


@dataclass
class NoOptions:
    """The options of a searcher that has none."""


class Searcher(ABC):
    """Base class: numbering of proposals and the bookkeeping every searcher shares."""

    name: ClassVar[str] = "base"
    Config: ClassVar[type] = NoOptions

    def __init__(self, space: SearchSpace, seed: int = 0, config: Any = None) -> None:
        self.space = space
        self.seed = seed
        self.config = config if config is not None else self.Config()
        self.rng = np.random.default_rng(seed)
        self.next_id = 0
        self.pending: dict[int, dict[str, Any]] = {}
        self.queued: list[dict[str, Any]] = []  # enqueued children, proposed first
        self.best_reward = float("-inf")
        self.n_told = 0
        self.n_failed = 0
        self.n_repeated = 0
        self.budget: int | None = None

    def set_budget(self, children: int) -> None:
        """How many children the search will train. An optional hook: searchers that
        schedule their exploration over the search (the RL searchers) read it."""
        self.budget = children

    def ask(self) -> Proposal:
        proposal_id = self.next_id
        self.next_id += 1
        if self.queued:
            values = self.queued.pop(0)
            self._adopt(proposal_id, values)
        else:
            values = self._propose(proposal_id)
        self.pending[proposal_id] = values
        return Proposal(proposal_id, values)

    def enqueue(self, *children: dict[str, Any]) -> None:
        """Propose these children (one value per decision each) before any of the
        searcher's own, in this order."""
        self.queued.extend(dict(values) for values in children)

    def tell(
        self,
        proposal_id: int,
        reward: float | None,
        status: Status = Status.COMPLETE,
        repeated: bool = False,
    ) -> dict[str, float]:
        """Report how a proposal went; returns metrics worth logging (empty unless the
        searcher updated itself)."""
        if (reward is None) != (status is Status.FAILED):
            raise ValueError(f"a {status} proposal needs {'no' if reward is None else 'a'} reward")
        proposal = Proposal(proposal_id, self.pending.pop(proposal_id))
        self.n_told += 1
        self.n_repeated += repeated
        if status is Status.FAILED:
            self.n_failed += 1
        elif status is Status.COMPLETE:
            self.best_reward = max(self.best_reward, float(reward))
        return self._observe(proposal, reward, status, repeated)

    def warm_start(self, children: list[tuple[dict[str, Any], float, Status]]) -> None:
        """Learn from children trained before this search, (values, reward, status) each,
        as if proposed and told; they count as fresh results in schedules over the search."""
        for values, reward, status in children:
            proposal_id = self.next_id
            self.next_id += 1
            self.pending[proposal_id] = values
            self._adopt(proposal_id, values)
            self.tell(proposal_id, reward, status)

    def _adopt(self, proposal_id: int, values: dict[str, Any]) -> None:
        """Keep what ``_observe`` will need for ``values``, a proposal made elsewhere (a
        child of an earlier search), as ``_propose`` keeps it for its own."""
        return None  # most searchers keep nothing per proposal

    @property
    def n_fresh(self) -> int:
        """Results of children trained for this search (not repeated ones)."""
        return self.n_told - self.n_repeated

    @abstractmethod
    def _propose(self, proposal_id: int) -> dict[str, Any]:
        """One value per decision, for the proposal ``ask`` numbered ``proposal_id`` (the id
        ``tell`` will report it under)."""

    @abstractmethod
    def _observe(
        self, proposal: Proposal, reward: float | None, status: Status, repeated: bool
    ) -> dict[str, float]: ...

    def random_values(self) -> dict[str, Any]:
        return {d.name: d.choices[self.rng.integers(len(d.choices))] for d in self.space.decisions}

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "space": fingerprint(self.space.describe()),
            "space_description": self.space.describe(),
            "options": asdict(self.config),
            "seed": self.seed,
            "rng": self.rng.bit_generator.state,
            "next_id": self.next_id,
            "queued": [dict(values) for values in self.queued],
            "best_reward": self.best_reward,
            "n_told": self.n_told,
            "n_failed": self.n_failed,
            "n_repeated": self.n_repeated,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore; proposals that were pending at save time are forgotten (asked again).

        Raises :class:`UserError` saying what differs when the state was saved by another
        kind of searcher, over another space, or with other options."""
        self.check_compatible(state)
        self.seed = state["seed"]
        self.rng.bit_generator.state = state["rng"]
        self.next_id = state["next_id"]
        self.queued = [dict(values) for values in state.get("queued", [])]
        self.best_reward = state["best_reward"]
        self.n_told = state["n_told"]
        self.n_failed = state["n_failed"]
        self.n_repeated = state["n_repeated"]
        self.pending = {}

    def check_compatible(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise UserError(
                f"the saved state is of searcher {state.get('name')!r}, not {self.name!r}"
            )
        if state.get("space") != fingerprint(self.space.describe()):
            found = changes(state.get("space_description", {}), self.space.describe())
            raise UserError(f"the search space changed since the state was saved: {_few(found)}")
        options = asdict(self.config)
        if state.get("options") != options:
            found = changes(state.get("options", {}), options)
            raise UserError(f"the searcher options differ from the saved state: {_few(found)}")


def fingerprint(description: dict[str, Any]) -> str:
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``["decisions.lr.choices: [0.1] -> [0.1, 0.2]", ...]``: what differs, key by key."""
    found = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "(absent)"), new.get(key, "(absent)")
        if isinstance(a, dict) and isinstance(b, dict):
            found += changes(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: {a} -> {b}")
    return found


def _few(found: list[str], limit: int = 3) -> str:
    more = f" (and {len(found) - limit} more)" if len(found) > limit else ""
    return "; ".join(found[:limit]) + more
