"""Resolve ``--data`` into a normalised :class:`Dataset`: read the corpus, extract features
once (cached on disk by audio content and frontend config), standardise on train only."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from automl.data import corpus as corpus_mod
from automl.data import frontends, synth
from automl.data.dataset import Dataset, Split
from runtime.cli import option, positive_float
from runtime.errors import UserError
from runtime.files import atomic_write

FEATURE_VERSION = 1  # bump when extraction changes, so old caches are not reused
LONG_FILE_FACTOR = 10  # a file this many times the median length is reported
log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class DataOptions:
    """Which corpus and features: the options every ``automl`` command that trains shares."""

    data: str = field(
        metadata=option(
            "synth-cry, synth-cry-long (2-5 s utterances), digits (built in) or compare:DIR "
            "(ComParE layout)"
        )
    )
    task: str | None = field(
        default=None, metadata=option("task name when DIR/lab holds several <task>.tsv files")
    )
    frontend: str = field(
        default="mfcc",
        metadata=option(
            "frames: mfcc, logmel, compare-lld, egemaps-lld; one vector per file: "
            "mfcc-functionals, compare, egemaps (ComParE_2016 / eGeMAPS functionals); "
            "compare* and egemaps* need the opensmile extra; or csv:PATH"
        ),
    )

    max_seconds: float | None = field(
        default=None,
        metadata=option(
            "crop every utterance to its first S seconds (for corpora with a few very long "
            "files; none by default)",
            type=positive_float,
            metavar="S",
        ),
    )

    def load(self) -> Dataset:
        return load_dataset(self.data, self.frontend, self.task, max_seconds=self.max_seconds)


def load_dataset(
    data: str,
    frontend: str = "mfcc",
    task: str | None = None,
    cache_dir: Path | None = None,
    max_seconds: float | None = None,
) -> Dataset:
    """Resolve ``--data`` (``synth-cry``, ``digits``, ``compare:DIR``) into a normalised Dataset."""
    if max_seconds is not None and (data == "digits" or frontend.startswith("csv:")):
        raise UserError("--max-seconds crops audio: it applies to audio corpora and frontends")
    if data == "digits":
        return _normalise(_digits())
    if cache_dir is None:
        synth.check_cache_root()
    if data in synth.CORPORA:
        corpus_dir = synth.ensure_corpus(spec=synth.CORPORA[data])
        return load_dataset(f"compare:{corpus_dir}", frontend, task or data, cache_dir, max_seconds)
    if data.startswith("compare:"):
        from_csv = frontend.startswith("csv:")
        corpus = corpus_mod.load_compare(data.split(":", 1)[1], task, need_audio=not from_csv)
        if from_csv:
            raw = _from_csv(corpus, Path(frontend.split(":", 1)[1]))
        else:
            chosen = frontends.make_frontend(frontend, max_seconds)
            raw = _extract_cached(corpus, chosen, cache_dir)
            _report_long_files(corpus, raw, max_seconds)
        return _normalise(raw)
    raise UserError(
        f"unknown --data {data!r}; use {', '.join(synth.CORPORA)}, digits or compare:DIR"
    )


def _report_long_files(
    corpus: corpus_mod.Corpus, dataset: Dataset, max_seconds: float | None
) -> None:
    """A few files far longer than the rest make every epoch slow (a batch is as long as
    its longest member): say which, with their length, and how to crop them. Nothing is
    cropped unless asked (``--max-seconds``)."""
    names = np.concatenate([s.names for s in dataset.splits.values()])
    frames = np.concatenate([s.lengths for s in dataset.splits.values()]).astype(float)
    median = float(np.median(frames))
    long = np.flatnonzero(frames > LONG_FILE_FACTOR * max(median, 1.0))
    if not len(long):
        return
    longest = long[np.argsort(-frames[long])][:3]
    seconds = [_seconds(corpus, str(names[i]), max_seconds) for i in longest]
    seconds_per_frame = seconds[0] / frames[longest[0]]
    shown = ", ".join(f"{names[i]} ({t:.1f} s)" for i, t in zip(longest, seconds, strict=True))
    log.warning(
        f"{len(long)} of {len(names)} files are over {LONG_FILE_FACTOR}x the median length "
        f"({median * seconds_per_frame:.1f} s): {shown}{', ...' if len(long) > 3 else ''}; "
        "each makes its batch that long in every epoch; --max-seconds S crops every "
        "utterance to its first S seconds"
    )


def _seconds(corpus: corpus_mod.Corpus, name: str, max_seconds: float | None) -> float:
    """How long a file is, from its header (after the crop, if any)."""
    import soundfile as sf

    seconds = float(sf.info(corpus.wav_dir / name).duration)
    return seconds if max_seconds is None else min(seconds, max_seconds)


def _extract_cached(
    corpus: corpus_mod.Corpus, frontend: frontends.Frontend, cache_dir: Path | None
) -> Dataset:
    """Features are computed once per (corpus content, frontend config) and kept on disk."""
    config = json.dumps({"frontend": frontend.config(), "version": FEATURE_VERSION}, sort_keys=True)
    key = hashlib.sha256((corpus.fingerprint() + config).encode()).hexdigest()[:24]
    cache = (cache_dir or synth.default_root() / "features") / f"{corpus.name}-{key}.npz"
    if cache.is_file():
        return _read_npz(cache, corpus.name, key)
    splits = {}
    for part, items in corpus.partitions.items():
        if not items:
            continue
        seqs = [_extract(frontend, corpus.wav_dir / i.name) for i in items]
        splits[part] = Split.from_sequences(
            seqs, _label_ids(corpus, items), [i.name for i in items]
        )
    dataset = Dataset(corpus.name, corpus.classes, splits, key)
    _write_npz(cache, dataset)
    return dataset


def _from_csv(corpus: corpus_mod.Corpus, path: Path) -> Dataset:
    table = frontends.read_feature_csv(path)
    key = hashlib.sha256(corpus.fingerprint(with_audio=False).encode())
    key.update(path.read_bytes())
    splits = {}
    for part, items in corpus.partitions.items():
        if not items:
            continue
        missing = [i.name for i in items if i.name not in table]
        if missing:
            raise UserError(
                f"feature file {path} has no rows for {len(missing)} files, e.g. {missing[0]}"
            )
        seqs = [table[i.name] for i in items]
        splits[part] = Split.from_sequences(
            seqs, _label_ids(corpus, items), [i.name for i in items]
        )
    return Dataset(corpus.name, corpus.classes, splits, key.hexdigest()[:24])


def features_of(path: Path, frontend: str, max_seconds: float | None = None) -> np.ndarray:
    """One audio file's features as a search's children saw them (before normalisation)."""
    return _extract(frontends.make_frontend(frontend, max_seconds), path)


def _extract(frontend: frontends.Frontend, path: Path) -> np.ndarray:
    """One file's features, at least one frame; features that are not finite (whatever
    the cause) name their file instead of failing later in a child or a scaler."""
    x = _at_least_one_frame(frontend.extract(path))
    if not np.isfinite(x).all():
        raise UserError(f"wav {path}: its {frontend.config()['kind']} features are not finite")
    return x


def _label_ids(corpus: corpus_mod.Corpus, items: list[corpus_mod.Item]) -> list[int]:
    index = {c: k for k, c in enumerate(corpus.classes)}
    return [index[i.label] if i.label is not None else -1 for i in items]


def _at_least_one_frame(x: np.ndarray) -> np.ndarray:
    return x if len(x) else np.zeros((1, x.shape[1]), np.float32)


def _normalise(raw: Dataset) -> Dataset:
    """Standardise every feature with mean/std fit on train frames only (no dev leakage)."""
    train = raw.splits["train"].frames
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[std < 1e-8] = 1.0
    splits = {
        part: Split(((s.frames - mean) / std).astype(np.float32), s.offsets, s.labels, s.names)
        for part, s in raw.splits.items()
    }
    return Dataset(raw.name, raw.classes, splits, raw.fingerprint, mean, std)


def _write_npz(path: Path, ds: Dataset) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"classes": np.asarray(ds.classes, dtype=str)}
    for part, s in ds.splits.items():
        arrays.update(
            {
                f"{part}.frames": s.frames,
                f"{part}.offsets": s.offsets,
                f"{part}.labels": s.labels,
                f"{part}.names": s.names,
            }
        )
    atomic_write(path, lambda handle: np.savez(handle, **arrays))


def _read_npz(path: Path, name: str, key: str) -> Dataset:
    with np.load(path, allow_pickle=False) as z:
        parts = sorted({k.split(".")[0] for k in z.files if "." in k})
        splits = {
            p: Split(z[f"{p}.frames"], z[f"{p}.offsets"], z[f"{p}.labels"], z[f"{p}.names"])
            for p in parts
        }
        return Dataset(name, [str(c) for c in z["classes"]], splits, key)


def _digits() -> Dataset:
    """scikit-learn's bundled 8x8 digits as 8-step sequences of 8 pixels; 60/20/20 stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    idx = np.arange(len(images))
    train, rest = train_test_split(idx, test_size=0.4, stratify=bunch.target, random_state=0)
    devel, test = train_test_split(rest, test_size=0.5, stratify=bunch.target[rest], random_state=0)
    splits = {
        part: Split.from_sequences(
            [images[i] for i in ids], bunch.target[ids].tolist(), [f"{part}_{i:04d}" for i in ids]
        )
        for part, ids in (("train", train), ("devel", devel), ("test", test))
    }
    return Dataset("digits", [str(c) for c in bunch.target_names], splits, "digits-v1")
