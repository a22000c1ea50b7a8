"""Fault injection, so the failure handling of a search is tested on real failures.

Set ``AUTOML_FAULTS`` (read by ``automl search`` and passed to the workers) to a comma
separated list of ``TRIAL:KIND``:

* ``raise``: the child raises before training;
* ``nan``: the child's training features are NaN, so its loss becomes NaN;
* ``oom``: the child asks for more memory than exists (a real allocation failure);
* ``kill``: the worker process is killed with SIGKILL on the child's first attempt
  (Ray retries it), ``killall``: on every attempt (it ends as failed).

Example: ``AUTOML_FAULTS=1:raise,3:nan,4:oom automl search ...``. Unset, nothing happens.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import numpy as np
import torch

from automl.data.dataset import Dataset, Split
from automl.errors import UserError

KINDS = ("raise", "nan", "oom", "kill", "killall")
ENV = "AUTOML_FAULTS"


def parse(text: str | None) -> dict[int, str]:
    """``"1:raise,3:nan"`` -> {1: "raise", 3: "nan"}; mistakes are the user's."""
    faults: dict[int, str] = {}
    for item in filter(None, (text or "").split(",")):
        trial, _, kind = item.strip().partition(":")
        if not trial.isdigit() or kind not in KINDS:
            raise UserError(f"{ENV}={text}: expected TRIAL:KIND items with KIND in {list(KINDS)}")
        faults[int(trial)] = kind
    return faults


def inject(kind: str | None, trial: int, data: Dataset, marker_dir: str) -> Dataset:
    """Apply the fault for this child (in the worker); returns the data to train on."""
    if kind == "raise":
        raise RuntimeError(f"injected fault: child {trial} raises")
    if kind == "oom":
        torch.empty(1 << 42, dtype=torch.float32)  # 16 TiB: the allocator refuses
    if kind == "nan":
        train = data.splits["train"]
        poisoned = Split(
            np.full_like(train.frames, np.nan), train.offsets, train.labels, train.names
        )
        return Dataset(
            data.name, data.classes, {**data.splits, "train": poisoned}, data.fingerprint
        )
    if kind in ("kill", "killall"):
        marker = Path(marker_dir) / f"killed-{trial}"
        if kind == "killall" or not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
    return data


def marker_dir() -> str:
    """A folder, fresh per search, that remembers which children were already killed once."""
    return tempfile.mkdtemp(prefix="automl-faults-")
