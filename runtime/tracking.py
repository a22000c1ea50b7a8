"""The MLflow run lifecycle, and the only module of ``runtime`` that imports MLflow.

A job (a search, an RL training of many seeds) is a parent run; each of its trials (a
child network, a seed) is a nested run created by the Ray worker that does the work, so
its curves appear live in the UI. All calls go through ``MlflowClient`` with an explicit
URI: no fluent global state leaks between trials of a reused worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from runtime.errors import UserError
from runtime.files import write_torch
from runtime.tags import (
    DATASET_CONTEXT_TAG,
    ERROR_TAG,
    EXPERIMENT_KIND,
    OUTCOME_TAG,
    PARENT_TAG,
    ROLE_TAG,
    TRIAL_TAG,
)

DEFAULT_URI = "sqlite:///mlflow.db"
FLUSH_SECONDS = 5.0  # how often a trial's live metrics reach the store
CHECKPOINT_DIR = "checkpoint"  # a trial's raw files in its run (weights, architecture)
RUN_PAGE = 1000  # MLflow's largest page of runs
T = TypeVar("T")


def resolve_uri(uri: str | None) -> str:
    """``--tracking-uri``, else $MLFLOW_TRACKING_URI, else ./mlflow.db; SQLite paths made absolute

    (Ray workers run in other directories, so a relative path would point elsewhere)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def check_store(uri: str) -> None:
    """For commands that only read runs (compare, evaluate, export, predict): the store
    must exist; opening a SQLite file that does not would create an empty store."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise UserError(
            f"no MLflow store at {uri.removeprefix('sqlite:///')}: run automl search first, "
            "or give --tracking-uri (or MLFLOW_TRACKING_URI)"
        )
    check_reachable(uri)


def check_reachable(uri: str) -> None:
    """Fail fast with one clear line instead of minutes of client retries. A server is
    asked a real API question (search one experiment), not just ``/health``: a server that
    refuses this host name (MLflow's DNS-rebinding protection) still answers ``/health``."""
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                answer = response.read()
        except urllib.error.HTTPError as exc:
            detail = " ".join(exc.read(300).decode("utf-8", "replace").split())
            hint = (
                "; it does not accept this host name: start it with --allowed-hosts (or "
                "MLFLOW_SERVER_ALLOWED_HOSTS) naming the host:port clients use"
                if exc.code == 403
                else ""
            )
            raise UserError(
                f"tracking server {uri} refused an API call (HTTP {exc.code}: {detail}){hint}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UserError(f"tracking server {uri} is unreachable ({reason})") from None
        _check_artifact_store(uri, answer)
    elif uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
            raise UserError(f"tracking URI {uri}: folder {path.parent} is missing or not writable")
        _check_sqlite_store(uri, path)
    else:
        raise UserError(f"tracking URI {uri}: use sqlite:///PATH or http(s)://HOST:PORT")


def _check_sqlite_store(uri: str, path: Path) -> None:
    """A SQLite file is MLflow's store, or new (missing, or empty): a folder, a file that
    is not SQLite, another application's database (MLflow would add its ~50 tables to it,
    silently) or a store of another MLflow version is refused."""
    import sqlite3

    if path.is_dir():
        raise UserError(f"tracking URI {uri}: {path} is a folder; name a database file in it")
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("select name from sqlite_master")}
    except sqlite3.DatabaseError as exc:
        raise UserError(f"tracking URI {uri}: {path} is not a SQLite database ({exc})") from None
    if tables and not {"experiments", "alembic_version"} <= tables:
        shown = ", ".join(sorted(tables)[:5])
        raise UserError(
            f"tracking URI {uri}: {path} is another application's database (tables {shown}), "
            "not an MLflow store; name a new file"
        )
    if tables:
        _check_schema(uri, path)


def _check_schema(uri: str, path: Path) -> None:
    """MLflow opens a store only at the schema version it writes; another version's store
    fails on first use with a paragraph and a traceback: said here in a line, with the fix."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        client(uri).search_experiments(max_results=1)
    except MlflowException as exc:
        versions = re.search(r"found version (\w+), but expected (\w+)", str(exc))
        if versions is None:
            raise
        raise UserError(
            f"tracking URI {uri}: {path} is a store of another MLflow version (schema "
            f"{versions[1]}; MLflow {mlflow.__version__} here reads {versions[2]}): if an older "
            f"MLflow wrote it, back it up and run `mlflow db upgrade {uri}`; if a newer one, "
            "use that version; or name a new file"
        ) from None


def _check_artifact_store(uri: str, answer: bytes) -> None:
    """Runs store their models through the server (``mlflow-artifacts:``, MLflow's default)
    or in a store every machine reaches (s3, gs, ...). A server started without serving
    artifacts hands out a path on its own disk instead: a relative one each client would
    resolve in its own folder, an absolute one only machines sharing that disk can write.
    Say so now rather than when the first child saves its weights."""
    try:
        experiments = json.loads(answer).get("experiments") or []
    except (ValueError, AttributeError):
        return
    location = experiments[0].get("artifact_location", "") if experiments else ""
    scheme = location.split(":", 1)[0] if "://" in location or ":/" in location else ""
    if scheme not in ("", "file"):
        return  # served by it, or a remote store
    path = Path(location.removeprefix("file://") if scheme else location)
    nearest = next((p for p in (path, *path.parents) if p.exists()), None)
    if path.is_absolute() and nearest and nearest.is_dir() and os.access(nearest, os.W_OK):
        return  # a disk this machine may share with the server (it cannot tell more)
    raise UserError(
        f"tracking server {uri} keeps artifacts at {location}, a path on its own disk that "
        "this machine cannot write: start it serving artifacts (`mlflow server "
        "--artifacts-destination DIR`, without --no-serve-artifacts) or give every machine "
        "that path"
    )


def check_experiment(uri: str, experiment: str) -> None:
    """A name MLflow refuses (empty, too long), or a deleted experiment, which takes no
    runs: said (with how to restore it) before anything starts."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_experiment_name

    try:
        _validate_experiment_name(experiment)
    except MlflowException as exc:
        raise UserError(f"--experiment {experiment!r}: {exc.message}") from None
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return  # a new store holds no deleted experiment
    with store_lock(uri):
        found = client(uri).get_experiment_by_name(experiment)
    if found is not None and found.lifecycle_stage == "deleted":
        raise UserError(
            f"--experiment {experiment}: deleted in MLflow ({uri}); restore it with "
            f"`MLFLOW_TRACKING_URI={uri} mlflow experiments restore --experiment-id "
            f"{found.experiment_id}`, or choose another name"
        )


@contextmanager
def store_lock(uri: str, timeout: float = 300.0) -> Iterator[None]:
    """Jobs that open one SQLite store at the same moment take turns here: the first to
    use a new store creates its tables (MLflow's schema migration, which two processes
    cannot run at once) and the experiment; the others then find both. A file lock beside
    the database (``<file>.lock``), so it holds across processes; a server needs none."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock, Timeout

    path = uri.removeprefix("sqlite:///") + ".lock"
    try:
        with FileLock(path, timeout=timeout):
            yield
    except Timeout:
        raise UserError(
            f"tracking URI {uri}: another job has held {path} for {timeout:.0f} s; if none "
            "is running, delete that file"
        ) from None


@contextmanager
def using(uri: str | None) -> Iterator[None]:
    """MLflow's module-level API (runs, models, the Model Registry) pointed at ``uri`` for
    the block: both URIs, or a registry set earlier in the process would still receive
    registrations. MLflow keeps them in the process's environment too, where later work
    in the process and its child processes would inherit them: the block restores what
    was there. ``None``: as it is."""
    import mlflow

    if uri is None:
        yield
        return
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    before = {name: os.environ.get(name) for name in names}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before["MLFLOW_TRACKING_URI"])
        mlflow.set_registry_uri(before["MLFLOW_REGISTRY_URI"])
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def client(uri: str):
    """An ``MlflowClient`` for ``uri`` (log levels: :func:`runtime.process.configure_process`)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def retry(call: Callable[[], T], attempts: int = 5) -> T:
    """SQLite answers 'database is locked' when many workers write at once: wait and retry."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def metric_key(prefix: str, label: str) -> str:
    """``prefix/label`` as a metric key MLflow takes, whatever the label (a class name):
    characters it refuses (brackets, commas, tabs, emoji) and those that would make the
    key a path (``/``, ``.``) become ``_``."""
    safe = re.sub(r"[^\w\- ]", "_", label) or "_"
    return f"{prefix}/{safe}"


def check_model_name(name: str, option: str) -> None:
    """A name the Model Registry takes, checked before any work (MLflow's own rule)."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name

    try:
        _validate_model_name(name)
    except MlflowException as exc:
        raise UserError(f"{option} {name!r}: {exc.message}") from None


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """Nested config -> MLflow params (``layers.0.units`` = ``80``)."""
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
class DatasetInfo:
    """What MLflow shows in a run's Dataset column: a name, a digest of the content (and
    of how features were made), where it came from, and a JSON profile."""

    name: str
    digest: str
    source: str
    profile: str = "{}"

    def as_input(self, context: str = "training") -> Any:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(self.name, self.digest[:36], "local", json.dumps({"uri": self.source}),
                          profile=self.profile)  # fmt: skip
        return DatasetInput(dataset, [InputTag(DATASET_CONTEXT_TAG, context)])


def code_version() -> str:
    """This project's version, and its git commit when it runs from a checkout (with
    ``+dirty`` when the checkout has changes): what a child was trained with."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = version("automl-rl")
    except PackageNotFoundError:
        text = "unknown"
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
        changes = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return text
    return f"{text}+git.{commit}" + (".dirty" if changes else "")


def log_dataset(uri: str, run_id: str, dataset: DatasetInfo) -> None:
    retry(lambda: client(uri).log_inputs(run_id, datasets=[dataset.as_input()]))


@dataclass(frozen=True)
class ParentRun:
    """Where a job logs: small and picklable, so it travels to Ray workers."""

    uri: str
    experiment_id: str
    parent_run_id: str


def start_parent(
    uri: str, experiment: str, run_name: str, params: dict[str, Any], role: str
) -> ParentRun:
    """Create (or find) the experiment and open the parent run of a job."""
    from mlflow.entities import Param

    experiment_id = ensure_experiment(uri, experiment)
    mlflow = client(uri)
    run = mlflow.create_run(experiment_id, run_name=run_name, tags={ROLE_TAG: role})
    mlflow.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    return ParentRun(uri, experiment_id, run.info.run_id)


def ensure_experiment(uri: str, experiment: str) -> str:
    """The id of ``experiment``, created (artifacts beside a SQLite store) if need be."""
    with store_lock(uri):
        mlflow = client(uri)  # a new SQLite store gets its tables here
        found = mlflow.get_experiment_by_name(experiment)
        if found is None:
            location = None
            if uri.startswith("sqlite:///"):  # artifacts beside the database, absolute path
                location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
            experiment_id = mlflow.create_experiment(experiment, artifact_location=location)
        else:
            experiment_id = found.experiment_id
        if found is None or EXPERIMENT_KIND not in found.tags:
            # what the experiment is, for tools that read it (MLflow 3.17's UI decides its
            # pages per browser instead: runtime.mlflow_ui links to the runs page)
            mlflow.set_experiment_tag(experiment_id, EXPERIMENT_KIND, "custom_model_development")
    return experiment_id


def reopen(parent: ParentRun) -> None:
    """A resumed job writes into its old parent run again; trials that were running when it
    stopped are marked killed (they run again)."""
    retry(lambda: client(parent.uri).update_run(parent.parent_run_id, status="RUNNING"))
    close_abandoned(parent)


def _children_query(parent: ParentRun, status: str, trial: int | None = None) -> str:
    query = f"tags.`{PARENT_TAG}` = '{parent.parent_run_id}' and attributes.status = '{status}'"
    return query if trial is None else query + f" and tags.`{TRIAL_TAG}` = '{trial}'"


def close_abandoned(parent: ParentRun, trial: int | None = None) -> None:
    """Mark RUNNING trial runs (of one trial, or all) KILLED: their process died mid-way."""
    mlflow = client(parent.uri)
    query = _children_query(parent, "RUNNING", trial)
    for run in retry(lambda: mlflow.search_runs([parent.experiment_id], query)):
        retry(lambda run=run: mlflow.set_terminated(run.info.run_id, status="KILLED"))


def finished_children(parent: ParentRun, trial: int | None = None) -> list[Any]:
    """The FINISHED nested runs of ``parent`` (of one trial, or all; MLflow ``Run`` objects)."""
    mlflow = client(parent.uri)
    query = _children_query(parent, "FINISHED", trial)
    return retry(lambda: mlflow.search_runs([parent.experiment_id], query))


def close_stopped(
    parent: ParentRun, trial: int, metrics: dict[str, float], outcome: str
) -> str | None:
    """A trial its job stopped early (a scheduler, a deadline): what it reached, why it
    stopped (tag ``automl.outcome``), and status KILLED: stopped, not failed. Returns its
    run id (None when its run was closed already)."""
    from mlflow.entities import Metric

    mlflow = client(parent.uri)
    now = int(time.time() * 1000)
    final = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    query = _children_query(parent, "RUNNING", trial)
    run_id = None
    for run in retry(lambda: mlflow.search_runs([parent.experiment_id], query)):
        run_id = run.info.run_id
        retry(lambda run_id=run_id: mlflow.log_batch(run_id, metrics=final))
        retry(lambda run_id=run_id: mlflow.set_tag(run_id, OUTCOME_TAG, outcome))
        retry(lambda run_id=run_id: mlflow.set_terminated(run_id, status="KILLED"))
    return run_id


def log_parent_metrics(
    parent: ParentRun, metrics: dict[str, float], step: int, tags: dict[str, str] | None = None
) -> None:
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    labels = [RunTag(k, v) for k, v in (tags or {}).items()]
    retry(lambda: client(parent.uri).log_batch(parent.parent_run_id, metrics=batch, tags=labels))


def log_run_metrics(uri: str, run_id: str, metrics: dict[str, float]) -> None:
    """Metrics on a run, open or closed (what a job learns of a trial after it ended)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    retry(lambda: client(uri).log_batch(run_id, metrics=batch))


def finish_parent(
    parent: ParentRun,
    files: dict[str, Any] | None = None,
    status: str = "FINISHED",
    tags: dict[str, str] | None = None,
) -> None:
    """Attach ``files`` (name -> JSON-able payload, or tensors for ``.pt``) and ``tags``, and
    close the run."""
    mlflow = client(parent.uri)
    for key, value in (tags or {}).items():
        retry(lambda key=key, value=value: mlflow.set_tag(parent.parent_run_id, key, value))
    if files:
        with tempfile.TemporaryDirectory() as tmp:
            _write_files(Path(tmp), files)
            retry(lambda: mlflow.log_artifacts(parent.parent_run_id, tmp))
    retry(lambda: mlflow.set_terminated(parent.parent_run_id, status=status))


def _write_files(folder: Path, files: dict[str, Any]) -> None:
    for name, payload in files.items():
        if name.endswith(".json"):
            (folder / name).write_text(json.dumps(payload, indent=2))
        else:
            write_torch(folder / name, payload)


class ChildRun:
    """A nested run (one trial of a job), written from the worker that does the work."""

    def __init__(
        self,
        parent: ParentRun,
        run_name: str,
        params: dict[str, Any],
        tags: dict[str, str] | None = None,
        dataset: DatasetInfo | None = None,
    ) -> None:
        from mlflow.entities import Param

        self.client = client(parent.uri)
        run = retry(
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
        retry(lambda: self.client.log_batch(self.run_id, params=batch))
        if dataset is not None:
            retry(lambda: self.client.log_inputs(self.run_id, datasets=[dataset.as_input()]))

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Buffered and written every ``FLUSH_SECONDS``: curves stay live in the UI for long
        runs, while short epochs or episodes do not wait on the store each time."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.buffer += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if time.monotonic() - self.flushed_at >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            batch, self.buffer = self.buffer, []
            retry(lambda: self.client.log_batch(self.run_id, metrics=batch))
        self.flushed_at = time.monotonic()

    def finish(self, metrics: dict[str, float], artifacts: dict[str, Any] | None = None) -> bool:
        """Final metrics; ``artifacts`` maps file names under ``checkpoint/`` to tensors or
        JSON (not ``child-NNNN/``: that name is the run's MLflow model).

        Returns False, writing nothing, when the run was closed as KILLED meanwhile: its
        job's driver died and the resumed job runs this trial again."""
        from mlflow.entities import Metric

        if retry(lambda: self.client.get_run(self.run_id)).info.status == "KILLED":
            return False
        self.flush()
        now = int(time.time() * 1000)
        final = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        retry(lambda: self.client.log_batch(self.run_id, metrics=final))
        if artifacts:
            with tempfile.TemporaryDirectory() as tmp:
                _write_files(Path(tmp), artifacts)
                retry(lambda: self.client.log_artifacts(self.run_id, tmp, CHECKPOINT_DIR))
        retry(lambda: self.client.set_terminated(self.run_id, status="FINISHED"))
        return True

    def fail(self, error: str) -> None:
        self.flush()
        retry(lambda: self.client.set_tag(self.run_id, ERROR_TAG, error[:5000]))
        retry(lambda: self.client.set_terminated(self.run_id, status="FAILED"))


# Reading runs back, and the runs and models of a finished job (``automl evaluate``,
# ``compare``, ``export``, ``predict``): the rest of the project asks here, in plain values,
# and never sees an MLflow object or exception.


class TrackingError(Exception):
    """MLflow refused a request (its own message, first line first): raised here instead of
    ``MlflowException``, so no caller needs MLflow to tell this failure from a bug."""


class UnknownRun(TrackingError):
    """:func:`get_run` of an id the store does not hold (or cannot read): MLflow's own
    message for it is a long REST error, so callers say it in a line of their own."""


def _tracking_error(exc: Exception, kind: type[TrackingError] = TrackingError) -> TrackingError:
    return kind(str(exc).strip() or type(exc).__name__)


@dataclass(frozen=True)
class StoredRun:
    """What a run recorded, as plain values: callers read a run without MLflow's types."""

    run_id: str
    experiment_id: str
    status: str  # RUNNING, FINISHED, FAILED, KILLED
    start_time: int | None  # milliseconds since the epoch
    end_time: int | None
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]  # each metric's latest value

    @classmethod
    def of(cls, run: Any) -> StoredRun:
        info, data = run.info, run.data
        times = (info.start_time, info.end_time)
        values = (dict(data.tags), dict(data.params), dict(data.metrics))
        return cls(info.run_id, info.experiment_id, info.status, *times, *values)


def get_run(uri: str, run_id: str) -> StoredRun:
    """One run by its id, for commands handed a run id by the user; :class:`UnknownRun`
    when the store has none by that id."""
    from mlflow.exceptions import MlflowException

    try:
        return StoredRun.of(retry(lambda: client(uri).get_run(run_id)))
    except MlflowException as exc:
        raise _tracking_error(exc, UnknownRun) from None


def has_run(uri: str, run_id: str) -> bool:
    """Whether the store at ``uri`` holds run ``run_id`` (a SQLite file that does not exist
    holds none, and is not created by asking)."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return False
    check_reachable(uri)
    try:
        get_run(uri, run_id)
    except UnknownRun:
        return False
    return True


def find_experiment(uri: str, name: str) -> str | None:
    """The id of the live experiment ``name`` (None when there is none, or it is deleted):
    what a report of an experiment's runs starts from."""
    found = client(uri).get_experiment_by_name(name)
    if found is None or found.lifecycle_stage == "deleted":
        return None
    return found.experiment_id


def runs_tagged(uri: str, experiment_id: str, key: str, value: str) -> list[StoredRun]:
    """Every run of an experiment whose tag ``key`` is ``value`` (all pages of MLflow's
    search, which answers at most ``RUN_PAGE`` runs at a time), to report on a job's runs."""
    mlflow = client(uri)
    query = f"tags.`{key}` = '{value}'"
    runs, token = [], None
    while True:
        page = mlflow.search_runs([experiment_id], query, max_results=RUN_PAGE, page_token=token)
        runs += [StoredRun.of(run) for run in page]
        token = page.token
        if not token:
            return runs


def job_runs(uri: str, experiment: str, role: str, option: str) -> tuple[str, list[StoredRun]]:
    """The id of ``experiment`` and its runs of ``role`` (a kind of job's parent runs),
    oldest first; a missing experiment, or one with no such run, is a :class:`UserError`
    naming ``option``, the way the user named it."""
    experiment_id = find_experiment(uri, experiment)
    if experiment_id is None:
        raise UserError(f"{option} {experiment}: no such experiment in {uri}")
    runs = runs_tagged(uri, experiment_id, ROLE_TAG, role)
    if not runs:
        raise UserError(f"{option} {experiment}: holds no {role} (in {uri})")
    return experiment_id, sorted(runs, key=lambda r: r.start_time or 0)


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """Every (step, value) a run logged for ``key`` (a curve; the run's metrics keep only
    the latest value)."""
    return [(m.step, m.value) for m in client(uri).get_metric_history(run_id, key)]


def start_run(uri: str, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    """Open a run outside any job (an evaluation beside the child it scores); its id."""
    return retry(
        lambda: client(uri).create_run(experiment_id, run_name=run_name, tags=tags)
    ).info.run_id


def log_values(
    uri: str,
    run_id: str,
    params: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
) -> None:
    """Params and final metrics (step 0) of a run opened with :func:`start_run`, in one
    write."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    batch = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
    final = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()]
    retry(lambda: client(uri).log_batch(run_id, metrics=final, params=batch))


def log_artifact(uri: str, run_id: str, path: Path, folder: str | None = None) -> None:
    """A file into a run's artifacts (under ``folder``), where the UI shows it beside the run."""
    retry(lambda: client(uri).log_artifact(run_id, str(path), folder))


def set_experiment_tag(uri: str, experiment_id: str, key: str, value: str) -> None:
    """One tag on an experiment (a view of its runs page the UI reads back)."""
    retry(lambda: client(uri).set_experiment_tag(experiment_id, key, value))


def set_tag(uri: str, run_id: str, key: str, value: str) -> None:
    """One tag on a run, open or closed (a link between runs: evaluation and child)."""
    retry(lambda: client(uri).set_tag(run_id, key, value))


@contextmanager
def closed_on_error(uri: str, run_id: str) -> Iterator[None]:
    """A run opened outside a job, closed if the block fails: KILLED on Ctrl-C, FAILED
    (with its error) otherwise, so no run is left RUNNING."""
    try:
        yield
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        if not interrupted:
            error = str(exc)[:5000] or repr(exc)
            retry(lambda: client(uri).set_tag(run_id, ERROR_TAG, error))
        end_run(uri, run_id, "KILLED" if interrupted else "FAILED")
        raise


def end_run(uri: str, run_id: str, status: str = "FINISHED", end_time: int | None = None) -> None:
    """Close a run with ``status``; ``end_time`` (ms) puts back the time it ended before, for
    a run reopened only to add a model to it."""
    retry(lambda: client(uri).set_terminated(run_id, status, end_time=end_time))


def download_artifact(uri: str, run_id: str, path: str, into: Path) -> Path:
    """One artifact of a run (``checkpoint/weights.pt``) into the folder ``into``; its path."""
    return Path(retry(lambda: client(uri).download_artifacts(run_id, path, str(into))))


def log_pyfunc_model(
    uri: str,
    run_id: str,
    name: str,
    code: Path,
    artifacts: dict[str, str],
    input_example: Any,
    pip_requirements: list[str],
) -> str:
    """Log an MLflow pyfunc model ``name`` into run ``run_id`` with models-from-code
    (``code`` is the model's Python file, run on load: nothing is pickled); returns the
    model's URI (``models:/<model id>``; ``runs:/<run id>/<name>`` finds it too).

    MLflow logs a model only into its active run: the run is resumed for it, and ends
    FINISHED now (:func:`end_run` puts back its status and end time where that matters)."""
    import mlflow

    with using(uri), mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(code),
            artifacts=artifacts,
            input_example=input_example,
            pip_requirements=pip_requirements,
        )
    return info.model_uri


def download_model(model_uri: str, tracking_uri: str | None, into: Path) -> Path:
    """An MLflow model (``models:/...``, ``runs:/...``) into the folder ``into``; its local
    path. :class:`TrackingError` when MLflow cannot find or fetch it."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        with using(tracking_uri):
            found = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(into))
    except MlflowException as exc:
        raise _tracking_error(exc) from None
    return Path(found)


def register_model(uri: str, model_uri: str, name: str, tags: dict[str, str]) -> int:
    """A new version of ``name`` in the Model Registry of ``uri`` holding ``model_uri``,
    tagged with ``tags``; returns its version number."""
    import mlflow

    with using(uri):
        version = mlflow.register_model(model_uri, name)
    mlflow_client = client(uri)
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, version.version, key, value)
    return int(version.version)
