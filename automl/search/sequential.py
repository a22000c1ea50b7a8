"""A search's children in this process, one at a time: the ledger driven without Ray.

As NNI's sequential engine runs a strategy in-process, :func:`run_sequential` drives a
:class:`~automl.search.ledger.SearchLoop` to its end with a plain callable, and calls the
loop exactly as :class:`automl.search.ray_tune.LoopSearcher` does for Tune, in the same
order: ``next_child`` for each child until it gives none, then ``child_finished``,
``child_stopped`` or ``child_failed`` with what the child did. So everything the ledger
decides (trial numbers, duplicates told again without budget, ``max_duplicates`` ending
the search as converged, the time budget, partial and failed results told to the
searcher, the best child) runs here in milliseconds, with no Ray, no MLflow and no
training. Time is the loop's ``clock`` (``SearchLoop(clock=...)``): a test passes a fake
one and a time budget ends without sleeping.

``evaluate(trial, architecture)`` trains (or pretends to train) one child and returns:

* a number: the child finished with that dev UAR (the loop's objective makes it the
  reward; with the default objective the reward is the dev UAR itself);
* a mapping: the child finished; ``dev_uar`` and, optionally, the costs the Ray trainable
  reports (``n_params``, ``latency_ms``, ``epochs``);
* an iterable of per-epoch results, each a number or a mapping as above: what the child
  reports after that epoch, the dev UAR of the epoch it would keep if it ended there (as
  the Ray trainable reports :func:`automl.child.train_child`'s ``kept_dev_uar``); the
  child's dev UAR is the last one it reported. After each epoch the child may be stopped,
  as Tune asks its stoppers and scheduler at each intermediate report: by ``stop_at`` (the
  deadline plus its grace: the clock has passed it) or by
  ``early_stop(trial, epoch, dev_uar)``, which never judges a confirmation or a start
  child (``record.start``: one of the space's ``start_with``, the model the search is
  measured against, trained to its end).
  The last item of a list or tuple is the final result, as the Ray trainable's last
  epoch is, and nothing stops a child there; a generator cannot say which item is its
  last, so every epoch it yields may be stopped after.

A loop with a :class:`~automl.search.ledger.Confirmation` also hands out its leaders'
confirmations: ``loop.by_trial[trial].confirms`` names the leader a trial retrains (on the
next seed, which ``evaluate`` decides how to honour).

An exception from ``evaluate`` is the child's failure, recorded with the same text the
Ray trial wrapper records (``TypeName: message``, at most 2,000 characters); the search
goes on. ``KeyboardInterrupt`` is not caught: the child stays running in the ledger, as
an interrupted search's children do (``--resume`` trains them again).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from numbers import Real
from typing import Any

from automl.search.ledger import SearchLoop

Result = float | Mapping[str, Any]
Evaluate = Callable[[int, dict[str, Any]], Result | Iterable[Result]]
EarlyStopRule = Callable[[int, int, float], bool]  # (trial, epoch, best dev UAR so far)

COSTS = ("n_params", "latency_ms")
DEADLINE_REASON = "stopped at the time budget"  # the reason the Ray adapter records


def run_sequential(
    loop: SearchLoop,
    evaluate: Evaluate,
    *,
    stop_at: float | None = None,
    early_stop: EarlyStopRule | None = None,
    stop_reason: str = "stopped early",
    on_change: Callable[[], None] | None = None,
) -> None:
    """Train the loop's children one at a time until it hands out none.

    ``stop_at``: a child still running when the loop's clock passes it is stopped after
    its current epoch (and the search has run out of time); ``early_stop``: the rule that
    stops hopeless children, recorded with ``stop_reason``; ``on_change``: called after
    every suggestion and every result, as the Ray adapter calls it."""
    while True:
        record = loop.next_child()
        _changed(on_change)
        if record is None:
            return
        trial = record.trial
        try:
            rule = early_stop if record.judged else None
            outcome = _train(loop, trial, evaluate(trial, record.architecture), stop_at, rule)
        except Exception as exc:  # the child's own failure: recorded, and the search goes on
            error = f"{type(exc).__name__}: {exc}"[:2000]
            loop.child_failed(trial, error, _seconds(loop, trial))
        else:
            _settle(loop, trial, outcome, stop_at, stop_reason)
        _changed(on_change)


class _Outcome:
    """What one child did: its dev UAR, costs, epochs, and whether it was stopped."""

    def __init__(self) -> None:
        self.dev_uar: float | None = None
        self.costs: dict[str, Any] = dict.fromkeys(COSTS)
        self.epochs: int | None = None
        self.stopped = False

    def add(self, result: Result) -> None:
        values = dict(result) if isinstance(result, Mapping) else {"dev_uar": result}
        if values.get("dev_uar") is None:
            raise ValueError(f"a result without a dev_uar: {values}")
        self.dev_uar = float(values["dev_uar"])  # the epoch's kept figure: the latest counts
        self.costs.update({k: values[k] for k in COSTS if values.get(k) is not None})
        if values.get("epochs") is not None:
            self.epochs = int(values["epochs"])


def _train(
    loop: SearchLoop,
    trial: int,
    results: Result | Iterable[Result],
    stop_at: float | None,
    early_stop: EarlyStopRule | None,
) -> _Outcome:
    outcome = _Outcome()
    if isinstance(results, Mapping | Real):  # numpy's floats too
        outcome.add(results)
        return outcome
    last = len(results) if isinstance(results, Sequence) else None
    epochs: Iterator[Result] = iter(results)
    for epoch, result in enumerate(epochs, 1):
        outcome.add(result)
        outcome.epochs = epoch
        if epoch == last:
            break
        deadline = stop_at is not None and loop.clock() >= stop_at
        if deadline or (early_stop is not None and early_stop(trial, epoch, outcome.dev_uar)):
            outcome.stopped = True
            close = getattr(epochs, "close", None)  # a generator's cleanup runs now
            if close is not None:
                close()
            break
    if outcome.dev_uar is None:
        raise ValueError("the child reported no epoch")
    return outcome


def _settle(
    loop: SearchLoop, trial: int, outcome: _Outcome, stop_at: float | None, stop_reason: str
) -> None:
    """The ledger call for a child that ended, as ``LoopSearcher.on_trial_complete`` makes it."""
    seconds = _seconds(loop, trial)
    costs = {**outcome.costs, "epochs": outcome.epochs}
    if not outcome.stopped:
        loop.child_finished(trial, outcome.dev_uar, seconds, None, **costs)
        return
    if stop_at is not None and loop.clock() >= stop_at:
        loop.out_of_time = True
    reason = DEADLINE_REASON if loop.out_of_time else stop_reason
    loop.child_stopped(trial, outcome.dev_uar, seconds, reason, None, **costs)


def _seconds(loop: SearchLoop, trial: int) -> float:
    return loop.clock() - loop.by_trial[trial].started


def _changed(on_change: Callable[[], None] | None) -> None:
    if on_change is not None:
        on_change()
