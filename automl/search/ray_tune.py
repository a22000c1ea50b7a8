"""Children on Ray Tune, and the only module of ``automl`` that knows Ray Tune.

The :class:`SearchLoop` becomes a Tune ``Searcher`` (suggest / on_trial_complete), so
trials get Ray's scheduling, resources and fault handling. Each child runs inside
:func:`runtime.trial.run_trial` (its MLflow run, its failure handling). The prepared
dataset goes into the object store once through ``tune.with_parameters``; workers map
it, they do not re-read or re-compute features. Workers are reused between children
(``reuse_actors``), which removes most of the per-trial process start-up.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune
from ray.tune.execution.placement_groups import (
    PlacementGroupFactory,
    resource_dict_to_pg_factory,
)
from ray.tune.search import Searcher as TuneSearcher
from ray.tune.stopper import CombinedStopper, Stopper

from automl.child import describe
from automl.child.trainer import (
    EpochStats,
    TrainConfig,
    resolve_device,
    retry_note,
    train_child,
)
from automl.data.dataset import Dataset, Features, Split
from automl.search.ledger import SearchLoop
from automl.search.placement import ChildResources
from runtime import tracking
from runtime.files import OutOfSpace, out_of_space, out_of_space_line
from runtime.tags import (
    ARCH_SHORT_TAG,
    ARCHITECTURE_TAG,
    CONFIRMS_TAG,
    DEVICE_TAG,
    FRONTEND_TAG,
    ROLE_TAG,
    SEED_TAG,
)
from runtime.trial import ERROR, FAILED, FINISHED, RUN_ID, Outcome, Trial, TrialContext, run_trial
from runtime.tune_grid import Waiting

METRIC = "dev_uar"


CONFIRMATION = "confirmation"  # the role of a run that retrains a leader on another seed


def child_run_name(trial: int) -> str:
    """A child's MLflow run name (and its logged model's): ``child-0007``."""
    return f"child-{trial:04d}"


def confirmation_run_name(leader: int, seed: int) -> str:
    """A confirmation's MLflow run name: ``child-0007-seed1``, the child it retrains."""
    return f"{child_run_name(leader)}-seed{seed}"


def child_trainable(
    config: dict[str, Any], features: Features, context: TrialContext, train_config: TrainConfig
) -> None:
    """Runs in a Ray worker: train one child, its epochs logged to its nested MLflow run
    (``config``'s ``seed`` and ``leader`` when it is a confirmation: the seed it trains on, and
    the leader it retrains; ``to_end`` when no early-stopping rule may stop it)."""
    trial, arch = config["trial"], config["architecture"]
    dataset = features.of(arch)
    seeded = dataclasses.replace(train_config, seed=config.get("seed", train_config.seed))
    tags = {ROLE_TAG: "child", ARCHITECTURE_TAG: json.dumps(arch, sort_keys=True)}
    name = child_run_name(trial)
    leader = config.get("leader")
    judged = not config.get("to_end")  # a confirmation and a start child train to their end
    if leader:
        tags |= {ROLE_TAG: CONFIRMATION, CONFIRMS_TAG: leader["run_id"] or ""}
        tags[SEED_TAG] = str(seeded.seed)
        name = confirmation_run_name(leader["trial"], seeded.seed - train_config.seed)

    def work(handle: Trial) -> Outcome:
        data = _poisoned(dataset) if handle.fault == "nan" else dataset
        config = seeded
        if handle.fault == "diverge":  # its loss becomes NaN in epoch 1: the retry runs
            config = dataclasses.replace(seeded, inject_nan_epoch=1)
        epochs = config.epochs or arch["hparams"]["epochs"]

        def on_epoch(s: EpochStats) -> None:
            metrics = {"epoch_dev_uar": s.dev_uar, "train_loss": s.train_loss}
            handle.log(s.epoch, {**metrics, "epoch_seconds": s.seconds})
            if s.epoch < epochs and judged:  # what an early-stopping scheduler (or the
                # deadline) decides on; the last epoch's is the final result (a scheduler
                # stops a trial at max_t)
                costs = {"n_params": s.n_params, "latency_ms": s.latency_ms}
                handle.report({METRIC: s.kept_dev_uar, "epoch": s.epoch, **costs})

        result = train_child(arch, data, config, on_epoch)
        metrics = {
            METRIC: result.dev_uar,
            "n_params": result.n_params,
            "best_epoch": result.best_epoch,
            "train_seconds": result.train_seconds,
            "latency_ms": result.latency_ms,
            "epochs_trained": len(result.history),
        }
        report: dict[str, Any] = {"epoch": len(result.history)}
        if result.retry:
            metrics["diverged_epoch"] = result.retry["epoch"]
            report["note"] = retry_note(result.retry)
        artifacts = {"weights.pt": result.state_dict, "architecture.json": result.architecture}
        return Outcome(metrics, artifacts, report)

    tags[ARCH_SHORT_TAG] = describe(arch)
    tags[FRONTEND_TAG] = features.frontend_of(arch)  # the space may decide it per child
    tags[DEVICE_TAG] = str(resolve_device(train_config.device))  # a GPU it was given, used?
    run_trial(context, trial, name, tracking.flatten("", arch), tags, work)


