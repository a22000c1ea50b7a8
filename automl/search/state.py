"""A search's saved state: what ``--resume`` continues and a new search sets aside.

``STORAGE/EXPERIMENT/search_state.pt`` holds the settled children, the searcher's state
and the MLflow parent run, rewritten atomically after every child (a kill at any moment
leaves the previous or the new state, never half). It loads with ``weights_only``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from automl.search.ledger import RUNNING
from runtime import tracking
from runtime.errors import UserError
from runtime.files import read_torch_file, write_torch
from runtime.tags import ENDED_TAG

STATE_FILE = "search_state.pt"


@dataclass
class SearchState:
    config: dict[str, Any]  # the search's options, as saved
    records: list[dict[str, Any]]  # the ledger's trials
    searcher: dict[str, Any]  # the searcher's state_dict
    search_run: dict[str, Any]  # the parent run (tracking.ParentRun's fields)
    data_fingerprint: str
    wall_seconds: float
    finished: bool = False  # False: interrupted (or still running); --resume continues it

    @classmethod
    def load(cls, path: Path, before: str = "", after: str = "") -> SearchState:
        """The state in ``path``; a truncated or foreign file is one line naming it."""
        saved = read_torch_file(path, f"{before}a search's state", after.removeprefix("; "))
        try:
            return cls(**{**saved, "finished": _finished(saved)})
        except Exception as exc:  # a torch file, not a state's: name it, not a traceback
            raise UserError(f"{before}{path} is not a search's state ({exc}){after}") from None

    def save(self, path: Path) -> None:
        write_torch(path, asdict(self))

    @property
    def parent(self) -> tracking.ParentRun:
        return tracking.ParentRun(**self.search_run)

    @property
    def trained(self) -> int:
        return sum(r["duplicate_of"] is None for r in self.records)

    def set_aside(self, path: Path) -> None:
        """Keep this (earlier) search's state beside a new one's; close its run if it never
        ended."""
        if not self.finished:
            tracking.finish_parent(self.parent, None, "KILLED", {ENDED_TAG: "restarted"})
        path.rename(path.with_name(f"search_state.{self.parent.parent_run_id}.pt"))


def _finished(saved: dict[str, Any]) -> bool:
    """Whether a saved search ended. A state written before the flag existed (version
    0.1.0 before reruns were guarded) ended if every child it asked for has settled."""
    if "finished" in saved:
        return bool(saved["finished"])
    records = saved["records"]
    trained = sum(r["duplicate_of"] is None for r in records)
    return trained >= saved["config"]["trials"] and all(r["status"] != RUNNING for r in records)
