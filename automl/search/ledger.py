"""A search: the bookkeeping between a searcher and whatever executes children.

:class:`SearchLoop` turns proposals into numbered trials, recognises identical
children (same architecture, hyperparameters, data and seed) so none is trained twice,
feeds rewards back to the searcher and keeps the record that becomes the JSON summary.
The budget counts children actually trained: a duplicate is told its original's result
again (free information for the searcher) without using budget, and ``max_duplicates``
duplicates in a row end the search as converged rather than spinning. A ``deadline``
(the time budget) ends it too: no child starts after it. A child stopped early (by an
early-stopping scheduler or the deadline) is told as a partial result. The reward is the
search's :class:`~automl.search.objective.Objective` of the child's dev UAR and costs.

It knows nothing of Ray or MLflow: :mod:`automl.search.ray_tune` drives it (and
:mod:`automl.search.sequential`, in-process, one child at a time), and callbacks report
searcher updates and progress to tracking and display.

Before the search names its best child, its leaders are confirmed (:class:`Confirmation`):
each is trained once more on another seed, and the best is the child with the highest mean
reward over its seeds. One dev UAR per child is noisy, and the maximum of many noisy
figures favours the child that drew a lucky seed (deep, unstable stacks most of all): the
winner's curse, which a second seed of the few candidates corrects at the cost of a few
children. A leader whose one reward is not above the best mean confirmed so far is left
alone (its mean is expected lower still), so the confirmations go where they can change
the choice. Confirmations are not told to the searcher (they are not its proposals) and do
not count against the budget, nor does an early-stopping rule judge them (they train to
their end); one that fails or is cut by the deadline leaves its leader with one figure.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from automl.child import arch_key
from automl.search.objective import Objective
from automl.search.searchers import Searcher, Status
from automl.search.space import SearchSpace

RUNNING, DONE, CACHED, FAILED, STOPPED = "running", "done", "cached", "failed", "stopped"


@dataclass
class TrialRecord:
    trial: int
    proposal_id: int
    architecture: dict[str, Any]
    key: str
    status: str = RUNNING
    dev_uar: float | None = None
    seconds: float | None = None
    mlflow_run_id: str | None = None
    n_params: int | None = None
    latency_ms: float | None = None
    epochs: int | None = None  # epochs it trained (fewer than asked when stopped early)
    reward: float | None = None  # the objective of its dev UAR and costs
    error: str | None = None  # why it failed, or why it was stopped
    note: str | None = None  # what else the child went through (a retry after divergence)
    adopted: bool = False  # finished after the driver died; the searcher never saw it
    duplicate_of: int | None = None  # the trial that trained this child, when a duplicate
    confirms: int | None = None  # the leader this retrains on another seed (a confirmation)
    start: bool = False  # one of the space's start_with children: trains to its end
    started: float = field(default_factory=time.time)

    @property
    def judged(self) -> bool:
        """Whether an early-stopping rule may stop it: not a confirmation (in a rung, a
        leader's second seed would be judged against children it already beat), not a
        start child (the model the search is measured against keeps its full figure)."""
        return self.confirms is None and not self.start

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("started")
        out.pop("proposal_id")
        return out


@dataclass(frozen=True)
class Confirmation:
    """The ``leaders`` best children (by reward) each trained once more, on the seed after
    the search's, before the best is chosen. Under a deadline the searcher's children stop
    early enough to leave them time: ``leaders / workers`` times a finished child's mean
    duration (they train ``workers`` at a time)."""

    leaders: int = 0
    workers: int = 1
    seed: int = 1  # what tells a confirmation's identity from its leader's


class SearchLoop:
    """Hands out children until ``budget`` have been trained; collects their rewards."""

    def __init__(
        self,
        searcher: Searcher,
        space: SearchSpace,
        budget: int,
        identity: tuple[Any, ...],
        on_update: Callable[[dict[str, float], int], None] | None = None,
        max_duplicates: int = 50,
        deadline: float | None = None,
        objective: Objective | None = None,
        clock: Callable[[], float] = time.time,
        confirmation: Confirmation | None = None,
    ) -> None:
        self.searcher, self.space, self.budget = searcher, space, budget
        searcher.set_budget(budget)
        self.identity = identity  # (data fingerprint, seed): with the architecture, what
        # makes two children identical (the architecture holds every hyperparameter)
        self.on_update = on_update
        # the children the search is measured against: no early-stopping rule judges them
        # on their first epochs, so the leaderboard holds their full figure
        self.start_keys = {arch_key(space.to_architecture(v), *identity) for v in space.start_with}
        self.records: list[TrialRecord] = []
        self.by_trial: dict[int, TrialRecord] = {}
        self.next_trial = 0
        self.finished: dict[str, TrialRecord] = {}  # key -> the record that trained it
        self.in_flight: dict[str, TrialRecord] = {}
        self.waiting: dict[str, list[TrialRecord]] = {}  # duplicates of an in-flight child
        self.retrained: dict[int, list[TrialRecord]] = {}  # leader -> its confirmations
        self.updates = 0
        self.max_duplicates = max_duplicates
        self.duplicates_in_a_row = 0
        self.converged = False  # the searcher kept proposing children it already had
        self.deadline = deadline  # clock() after which no child starts
        self.clock = clock  # what the deadline and the trials' start times are read on
        self.out_of_time = False
        self.interrupted = False  # by the user (Ctrl-C): --resume continues it
        self.unplaced = 0  # children handed out that wait for a worker (no resources free)
        self.objective = objective or Objective()
        self.confirmation = confirmation or Confirmation()

    def next_child(self) -> TrialRecord | None:
        """The next child to train: the searcher's until the budget is handed out (or the
        searcher has converged: ``max_duplicates`` proposals in a row were children it
        already had, or its share of the time is spent), then a leader's confirmation. None
        when there is none to start now: :attr:`more_to_come` says if a later call may."""
        return self._next_searched() or self._next_confirmation()

    @property
    def more_to_come(self) -> bool:
        """Whether a child still to settle may make a child to start (so the executor asks
        again later instead of ending the search): a searched child may become a leader to
        confirm, and a confirmation may free the time kept for the others (its leader's
        mean may leave them nothing to confirm), which the searcher then gets back."""
        return bool(self.in_flight) and (
            self.confirmation.leaders > 0 and not self._past(self.deadline)
        )

    def _past(self, deadline: float | None) -> bool:
        return deadline is not None and self.clock() >= deadline

    def _next_searched(self) -> TrialRecord | None:
        while self.trained < self.budget and not self.out_of_time:
            if self._past(self.deadline):
                self.out_of_time = True
                return None
            if self._past(self._search_deadline()):
                return None  # the time left is the confirmations' (until they need less)
            if self.duplicates_in_a_row >= self.max_duplicates:
                self.converged = True
                return None
            proposal = self.searcher.ask()
            arch = self.space.to_architecture(proposal.values)
            key = arch_key(arch, *self.identity)
            record = TrialRecord(self.next_trial, proposal.id, arch, key, started=self.clock())
            self._add(record)
            original = self.finished.get(record.key) or self.in_flight.get(record.key)
            if original is None:
                record.start = key in self.start_keys  # a duplicate of one is not trained
                self.duplicates_in_a_row = 0
                self.in_flight[record.key] = record
                return record
            self.duplicates_in_a_row += 1
            record.duplicate_of = original.trial
            if original.status == RUNNING:
                self.waiting.setdefault(record.key, []).append(record)
            else:
                self._copy_result(record, original)
        return None

    def _search_deadline(self) -> float | None:
        """When the searcher's last child may start: the deadline, less the share of the
        time of the leaders still to confirm (once a finished child says how long one
        takes)."""
        if self.deadline is None:
            return None
        left = sum(r.trial not in self.retrained for r in self.leaders())
        took = [r.seconds for r in self.searched if r.status == DONE and r.seconds]
        if left <= 0 or not took:
            return self.deadline
        return self.deadline - left * statistics.fmean(took) / self.confirmation.workers

    def _next_confirmation(self) -> TrialRecord | None:
        """A leader not confirmed yet, retrained on the confirmation's seed (none after the
        deadline, nor once the search was interrupted)."""
        if self.interrupted or self._past(self.deadline):
            return None
        leader = next((r for r in self.leaders() if r.trial not in self.retrained), None)
        if leader is None:
            return None
        key = arch_key(leader.architecture, *self.identity, "seed", self.confirmation.seed)
        record = TrialRecord(self.next_trial, -1, leader.architecture, key,
                             started=self.clock(), confirms=leader.trial)  # fmt: skip
        self._add(record)
        self.in_flight[key] = record
        return record

    def leaders(self) -> list[TrialRecord]:
        """The searcher's finished children a confirmation retrains: the best by reward,
        except those whose one reward is not above the best mean of a leader confirmed
        already. Such a child's one figure is itself an optimistic estimate of its mean
        (it was picked for being high), so its mean is expected below that leader's and a
        second seed of it would be spent for nothing."""
        done = sorted((r for r in self.searched if r.status == DONE), key=lambda r: -r.reward)
        means = [self.mean_reward(r) for r in done if len(self.seeds_of(r)) > 1]
        bar = max(means, default=float("-inf"))
        top = done[: self.confirmation.leaders]
        return [r for r in top if r.trial in self.retrained or r.reward > bar]

    @property
    def searched(self) -> list[TrialRecord]:
        """The children the searcher proposed and the search trained (not duplicates, not
        confirmations)."""
        return [r for r in self.records if r.duplicate_of is None and r.confirms is None]

    @property
    def confirmations(self) -> list[TrialRecord]:
        return [r for again in self.retrained.values() for r in again]

    def seeds_of(self, record: TrialRecord) -> list[TrialRecord]:
        """A child and its confirmations that finished: its seeds (one cut short by the
        deadline reached an early epoch only, not a figure to average with)."""
        again = self.retrained.get(record.trial, [])
        return [record, *(r for r in again if r.status == DONE)]

    def mean_reward(self, record: TrialRecord) -> float:
        """What the best child is chosen by: the mean reward over its seeds."""
        return statistics.fmean(r.reward for r in self.seeds_of(record))

    def mean_dev_uar(self, record: TrialRecord) -> float:
        return statistics.fmean(r.dev_uar for r in self.seeds_of(record))

    def _add(self, record: TrialRecord) -> None:
        self.records.append(record)
        self.by_trial[record.trial] = record
        if record.confirms is not None:
            self.retrained.setdefault(record.confirms, []).append(record)
        self.next_trial = max(self.next_trial, record.trial + 1)

    def export(self) -> list[dict[str, Any]]:
        """The settled trials, for the search's state file (in-flight ones are retrained)."""
        return [asdict(r) for r in self.records if r.status != RUNNING]

    def adopt(self, orphans: list[dict[str, Any]]) -> None:
        """Keep children that finished while no driver listened (counted, not retrained)."""
        self.restore(
            [
                {
                    **o,
                    "proposal_id": -1,
                    "key": arch_key(o["architecture"], *self.identity),
                    "status": DONE,
                    "adopted": True,
                    "reward": self.objective.reward(o["dev_uar"], o),
                }
                for o in orphans
            ]
        )

    def restore(self, rows: list[dict[str, Any]]) -> None:
        """Take back the settled trials of an interrupted search (the searcher restores itself)."""
        for row in rows:
            record = TrialRecord(**row)
            self._add(record)
            if self._reusable(record):
                self.finished[record.key] = record
        self.next_trial = max([self.next_trial, *(int(r["trial"]) + 1 for r in rows)])

    def child_finished(
        self,
        trial: int,
        dev_uar: float,
        seconds: float,
        mlflow_run_id: str | None = None,
        note: str | None = None,
        **costs: Any,
    ) -> None:
        """``costs``: ``n_params``, ``latency_ms``, ``epochs`` as the child reported them."""
        record = self.by_trial[trial]
        record.status, record.dev_uar, record.seconds = DONE, dev_uar, seconds
        record.mlflow_run_id, record.note = mlflow_run_id, note
        self._settle(record, **costs)

    def child_stopped(
        self,
        trial: int,
        dev_uar: float | None,
        seconds: float,
        reason: str,
        mlflow_run_id: str | None = None,
        **costs: Any,
    ) -> None:
        """Stopped before its epochs were done; ``dev_uar``: the best it reached (None when
        stopped before its first epoch ended: the searcher hears of it as a failure)."""
        record = self.by_trial[trial]
        record.status, record.dev_uar, record.seconds = STOPPED, dev_uar, seconds
        record.error, record.mlflow_run_id = reason, mlflow_run_id
        self._settle(record, **costs)

    def child_failed(
        self, trial: int, error: str, seconds: float, mlflow_run_id: str | None = None
    ) -> None:
        record = self.by_trial[trial]
        record.status, record.dev_uar, record.seconds = FAILED, None, seconds
        record.error, record.mlflow_run_id = error, mlflow_run_id
        self._settle(record)

    def _settle(self, record: TrialRecord, **costs: Any) -> None:
        for name, value in costs.items():
            setattr(record, name, value)
        if record.dev_uar is not None:
            record.reward = self.objective.reward(record.dev_uar, costs)
        self.in_flight.pop(record.key, None)
        if record.confirms is not None:  # not the searcher's: nothing to tell, none waits
            return
        if self._reusable(record):
            self.finished[record.key] = record
        self._tell(record)
        for duplicate in self.waiting.pop(record.key, []):
            self._copy_result(duplicate, record)

    @staticmethod
    def _reusable(record: TrialRecord) -> bool:
        """A result a duplicate may take: finished, or stopped early after an epoch (a
        stopped child is not trained again; one stopped before any epoch has no result)."""
        return record.status == DONE or (record.status == STOPPED and record.dev_uar is not None)

    def _copy_result(self, record: TrialRecord, source: TrialRecord) -> None:
        record.status = CACHED if source.status == DONE else source.status
        record.seconds = 0.0
        for name in ("dev_uar", "reward", "mlflow_run_id", "n_params", "latency_ms", "epochs"):
            setattr(record, name, getattr(source, name))
        record.error = source.error
        self._tell(record)

    def _tell(self, record: TrialRecord) -> None:
        repeated = record.duplicate_of is not None
        if record.reward is None:
            status = Status.FAILED
        else:
            status = Status.PARTIAL if record.status == STOPPED else Status.COMPLETE
        metrics = self.searcher.tell(record.proposal_id, record.reward, status, repeated)
        if metrics and self.on_update is not None:
            self.updates += 1
            self.on_update(metrics, self.updates)

    @property
    def running(self) -> int:
        return len(self.in_flight)

    @property
    def trained(self) -> int:
        """Children trained or training (duplicates and confirmations not counted): what
        the budget counts."""
        return len(self.searched)

    @property
    def completed(self) -> int:
        """Trained children that have settled (finished, stopped or failed)."""
        return sum(r.status != RUNNING for r in self.searched)

    @property
    def settled(self) -> int:
        """Records with a result, duplicates included (what the saved state holds)."""
        return sum(r.status != RUNNING for r in self.records)

    @property
    def cached(self) -> int:
        return sum(r.duplicate_of is not None for r in self.records)

    @property
    def ended(self) -> str:
        """Why the search ended (or will): its children, its time, its searcher, or the user."""
        if self.interrupted:
            return "interrupted"
        if self.out_of_time:
            return "time budget"
        return "converged" if self.converged else "trials"

    def best(self) -> TrialRecord | None:
        """The finished child with the highest mean reward over its seeds, among those
        confirmed on a second seed once any was: a child outside the leaders was looked at
        once, and its one figure is as optimistic as the leaders' were before theirs. (A
        child stopped early is not a candidate: it was not trained to the end; nor is a
        confirmation, which counts towards its leader.)"""
        done = [r for r in self.searched if r.status == DONE]
        pool = [r for r in done if len(self.seeds_of(r)) > 1] or done
        return max(pool, key=self.mean_reward) if pool else None
