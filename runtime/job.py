"""One job's life, the same for ``automl search`` and ``rl train``: check, start, track, end.

A job is a parent MLflow run over trials that Ray runs. Both commands go through the same
steps, written once here:

1. :func:`preflight`: every check that needs no Ray (tracking store, experiment name,
   cluster address, whether any node can hold a trial) runs before anything starts.
2. :func:`run_job` starts a local Ray or joins a cluster, opens the parent run (while a
   local Ray starts, since both take seconds), and from then on treats Ctrl-C and SIGTERM
   as "stop and keep what is done" (``--resume`` continues).
3. The command's body runs its trials and says :meth:`Job.finished` when they all ended.
4. However the body ends (finished, failed, interrupted, ``--max-wait`` ran out), the
   command's ``close`` callback writes what was computed (summary, state) with interrupts
   held off, the parent run ends FINISHED, FAILED or KILLED, and once Ray is down no trial
   run a worker opened can stay RUNNING.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from runtime import ray_cluster, tracking
from runtime.cli import interrupts_held, resumable_interrupts
from runtime.errors import UserError
from runtime.files import if_room, out_of_space

#: a job's close callback: the files to attach to its parent run and tags to set on it
Close = Callable[["Job"], tuple[dict[str, Any] | None, dict[str, str]]]


class NoNodeCame(UserError):
    """Trials waited ``--max-wait`` for resources no node had: the job stops as an
    interrupted one (its state kept for ``--resume``), with one line."""


@dataclass(frozen=True, kw_only=True)
class JobPlan:
    """Where a job runs and is tracked, and what its trials ask of a node."""

    tracking_uri: str
    experiment: str
    address: str | None  # None: a local Ray
    requests: list[tuple[str, dict[str, float]]]  # every request a trial can make
    max_wait: float | None = None  # None: refuse requests no node has, before starting
    join_timeout: float = ray_cluster.JOIN_TIMEOUT  # joining ``address`` ends by then


@dataclass
class Job:
    """The running job: its parent run, and how it ends (FAILED unless said otherwise)."""

    parent: tracking.ParentRun
    status: str = "FAILED"

    def finished(self) -> None:
        self.status = "FINISHED"


@dataclass(frozen=True)
class GridResult:
    """One trial of a fixed grid: the value it ran with, what it reported last, its error."""

    value: Any
    metrics: dict[str, Any]
    error: str | None


def preflight(plan: JobPlan) -> None:
    """The checks that need no Ray: a mistake here costs seconds, not a started job."""
    tracking.check_reachable(plan.tracking_uri)
    tracking.check_experiment(plan.tracking_uri, plan.experiment)
    ray_cluster.check_address(plan.address)
    ray_cluster.probe(plan.address, plan.join_timeout)
    if plan.address is None and plan.max_wait is None:
        ray_cluster.check_fits(plan.requests, None)


@contextmanager
def run_job(
    plan: JobPlan,
    open_parent: Callable[[], tracking.ParentRun],
    close: Close,
    on_join_failure: Callable[[], None] | None = None,
) -> Iterator[Job]:
    """Ray up, the parent run open, interrupts resumable: yields the :class:`Job`.

    ``open_parent`` opens (or reopens) the parent run; ``close`` is called once however
    the body ends; ``on_join_failure`` undoes what the command prepared when Ray cannot
    be started or joined (nothing is tracked yet then)."""
    with ExitStack() as after_ray, ThreadPoolExecutor(max_workers=1) as pool, ExitStack() as ray:
        # A local Ray: MLflow's first import and schema set-up overlap its start. Joining a
        # cluster can fail (no cluster at "auto"): join first, so a failed join leaves no run.
        pending = pool.submit(open_parent) if plan.address is None else None
        try:
            ray.enter_context(ray_cluster.ray_session(plan.address, plan.join_timeout))
            if plan.address is not None and plan.max_wait is None:
                ray_cluster.check_fits(plan.requests, plan.address)
        except UserError:
            if on_join_failure is not None:
                on_join_failure()
            raise
        job = Job(pending.result() if pending else open_parent())
        after_ray.enter_context(resumable_interrupts())  # the job has a state from here
        after_ray.callback(_close_abandoned, job.parent)
        try:
            yield job
        except (KeyboardInterrupt, NoNodeCame):  # Ctrl-C, SIGTERM, or --max-wait ran out
            job.status = "KILLED"
            raise
        except Exception as exc:  # a full disk stops the job the same way: resumable
            if out_of_space(exc):
                job.status = "KILLED"
            raise
        finally:
            with interrupts_held():
                _close(job, close)


def _close(job: Job, close: Close) -> None:
    """The command's files written and the parent run ended; on a full disk, as much of
    that as fits: the state saved before stays, and the resumed job closes the runs."""
    stopping = sys.exc_info()[1]  # what ends the job, if an exception does
    try:
        files, tags = close(job)
        tracking.finish_parent(job.parent, files, job.status, tags)
    except Exception as exc:
        if not out_of_space(exc):
            raise
        job.status = "KILLED"
        with if_room():  # the store may be on another disk than the one that is full
            tracking.finish_parent(job.parent, None, job.status, {})
        if stopping is None or not out_of_space(stopping):
            raise
        # else: the user hears of the first write that found no room, not of this one


def _close_abandoned(parent: tracking.ParentRun) -> None:
    """Once Ray is down, no trial's run stays RUNNING (room permitting: else the resumed
    job closes them)."""
    with if_room():
        tracking.close_abandoned(parent)
