"""MLflow tracking, and the only module that imports MLflow.

A search is a parent run (its parameters, searcher updates, summary and searcher
state); every child is a nested run created by the Ray worker that trains it, so its
per-epoch curves appear live in the UI. All calls go through ``MlflowClient`` with an
explicit URI: no fluent global state leaks between children of a reused worker.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from automl.errors import UserError

DEFAULT_URI = "sqlite:///mlflow.db"
PARENT_TAG = "mlflow.parentRunId"
FLUSH_SECONDS = 5.0  # how often a child's per-epoch metrics reach the store
T = TypeVar("T")


def resolve_uri(uri: str | None) -> str:
    """``--tracking-uri``, else $MLFLOW_TRACKING_URI, else ./mlflow.db; SQLite paths made absolute

    (Ray workers run in other directories, so a relative path would point elsewhere)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def check_reachable(uri: str) -> None:
    """Fail fast with one clear line instead of minutes of client retries."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as response:
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UserError(f"tracking server {uri} is unreachable ({reason})") from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise UserError(f"tracking URI {uri}: folder {folder} is missing or not writable")
    else:
        raise UserError(f"tracking URI {uri}: use sqlite:///PATH or http(s)://HOST:PORT")


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its database-migration chatter
    logging.getLogger("alembic").setLevel(logging.WARNING)

    return MlflowClient(tracking_uri=uri)


def _retry(call: Callable[[], T], attempts: int = 5) -> T:
    """SQLite answers 'database is locked' when many workers write at once: wait and retry."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """Nested architecture -> MLflow params (``layers.0.units`` = ``80``)."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else k, v))
        return out
    if isinstance(value, list):
        out = {f"{prefix}.count": str(len(value))}
        for i, v in enumerate(value):
            out.update(flatten(f"{prefix}.{i}", v))
        return out
    return {prefix: str(value)}


@dataclass(frozen=True)
class SearchRun:
    """Where a search logs: small and picklable, so it travels to Ray workers."""

    uri: str
    experiment_id: str
    parent_run_id: str


def start_parent(uri: str, experiment: str, run_name: str, params: dict[str, Any]) -> SearchRun:
    """Create (or find) the experiment and open the parent run of a search or an RL job."""
    from mlflow.entities import Param

    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        location = None
        if uri.startswith("sqlite:///"):  # artifacts beside the database, at an absolute path
            location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
        experiment_id = client.create_experiment(experiment, artifact_location=location)
    else:
        experiment_id = found.experiment_id
    run = client.create_run(experiment_id, run_name=run_name, tags={"automl.role": "search"})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    return SearchRun(uri, experiment_id, run.info.run_id)


def reopen(search: SearchRun) -> None:
    """A resumed search writes into its old parent run again; children that were running
    when it stopped are marked killed (they are trained again under new trial numbers)."""
    _retry(lambda: _client(search.uri).update_run(search.parent_run_id, status="RUNNING"))
    close_abandoned(search)


def close_abandoned(search: SearchRun, trial: int | None = None) -> None:
    """Mark RUNNING children (of one trial, or all) KILLED: their process died mid-way."""
    client = _client(search.uri)
    query = f"tags.`{PARENT_TAG}` = '{search.parent_run_id}' and attributes.status = 'RUNNING'"
    if trial is not None:
        query += f" and tags.`automl.trial` = '{trial}'"
    for run in _retry(lambda: client.search_runs([search.experiment_id], query)):
        _retry(lambda run=run: client.set_terminated(run.info.run_id, status="KILLED"))


def orphans(search: SearchRun, known_trials: set[int]) -> list[dict[str, Any]]:
    """Children that finished after their search's driver died: their runs say FINISHED but
    the search never heard of them. Returned as trial records to adopt."""
    client = _client(search.uri)
    query = f"tags.`{PARENT_TAG}` = '{search.parent_run_id}' and attributes.status = 'FINISHED'"
    found = []
    for run in _retry(lambda: client.search_runs([search.experiment_id], query)):
        tags, metrics = run.data.tags, run.data.metrics
        trial = int(tags.get("automl.trial", -1))
        if trial < 0 or trial in known_trials or "automl.architecture" not in tags:
            continue
        found.append(
            {
                "trial": trial,
                "architecture": json.loads(tags["automl.architecture"]),
                "dev_uar": metrics.get("dev_uar"),
                "n_params": int(metrics.get("n_params", 0)),
                "seconds": (run.info.end_time - run.info.start_time) / 1000,
                "mlflow_run_id": run.info.run_id,
            }
        )
    return found


