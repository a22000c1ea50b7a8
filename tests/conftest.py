"""Shared fixtures: an isolated cache, small real corpora on disk, one local Ray per session."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

RATE = 16000


@pytest.fixture(scope="session", autouse=True)
def automl_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test run gets its own cache (built-in corpora, features), shared by its tests."""
    path = tmp_path_factory.mktemp("automl-cache")
    os.environ["AUTOML_CACHE"] = str(path)
    return path


def tone(freq: float, seconds: float = 0.5, rate: int = RATE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.size)).astype(
        np.float32
    )


def write_compare(
    root: Path,
    task: str = "toy",
    per_class: dict[str, int] | None = None,
    partitions: tuple[str, ...] = ("train", "devel", "test"),
) -> Path:
    """A tiny ComParE-layout corpus: class 'low' is a 300 Hz tone, 'high' a 1200 Hz tone."""
    per_class = per_class or {"low": 4, "high": 4}
    freqs = {"low": 300.0, "high": 1200.0, "mid": 700.0}
    (root / "wav").mkdir(parents=True)
    (root / "lab").mkdir()
    lines = ["file_name\tlabel"]
    for part in partitions:
        k = 0
        for label, count in per_class.items():
            for _ in range(count):
                k += 1
                name = f"{part}_{k:03d}.wav"
                sf.write(root / "wav" / name, tone(freqs[label], seed=k), RATE)
                lines.append(f"{name}\t{label}")
    (root / "lab" / f"{task}.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def compare_corpus(tmp_path: Path) -> Callable[..., Path]:
    def make(**kwargs) -> Path:
        return write_compare(tmp_path / "corpus", **kwargs)

    return make