def _poisoned(data: Dataset) -> Dataset:
    """The ``nan`` fault: NaN training features, so the child's loss becomes NaN."""
    train = data.splits["train"]
    nan = Split(np.full_like(train.frames, np.nan), train.offsets, train.labels, train.names)
    return dataclasses.replace(data, splits={**data.splits, "train": nan})


class LoopSearcher(TuneSearcher):
    """Adapts a :class:`SearchLoop` to Tune's searcher interface."""

    def __init__(
        self,
        loop: SearchLoop,
        parent: tracking.ParentRun | None,
        on_change: Callable[[], None] | None = None,
        stop_reason: str = "stopped early",
        stop_at: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(metric=METRIC, mode="max")
        self.loop, self.parent, self.on_change = loop, parent, on_change
        self.seed = seed  # the search's: a confirmation trains on the one after
        self.stop_reason = stop_reason  # why Tune stopped a child, unless the deadline did
        self.stop_at = stop_at  # when the deadline's stopper stops children still running
        self.trials: dict[str, int] = {}
        self.last: dict[str, dict[str, Any]] = {}  # latest intermediate result per trial
        # why the search stops at once (a child found the disk full, or the driver's own
        # update failed): raised when Tune returns, which would log it and go on otherwise
        self.halt: Exception | None = None

    def stop_all(self) -> bool:
        """For the stopper that ends the search when it must halt."""
        return self.halt is not None

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.halt is not None:
            return TuneSearcher.FINISHED
        record = self.loop.next_child()
        self._changed()
        if record is None:  # None: ask again later (a child to settle may be a leader)
            return None if self.loop.more_to_come else TuneSearcher.FINISHED
        self.trials[trial_id] = record.trial
        config = {"trial": record.trial, "architecture": record.architecture}
        if record.confirms is not None:
            leader = self.loop.by_trial[record.confirms]
            config["leader"] = {"trial": leader.trial, "run_id": leader.mlflow_run_id}
            config["seed"] = self.seed + self.loop.confirmation.seed
        if not record.judged:
            config["to_end"] = True  # no early-stopping rule judges it (TrialRecord.judged)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.last[trial_id] = result

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        trial = self.trials.pop(trial_id)
        result = result or self.last.get(trial_id) or {}
        self.last.pop(trial_id, None)
        seconds = time.time() - self.loop.by_trial[trial].started
        run_id = result.get(RUN_ID)
        if error:
            if self.parent:  # the dead worker could not close its run
                tracking.close_abandoned(self.parent, trial)
            self.loop.child_failed(
                trial, "the worker process died (retries exhausted)", seconds, run_id
            )
        elif result.get(FAILED) and out_of_space(result[ERROR]):
            # not the child's failure: it stays running in the ledger, and the resumed
            # search trains it again
            line = out_of_space_line(result[ERROR])
            self.halt = self.halt or OutOfSpace(f"a child could not write its results: {line}")
        elif result.get(FAILED):
            self.loop.child_failed(trial, result[ERROR], seconds, run_id)
        elif result.get(FINISHED):
            costs = {k: result[k] for k in ("n_params", "latency_ms")}
            self.loop.child_finished(
                trial, float(result[METRIC]), seconds, run_id, result.get("note"), **costs,
                epochs=result["epoch"],
            )  # fmt: skip
        elif self.halt is None:
            self._stopped(trial, result, seconds)
        # else: stopped because the search halts; the resumed search trains it again
        self._changed()

    def _stopped(self, trial: int, result: dict[str, Any], seconds: float) -> None:
        """Tune stopped it (a scheduler, the deadline): recorded as stopped, with the best
        dev UAR it reached, as a partial result."""
        at_deadline = self.stop_at is not None and time.time() >= self.stop_at
        if at_deadline:
            self.loop.out_of_time = True
        reason = "stopped at the time budget" if at_deadline else self.stop_reason
        reached, epoch, run_id = result.get(METRIC), result.get("epoch", 0), result.get(RUN_ID)
        if self.parent and (done := finished_records(self.parent, trial)):
            # It finished between the deadline and Tune's stop (Tune drops that last result).
            record = done[trial]
            costs = {k: record[k] for k in ("n_params", "latency_ms", "epochs")}
            self.loop.child_finished(
                trial, record["dev_uar"], seconds, record["mlflow_run_id"], **costs
            )
            return
        if self.parent:
            metrics = {} if reached is None else {METRIC: reached, "epochs_trained": epoch}
            outcome = f"{reason} after epoch {epoch}"
            run_id = tracking.close_stopped(self.parent, trial, metrics, outcome) or run_id
        costs = {k: result.get(k) for k in ("n_params", "latency_ms")} | {"epochs": epoch}
        self.loop.child_stopped(trial, reached, seconds, reason, run_id, **costs)

    def settle_stopped(self) -> None:
        """Children Tune stopped when it ended the experiment (the deadline's backstop)
        without telling the searcher: settle them from their last results."""
        for trial_id in list(self.trials):
            self.on_trial_complete(trial_id)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to add to Tune's checkpoint: the search saves its own state file
        (``automl.search.run``), which is what ``--resume`` reads."""

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its searcher for its own restore; the live loop stays in this process
        (a search resumes from its own records, not from Tune's)."""
        return {**self.__dict__, "loop": None, "on_change": None}

    def _changed(self) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change()
        except Exception as exc:  # the state or the parent run not written: halt, say why
            self.halt = self.halt or exc


@dataclass(frozen=True, kw_only=True)
class RayOptions:
    """How a search's children run on Ray (see :func:`run_on_ray`)."""

    workers: int  # children trained at once
    resources: ChildResources  # what each child asks Ray for
    context: TrialContext
    train_config: TrainConfig
    storage: Path  # Tune's own experiment files
    retries: int = 2  # a child whose worker dies is started again up to this many times
    on_change: Callable[[], None] | None = None  # after every suggestion or result
    early_stop: EarlyStop | None = None  # the scheduler that stops hopeless children
    stop_at: float | None = None  # children running then are stopped (deadline + grace)
    max_wait: float | None = None  # how long children may wait for a node while none runs


def run_on_ray(loop: SearchLoop, features: Features, options: RayOptions) -> None:
    """Train the loop's children on Ray until its budget is spent (inside
    :func:`runtime.ray_cluster.ray_session`)."""
    o = options
    context, resources, on_change, stop_at = o.context, o.resources, o.on_change, o.stop_at
    trainable = tune.with_resources(
        tune.with_parameters(
            child_trainable, features=features, context=context, train_config=o.train_config
        ),
        partial(_placement, resources),
    )
    early_stop = o.early_stop or EarlyStop()
    searcher = LoopSearcher(
        loop, context.parent, on_change, early_stop.reason, stop_at, o.train_config.seed
    )

    def count_waiting(waiting: int) -> None:
        loop.unplaced = waiting
        if on_change is not None:
            on_change()

    waiting = Waiting(o.max_wait, count_waiting)
    stoppers = [waiting, _Halt(searcher), *([_Deadline(stop_at)] if stop_at else [])]
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=early_stop.scheduler(),
            num_samples=-1,  # the loop says when it has handed out every child
            max_concurrent_trials=o.workers,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"search-{int(time.time())}",
            verbose=0,
            stop=CombinedStopper(*stoppers),
            callbacks=[waiting],
            storage_path=str(o.storage.resolve()),
            failure_config=tune.FailureConfig(max_failures=o.retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    tuner.fit()
    if waiting.gave_up:
        raise waiting.give_up_message(resources, "children", "search")
    if searcher.halt is not None:  # the runs of the children stopped: closed by run_job
        raise searcher.halt
    if searcher.trials and not (stop_at and time.time() >= stop_at):
        # Tune returns with children still running only when it caught SIGINT: they were
        # interrupted, not stopped; their runs are closed and --resume trains them again.
        if context.parent:
            tracking.close_abandoned(context.parent)
        raise KeyboardInterrupt
    searcher.settle_stopped()


def _placement(resources: ChildResources, config: dict[str, Any]) -> PlacementGroupFactory:
    """What Tune reserves for one child (called with the child's config as Tune places it)."""
    return resource_dict_to_pg_factory(resources.for_child(config["architecture"]))


def finished_records(parent: tracking.ParentRun, trial: int | None = None) -> dict[int, dict]:
    """What the FINISHED child runs of ``parent`` (of one trial, or all) say, by trial: the
    fields of a trial record. For results the search did not hear of (its driver died, or
    Tune dropped the last result of a child it was stopping)."""
    found = {}
    for run in tracking.finished_children(parent, trial):
        tags, metrics = run.data.tags, run.data.metrics
        number = int(tags.get(tracking.TRIAL_TAG, -1))
        if number < 0 or ARCHITECTURE_TAG not in tags or tags.get(ROLE_TAG) != "child":
            continue  # a confirmation the resumed search trains again
        epochs = metrics.get("epochs_trained")
        found[number] = {
            "trial": number,
            "architecture": json.loads(tags[ARCHITECTURE_TAG]),
            "dev_uar": metrics.get(METRIC),
            "n_params": int(metrics.get("n_params", 0)),
            "seconds": (run.info.end_time - run.info.start_time) / 1000,
            "latency_ms": metrics.get("latency_ms"),
            "epochs": None if epochs is None else int(epochs),
            "mlflow_run_id": run.info.run_id,
        }
    return found


@dataclass(frozen=True)
class EarlyStop:
    """Stopping hopeless children (multi-fidelity): ``asha`` is Ray Tune's asynchronous
    successive halving (ASHA): at rungs of ``grace``, ``grace * 3``, ... epochs, a child
    whose best dev UAR so far is outside the top third of its rung stops. ``median`` stops a
    child whose best dev UAR so far is below the median of the others at the same epoch."""

    rule: str = "none"  # none | asha | median
    max_epochs: int = 10
    grace: int = 1  # epochs every child trains before it may be stopped

    @property
    def reason(self) -> str:
        return f"stopped early ({self.rule})"

    def scheduler(self) -> Any:
        from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, MedianStoppingRule

        common = {"time_attr": "epoch", "metric": METRIC, "mode": "max"}
        if self.rule == "asha":
            return AsyncHyperBandScheduler(
                **common, max_t=self.max_epochs, grace_period=self.grace, reduction_factor=3
            )
        if self.rule == "median":
            return MedianStoppingRule(**common, grace_period=self.grace, min_samples_required=3)
        return FIFOScheduler()


class _Halt(Stopper):
    """Stops every child at once when the search halts (a child found the disk full: the
    next would too)."""

    def __init__(self, searcher: LoopSearcher) -> None:
        self.searcher = searcher

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.searcher.stop_all()

    def stop_all(self) -> bool:
        return self.searcher.stop_all()


class _Deadline(Stopper):
    """Stops every child still running once ``stop_at`` (a time.time()) has passed: each at
    its next epoch's report, and all at once (``stop_all``) for those between reports."""

    def __init__(self, stop_at: float) -> None:
        self.stop_at = stop_at

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return time.time() >= self.stop_at

    def stop_all(self) -> bool:
        return time.time() >= self.stop_at
