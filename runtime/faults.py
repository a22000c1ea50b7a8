"""Fault injection, so the failure handling of searches and RL jobs is tested on real failures.

Set ``AUTOML_FAULTS`` (read by ``automl search`` and ``rl train`` in the driver and sent
to the workers) to a comma-separated list of ``KEY:KIND``, where KEY is a search's trial
number or an RL job's seed:

* ``raise``: the trial raises before its work starts;
* ``oom``: the trial asks for more memory than exists (a real allocation failure);
* ``kill``: the worker process is killed with SIGKILL on the trial's first attempt (Ray
  retries it), ``killall``: on every attempt (it ends as failed);
* ``nan``: handed to the work, which poisons its own inputs (a search's child trains on
  NaN features, so its loss becomes NaN); ``diverge``: a search's child has its loss made
  NaN once, in epoch 1, so its retry after a divergence runs. Only jobs whose work knows a
  data fault accept them.

Example: ``AUTOML_FAULTS=1:raise,3:nan,4:oom automl search ...``. Unset, nothing happens.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

import torch

from runtime.errors import UserError

ENV = "AUTOML_FAULTS"
PROCESS_FAULTS = ("raise", "oom", "kill", "killall")
DATA_FAULTS = ("nan", "diverge")


@dataclass(frozen=True)
class FaultPlan:
    """Which trial gets which fault; sent to the workers with the trial context."""

    faults: dict[int, str] = field(default_factory=dict)
    marker_dir: str | None = None  # remembers which trials were already killed once

    @classmethod
    def from_env(cls, folder: Path, data_faults: bool = True) -> FaultPlan:
        """Read ``AUTOML_FAULTS``; kill markers will go to ``folder/faults`` (made when used)."""
        text = os.environ.get(ENV)
        kinds = PROCESS_FAULTS + (DATA_FAULTS if data_faults else ())
        faults: dict[int, str] = {}
        for item in filter(None, (text or "").split(",")):
            key, _, kind = item.strip().partition(":")
            if not key.isdigit() or kind not in kinds:
                raise UserError(f"{ENV}={text}: expected KEY:KIND items with KIND in {list(kinds)}")
            faults[int(key)] = kind
        return cls(faults, str(Path(folder) / "faults")) if faults else cls()

    def data_fault(self, key: int) -> str | None:
        kind = self.faults.get(key)
        return kind if kind in DATA_FAULTS else None

    def apply(self, key: int) -> None:
        """Make this worker fail as planned for ``key`` (no-op for data faults or none)."""
        kind = self.faults.get(key)
        if kind == "raise":
            raise RuntimeError(f"injected fault: trial {key} raises")
        if kind == "oom":
            torch.empty(1 << 42, dtype=torch.float32)  # 16 TiB: the allocator refuses
        if kind in ("kill", "killall") and self.marker_dir:
            marker = Path(self.marker_dir) / f"killed-{key}"
            if kind == "killall" or not marker.exists():
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
