"""The one wrapper every Ray trial runs inside: a search's child, an RL job's seed.

Around the work it is given, :func:`run_trial` does what every trial needs and no work
should repeat: it opens the trial's nested MLflow run, applies the planned fault, hands
the work a :class:`Trial` to log live metrics and report intermediate results to Tune,
records an exception as a FAILED run (reported to Tune as a failure, not raised, so the
job goes on), and finishes the run with the outcome's metrics and artifacts.

Only a dead worker process reaches Tune as an error; Tune retries it. A trial Tune stops
early ends without a ``finished`` result; the driver closes its run as stopped. The
result keys below are what the driver reads back (``on_trial_complete``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runtime.faults import FaultPlan
from runtime.files import if_room, out_of_space
from runtime.process import configure_process
from runtime.tags import GPUS_TAG, NODE_TAG, RESOURCES_TAG, TRIAL_TAG
from runtime.tracking import ChildRun, DatasetInfo, ParentRun, close_abandoned

FINISHED = "finished"  # the trial's last result: the work ended (well or not)
FAILED = "failed"  # the work raised; ERROR holds why
ERROR = "error"
RUN_ID = "mlflow_run_id"
MEMBERS = "members"  # a group trial's result: its members' results, as JSON


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a job shares; sent to the workers once.

    ``placeholder`` is reported with a failure so that a scheduler or searcher that
    expects its metric in every result gets one; the driver reads ``failed``, not it."""

    parent: ParentRun | None = None
    faults: FaultPlan = field(default_factory=FaultPlan)
    placeholder: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # on every trial's run: provenance
    dataset: DatasetInfo | None = None  # logged as every trial's MLflow dataset input


@dataclass
class Outcome:
    """What the work returns: final metrics (to MLflow and Tune), files for the run's
    ``checkpoint/`` folder, and anything else the driver needs (to Tune only)."""

    metrics: dict[str, float]
    artifacts: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)


class Trial:
    """The work's handle on its trial."""

    def __init__(self, run: ChildRun | None, fault: str | None) -> None:
        self.run = run
        self.fault = fault  # a data fault the work applies to its own inputs, or None

    @property
    def run_id(self) -> str | None:
        return self.run.run_id if self.run else None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Live metrics in the trial's MLflow run (buffered)."""
        if self.run:
            self.run.log_metrics(step, metrics)

    def report(self, metrics: dict[str, float]) -> None:
        """An intermediate result for Tune (what early-stopping schedulers decide on)."""
        from ray import tune

        tune.report({**metrics, RUN_ID: self.run_id})


def run_trial(
    context: TrialContext,
    key: int,
    name: str,
    params: dict[str, Any],
    tags: dict[str, str],
    work: Callable[[Trial], Outcome],
) -> None:
    """Run ``work`` as trial ``key`` of the job; call inside a Ray Tune function trainable."""
    from ray import tune

    try:
        trial = _open(context, key, name, params, tags)
    except Exception as exc:  # the store is full: the driver hears it and stops the job
        if not out_of_space(exc):
            raise
        _report_failure(context, Trial(None, None), _error(exc))
        return
    try:
        context.faults.apply(key)
        outcome = work(trial)
        kept = trial.run is None or trial.run.finish(outcome.metrics, outcome.artifacts)
    except Exception as exc:  # the trial's own failure (or a full disk): recorded, job goes on
        _report_failure(context, trial, _error(exc))
        return
    except SystemExit:  # Tune stopped the trial (a scheduler, a deadline): its report raised
        if trial.run:  # the curves so far reach the store; the driver closes the run as stopped
            trial.run.flush()
        raise
    if not kept:
        _report_failure(context, trial, "abandoned: its job was resumed elsewhere", record=False)
        return
    tune.report({**outcome.metrics, **outcome.report, RUN_ID: trial.run_id, FINISHED: True})


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def run_trials(
    context: TrialContext,
    members: list[tuple[int, str, dict[str, Any]]],
    tags: dict[str, str],
    work: Callable[[list[Trial]], list[Outcome]],
) -> None:
    """:func:`run_trial` for work that trains several trials in one process (a population
    of seeds): ``members`` are (key, run name, params), each gets its own MLflow run, and
    the one Tune result lists each member's result under ``members`` (JSON)."""
    from ray import tune

    trials: list[Trial] = []
    try:
        trials += [_open(context, key, name, params, tags) for key, name, params in members]
        for key, _, _ in members:
            context.faults.apply(key)
        outcomes = work(trials)
        rows = [_finished_row(t, outcome) for t, outcome in zip(trials, outcomes, strict=True)]
    except Exception as exc:  # the work's own failure (or a full disk): every member failed
        if len(trials) < len(members) and not out_of_space(exc):
            raise  # a run could not be opened: the store's fault, not the work's
        error = _error(exc)[:2000]
        for trial in trials:
            _record_failure(trial, error)
        opened = trials + [Trial(None, None)] * (len(members) - len(trials))
        rows = [{FINISHED: True, FAILED: True, ERROR: error, RUN_ID: t.run_id} for t in opened]
    tune.report({FINISHED: True, MEMBERS: json.dumps(rows)})


def _finished_row(trial: Trial, outcome: Outcome) -> dict[str, Any]:
    """A member's result, once its run holds its final metrics and files."""
    if trial.run and not trial.run.finish(outcome.metrics, outcome.artifacts):
        return {FINISHED: True, FAILED: True, RUN_ID: trial.run_id,
                ERROR: "abandoned: its job was resumed elsewhere"}  # fmt: skip
    return {**outcome.metrics, **outcome.report, RUN_ID: trial.run_id, FINISHED: True}


def _open(
    context: TrialContext, key: int, name: str, params: dict[str, Any], tags: dict[str, str]
) -> Trial:
    """The trial's handle, with its MLflow run opened when the job tracks runs (the
    process configured first: a worker is a process of its own)."""
    import ray

    configure_process()
    run = None
    if context.parent:
        close_abandoned(context.parent, key)  # an earlier attempt's run, if its worker died
        labels = {**context.tags, **tags, **_placement(ray), TRIAL_TAG: str(key)}
        run = ChildRun(context.parent, name, params, labels, context.dataset)
    return Trial(run, context.faults.data_fault(key))


def _placement(ray: Any) -> dict[str, str]:
    """Where the trial runs and on what: its node, the resources Ray reserved for it, and
    its GPUs (a fraction of a GPU shares the id with the trials beside it)."""
    runtime = ray.get_runtime_context()
    where = {NODE_TAG: runtime.get_node_id()}
    where[RESOURCES_TAG] = json.dumps(runtime.get_assigned_resources(), sort_keys=True)
    if gpus := runtime.get_accelerator_ids().get("GPU"):
        where[GPUS_TAG] = ",".join(gpus)
    return where


def _report_failure(context: TrialContext, trial: Trial, error: str, record: bool = True) -> None:
    from ray import tune

    error = error[:2000]
    if record:
        _record_failure(trial, error)
    tune.report(
        {**context.placeholder, FINISHED: True, FAILED: True, ERROR: error, RUN_ID: trial.run_id}
    )


def _record_failure(trial: Trial, error: str) -> None:
    """The trial's run closed FAILED with its error, unless the store has no room for it
    (the disk that filled up): then the run stays open, and the resumed job closes it."""
    if trial.run:
        with if_room():
            trial.run.fail(error)