def log_search_metrics(search: SearchRun, metrics: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    _retry(lambda: _client(search.uri).log_batch(search.parent_run_id, metrics=batch))


def finish_search(
    search: SearchRun,
    summary: dict[str, Any],
    searcher_state: dict[str, Any] | None = None,
    status: str = "FINISHED",
) -> None:
    """Attach the summary (and the searcher's state) to the parent run and close it."""
    client = _client(search.uri)
    with tempfile.TemporaryDirectory() as tmp:
        if searcher_state is not None:
            torch.save(searcher_state, Path(tmp) / "searcher_state.pt")
        Path(tmp, "summary.json").write_text(json.dumps(summary, indent=2))
        _retry(lambda: client.log_artifacts(search.parent_run_id, tmp))
    _retry(lambda: client.set_terminated(search.parent_run_id, status=status))


class ChildRun:
    """A nested run (one child, or one RL seed), written from the worker that does the work."""

    def __init__(
        self,
        parent: SearchRun,
        run_name: str,
        params: dict[str, Any],
        tags: dict[str, str] | None = None,
    ) -> None:
        from mlflow.entities import Param

        self.client = _client(parent.uri)
        run = _retry(
            lambda: self.client.create_run(
                parent.experiment_id,
                run_name=run_name,
                tags={PARENT_TAG: parent.parent_run_id, **(tags or {})},
            )
        )
        self.run_id = run.info.run_id
        self.buffer: list = []
        self.flushed_at = time.monotonic()
        batch = [Param(k, str(v)[:6000]) for k, v in params.items()]
        _retry(lambda: self.client.log_batch(self.run_id, params=batch))

    def log_json(self, payload: dict[str, Any], name: str) -> None:
        _retry(lambda: self.client.log_dict(self.run_id, payload, name))

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Buffered and written every ``FLUSH_SECONDS``: curves stay live in the UI for long
        runs, while short epochs or episodes do not wait on the store each time."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.buffer += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if time.monotonic() - self.flushed_at >= FLUSH_SECONDS:
            self._flush()

    def _flush(self) -> None:
        if self.buffer:
            batch, self.buffer = self.buffer, []
            _retry(lambda: self.client.log_batch(self.run_id, metrics=batch))
        self.flushed_at = time.monotonic()

    def finish(self, metrics: dict[str, float], artifacts: dict[str, Any] | None = None) -> bool:
        """Final metrics; ``artifacts`` maps file names under ``model/`` to tensors or JSON.

        Returns False, writing nothing, when the run was closed as KILLED meanwhile: its
        search's driver died and a resumed search trains this child again."""
        from mlflow.entities import Metric

        if _retry(lambda: self.client.get_run(self.run_id)).info.status == "KILLED":
            return False
        self._flush()
        now = int(time.time() * 1000)
        final = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        _retry(lambda: self.client.log_batch(self.run_id, metrics=final))
        if artifacts:
            with tempfile.TemporaryDirectory() as tmp:
                for name, payload in artifacts.items():
                    if name.endswith(".json"):
                        Path(tmp, name).write_text(json.dumps(payload, indent=2))
                    else:
                        torch.save(payload, Path(tmp, name))
                _retry(lambda: self.client.log_artifacts(self.run_id, tmp, "model"))
        _retry(lambda: self.client.set_terminated(self.run_id, status="FINISHED"))
        return True

    def fail(self, error: str) -> None:
        self._flush()
        _retry(lambda: self.client.set_tag(self.run_id, "automl.error", error[:5000]))
        _retry(lambda: self.client.set_terminated(self.run_id, status="FAILED"))
