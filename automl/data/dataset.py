"""The prepared dataset every child trains on: normalised feature sequences per partition.

A :class:`Dataset` holds plain numpy arrays only (one ragged array per partition,
stored as concatenated frames plus offsets), so Ray puts it into the object store once
and workers map it without copying. This module imports numpy only: Ray workers load it
to receive the dataset, and must not pay for the corpus readers and audio frontends
(:mod:`automl.data.prepare`) they never call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Split:
    """One partition: all frames stacked; utterance i is ``frames[offsets[i]:offsets[i+1]]``."""

    frames: np.ndarray  # float32 [total_frames, n_features]
    offsets: np.ndarray  # int64 [n + 1]
    labels: np.ndarray  # int64 [n]; -1 where unlabelled
    names: np.ndarray  # str [n]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, i: int) -> np.ndarray:
        return self.frames[self.offsets[i] : self.offsets[i + 1]]

    @classmethod
    def from_sequences(cls, seqs: list[np.ndarray], labels: list[int], names: list[str]) -> Split:
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(s) for s in seqs])
        frames = np.concatenate(seqs).astype(np.float32) if seqs else np.zeros((0, 0), np.float32)
        return cls(frames, offsets, np.asarray(labels, np.int64), np.asarray(names, dtype=str))


@dataclass
class Dataset:
    """Train/devel(/test) splits, the class names, and a fingerprint of data + frontend."""

    name: str
    classes: list[str]
    splits: dict[str, Split]
    fingerprint: str
    # what was subtracted and divided by to normalise the frontend's features (per feature):
    # a model trained on these splits needs it to take new features (None: not normalised)
    norm_mean: np.ndarray | None = None
    norm_std: np.ndarray | None = None

    @property
    def n_features(self) -> int:
        return int(self.splits["train"].frames.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def summary(self) -> dict:
        counts = {
            part: {c: int((s.labels == k).sum()) for k, c in enumerate(self.classes)}
            for part, s in self.splits.items()
        }
        return {
            "name": self.name,
            "classes": self.classes,
            "n_features": self.n_features,
            "counts": counts,
            "fingerprint": self.fingerprint,
        }


@dataclass
class Features:
    """A corpus under every frontend a search's children read: ``default`` (the command's
    ``--frontend``) and those the space decides between. Plain data, as :class:`Dataset`."""

    default: str
    by_frontend: dict[str, Dataset]

    def frontend_of(self, architecture: dict) -> str:
        return architecture.get("frontend") or self.default

    def of(self, architecture: dict) -> Dataset:
        """The dataset the child with this (canonical) architecture trains on."""
        return self.by_frontend[self.frontend_of(architecture)]

    @property
    def primary(self) -> Dataset:
        return self.by_frontend[self.default]
