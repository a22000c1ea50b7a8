"""What a user opens in MLflow's web UI: the command that serves a store, and links that
land on the page they came for.

MLflow 3.17's UI opens an experiment on its GenAI overview or on its runs by a choice
each browser keeps (the "GenAI / Model training" switch, GenAI in a fresh browser): the
experiment's ``mlflow.experimentKind`` tag no longer decides it. Which columns the runs
page shows is a browser's setting too. What the UI does honour is a link: one carrying
``workflowType=machine_learning`` opens the runs page, and one carrying a
``viewStateShareKey`` applies a view saved on the experiment (the UI's own "share view":
an experiment tag ``mlflow.sharedViewState.<key>`` holding the view as JSON) in any
browser. So every job saves a view of its runs with the columns that matter and prints
the link to it.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from runtime import tracking
from runtime.tags import VIEW_TAG_PREFIX

UI_ADDRESS = "http://127.0.0.1:5000"  # where ``mlflow ui`` serves by default
WORKFLOW = {"workflowType": "machine_learning"}  # the UI's model-training pages


@dataclass(frozen=True)
class RunsView:
    """A view of an experiment's runs page: which runs, in what order, which columns.

    ``columns`` name them as the UI does: ``metrics.`dev_uar```, ``tags.`automl.arch```,
    ``attributes.`Models```."""

    key: str  # the share key: letters, digits, ``-`` and ``_``
    filter: str  # an MLflow search filter
    order_by: str
    columns: tuple[str, ...]
    ascending: bool = False

    def state(self) -> dict:
        """The JSON the UI reads back: its search facets and the runs table's columns."""
        return {
            "searchFilter": self.filter,
            "orderByKey": self.order_by,
            "orderByAsc": self.ascending,
            "startTime": "ALL",
            "lifecycleFilter": "Active",
            "modelVersionFilter": "All Runs",
            "datasetsFilter": [],
            "selectedColumns": list(self.columns),
        }


def save_view(uri: str, experiment_id: str, view: RunsView) -> str:
    """Save ``view`` on the experiment; returns its page (see :func:`runs_page`)."""
    state = json.dumps(view.state())
    tracking.set_experiment_tag(uri, experiment_id, VIEW_TAG_PREFIX + view.key, state)
    return runs_page(experiment_id, view.key)


def runs_page(experiment_id: str, view_key: str | None = None) -> str:
    """The runs page of an experiment (in ``view_key``'s view), as a path of the UI."""
    query = {"viewStateShareKey": view_key} if view_key else {}
    return f"#/experiments/{experiment_id}/runs?{urlencode({**query, **WORKFLOW})}"


def run_page(experiment_id: str, run_id: str) -> str:
    """One run's page, as a path of the UI (also a link inside a run's description)."""
    return f"#/experiments/{experiment_id}/runs/{run_id}"


def link(uri: str, page: str) -> str:
    """``page`` as a full address: on the tracking server itself, or where ``mlflow ui``
    serves a local store by default."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else UI_ADDRESS
    return f"{base}/{page}"


def serve_command(uri: str) -> str | None:
    """The command that serves a local store's UI (this environment's ``mlflow``, quoted
    for a shell); None for a tracking server, which serves its own."""
    if uri.startswith(("http://", "https://")):
        return None
    mlflow = Path(sys.executable).parent / "mlflow"
    return shlex.join([str(mlflow), "ui", "--backend-store-uri", uri])
