"""Ray Tune for the jobs of ``runtime``: a fixed grid of trials, and the wait for a node.

With :mod:`runtime.trial` (the trial's side) and ``automl.search.ray_tune`` (a searcher's
trials), the only modules that import Ray Tune. Results come back as
:class:`runtime.job.GridResult`, not as Tune's objects.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune import Callback
from ray.tune.execution.placement_groups import resource_dict_to_pg_factory
from ray.tune.stopper import Stopper

from runtime.job import GridResult, NoNodeCame
from runtime.resources import TrialResources


class Waiting(Callback, Stopper):
    """Trials Tune holds but cannot place (PENDING: no node has their resources free),
    counted for ``on_count``. With ``limit``, it ends the job once trials have waited that
    long while none runs: a cluster that adds nodes on demand added none. (A Tune
    callback sees the trials' states; a stopper may end the experiment.)"""

    def __init__(self, limit: float | None, on_count: Callable[[int], None] | None = None):
        self.limit, self.on_count = limit, on_count
        self.since: float | None = None  # since when trials wait and none runs
        self.count, self.gave_up = 0, False

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.gave_up:  # a display keeps what the job ended on
            return
        waiting = sum(t.status == "PENDING" for t in trials)  # Tune's Trial.PENDING
        running = sum(t.status == "RUNNING" for t in trials)
        if waiting != self.count:
            self.count = waiting
            if self.on_count is not None:
                self.on_count(waiting)
        self.since = (self.since or time.time()) if waiting and not running else None

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its stoppers and callbacks with its experiment state; the live
        callback stays in this process."""
        return {**self.__dict__, "on_count": None}

    def stop_all(self) -> bool:
        if self.limit is not None and self.since is not None:
            self.gave_up = self.gave_up or time.time() - self.since >= self.limit
        return self.gave_up

    def give_up_message(self, resources: TrialResources, trials: str, job: str) -> NoNodeCame:
        asked = " or ".join(
            ", ".join(f"{v:g} {k}" for k, v in need.items()) for _, need in resources.requests()
        )
        return NoNodeCame(
            f"{trials} waited {self.limit:.0f} s (--max-wait) for a node with {asked} free "
            f"while none ran, and none came; the {job} is saved: add such a node (or ask "
            "for less) and --resume it"
        )


@dataclass(frozen=True, kw_only=True)
class GridOptions:
    workers: int  # trials at once
    resources: TrialResources
    storage: Path  # Tune's own experiment files
    max_wait: float | None = None
    names: tuple[str, str] = ("trials", "job")  # what its trials and it are, for messages


def run_grid(
    trainable: Callable[..., None],
    key: str,
    values: list[Any],
    options: GridOptions,
    **parameters: Any,
) -> list[GridResult]:
    """One trial per value: ``trainable(config, **parameters)`` with ``config[key]`` the
    value, ``options.workers`` at once; inside :func:`runtime.ray_cluster.ray_session`.
    The parameters go to Ray's object store once. Raises :class:`NoNodeCame` when trials
    waited ``max_wait`` for a node."""
    waiting = Waiting(options.max_wait)
    placed = tune.with_resources(
        tune.with_parameters(trainable, **parameters), partial(_placement, options.resources)
    )
    grid = tune.Tuner(
        placed,
        param_space={key: tune.grid_search(values)},
        tune_config=tune.TuneConfig(max_concurrent_trials=options.workers, reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"grid-{int(time.time())}",
            verbose=0,
            storage_path=str(options.storage),
            stop=waiting,
            callbacks=[waiting],
        ),
    ).fit()
    if waiting.gave_up:
        raise waiting.give_up_message(options.resources, *options.names)
    return [
        GridResult(r.config[key], dict(r.metrics or {}), str(r.error) if r.error else None)
        for r in grid
    ]


def _placement(resources: TrialResources, config: dict[str, Any]) -> Any:
    return resource_dict_to_pg_factory(resources.for_trial(config))
