"""``automl search --warm-start EXPERIMENT``: what earlier searches learnt, told to a new one.

The finished children of every search in the MLflow experiment ``EXPERIMENT`` over the
same space (the same decisions and fixed values, epochs included) and the same corpus
(the same features: the data fingerprint) are read back from their MLflow runs (each
child's architecture tag and its dev UAR), scored by this search's objective, and told
to the searcher before its first proposal (:meth:`Searcher.warm_start`). A search over
another space or corpus is refused in one line, since its rewards would mislead. Children
stopped early or failed are not told: only what finished is a result.
"""

from __future__ import annotations

import json
from typing import Any

from automl.child import arch_key
from automl.search.objective import Objective
from automl.search.searchers import Status
from automl.search.searchers.base import fingerprint
from automl.search.space import SearchSpace
from runtime import tracking
from runtime.errors import UserError
from runtime.tags import ARCHITECTURE_TAG, PARENT_TAG

SPACE_PARAM, DATA_PARAM = "space_fingerprint", "data_fingerprint"  # on a search's parent run


def space_fingerprint(space: SearchSpace) -> str:
    return fingerprint(space.describe())


def earlier_children(
    uri: str, experiment: str, space: SearchSpace, data_fingerprint: str, objective: Objective
) -> list[tuple[dict[str, Any], float, Status]]:
    """(values, reward, COMPLETE) per distinct finished child of the matching searches,
    oldest search first; raises :class:`UserError` when no search matches."""
    where = f"--warm-start {experiment}"
    experiment_id, searches = tracking.job_runs(uri, experiment, "search", "--warm-start")
    same_space = [r for r in searches if r.params.get(SPACE_PARAM) == space_fingerprint(space)]
    if not same_space:
        raise UserError(
            f"{where}: its searches are over another search space (other decisions, fixed "
            "values or epochs): their rewards would mislead this one"
        )
    matching = [r for r in same_space if r.params.get(DATA_PARAM) == data_fingerprint]
    if not matching:
        raise UserError(
            f"{where}: its searches over this space trained on another corpus or frontend "
            "(another data fingerprint)"
        )
    children: dict[str, tuple[dict[str, Any], float, Status]] = {}
    for search in matching:
        for run in tracking.runs_tagged(uri, experiment_id, PARENT_TAG, search.run_id):
            told = _told(run, space, objective)
            if told is not None:
                children.setdefault(arch_key(space.to_architecture(told[0])), told)
    return list(children.values())


def _told(
    run: tracking.StoredRun, space: SearchSpace, objective: Objective
) -> tuple[dict[str, Any], float, Status] | None:
    if run.status != "FINISHED" or ARCHITECTURE_TAG not in run.tags:
        return None
    dev_uar = run.metrics.get("dev_uar")
    values = space.values_of(json.loads(run.tags[ARCHITECTURE_TAG]))
    if dev_uar is None or values is None:
        return None
    costs = {k: run.metrics[k] for k in ("n_params", "latency_ms") if k in run.metrics}
    return values, objective.reward(dev_uar, costs), Status.COMPLETE
