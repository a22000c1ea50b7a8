"""Labelled corpora in the ComParE layout: which wav belongs to which partition and class.

Two label layouts are read, both as challenge data ships them:

* ``DIR/lab/<task>.tsv``: tab-separated, header ``file_name`` and ``label``; the
  partition is the file-name prefix (``train_``, ``devel_``, ``test_``); test labels
  may be empty, and ``DIR/lab/<task>_confidential.tsv`` may supply them.
* ``DIR/lab/{train,devel,test}.csv``: comma-separated, first column the file name,
  last column the label.

Audio lives in ``DIR/wav/``. A corpus here is only names and labels; features come
from :mod:`automl.data.features`.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from runtime.errors import UserError

log = logging.getLogger(__name__)

PARTITIONS = ("train", "devel", "test")
CONFIDENTIAL_SUFFIX = "_confidential"
UNLABELLED = ("", "?")  # how challenge label files mark test files without a label


@dataclass(frozen=True)
class Item:
    """One utterance: its file name (relative to ``wav/``) and label (None if unlabelled)."""

    name: str
    label: str | None


@dataclass
class Corpus:
    """A labelled corpus split into partitions; ``classes`` are the sorted train labels."""

    name: str
    root: Path
    partitions: dict[str, list[Item]]
    classes: list[str] = field(default_factory=list)

    @property
    def wav_dir(self) -> Path:
        return self.root / "wav"

    def fingerprint(self, with_audio: bool = True) -> str:
        """Hash of names, labels and (optionally) audio bytes: the feature-cache key."""
        digest = hashlib.sha256(self.name.encode())
        for part in PARTITIONS:
            for item in self.partitions.get(part, []):
                digest.update(f"{part}\0{item.name}\0{item.label}\n".encode())
                if with_audio:
                    digest.update(hashlib.sha256((self.wav_dir / item.name).read_bytes()).digest())
        return digest.hexdigest()[:24]


def load_compare(root: str | Path, task: str | None = None, need_audio: bool = True) -> Corpus:
    """Read a corpus in the ComParE layout and check it is usable for training.

    ``need_audio`` is False when features come from a CSV file, so wav files need not exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data directory not found: {root}")
    lab = root / "lab"
    if not lab.is_dir():
        raise UserError(f"no label directory: {lab} (expected lab/<task>.tsv or lab/train.csv)")
    if all((lab / f"{p}.csv").is_file() for p in ("train", "devel")):
        partitions = _read_split_csvs(lab)
        name = task or root.name
    else:
        task = _choose_task(lab, task)
        partitions = _read_task_tsv(lab, task)
        name = task
    corpus = Corpus(name=name, root=root, partitions=partitions)
    _check(corpus, need_audio)
    return corpus


def _choose_task(lab: Path, task: str | None) -> str:
    tasks = sorted(p.stem for p in lab.glob("*.tsv") if not p.stem.endswith(CONFIDENTIAL_SUFFIX))
    if task is not None:
        if task not in tasks:
            raise UserError(
                f"no label file {lab / (task + '.tsv')} (tasks here: {tasks or 'none'})"
            )
        return task
    if not tasks:
        raise UserError(f"no label file in {lab} (expected <task>.tsv or train.csv/devel.csv)")
    if len(tasks) > 1:
        raise UserError(f"{lab} holds several tasks {tasks}: choose one with --task")
    return tasks[0]


def _read_rows(path: Path, delimiter: str) -> tuple[list[str], list[list[str]]]:
    try:
        text = _decode(path, path.read_bytes())
        rows = [
            row for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if row
        ]
    except (OSError, csv.Error) as exc:
        raise UserError(f"cannot read label file {path}: {exc}") from None
    if not rows:
        raise UserError(f"label file {path} is empty")
    return [h.strip() for h in rows[0]], rows[1:]


def _decode(path: Path, data: bytes) -> str:
    """The encodings label files come in: UTF-8 (with the byte-order mark spreadsheets
    write, or without), UTF-16 with its mark ("Unicode text"), and Windows-1252 for files
    that are not UTF-8 (said in a warning naming the first such line)."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        raise UserError(
            f"label file {path}, line {line}: neither UTF-8 nor Windows-1252 text; save it as UTF-8"
        ) from None
    log.warning(f"label file {path} is not UTF-8 (line {line}): read as Windows-1252")
    return text


def _read_task_tsv(lab: Path, task: str) -> dict[str, list[Item]]:
    path = lab / f"{task}.tsv"
    header, rows = _read_rows(path, "\t")
    if header[:2] != ["file_name", "label"]:
        hint = " (is it comma-separated?)" if "," in "".join(header) else ""
        raise UserError(
            f"label file {path}: expected tab-separated columns 'file_name' and 'label', "
            f"found {header}{hint}"
        )
    labels = _rows_to_labels(path, rows, first=0, last=1)
    confidential = lab / f"{task}{CONFIDENTIAL_SUFFIX}.tsv"
    if confidential.is_file():
        c_header, c_rows = _read_rows(confidential, "\t")
        if c_header[:2] != ["file_name", "label"]:
            raise UserError(f"label file {confidential}: expected columns 'file_name' and 'label'")
        for name, label in _rows_to_labels(confidential, c_rows, first=0, last=1).items():
            if name in labels and labels[name] is None:
                labels[name] = label
    partitions: dict[str, list[Item]] = {p: [] for p in PARTITIONS}
    for name, label in labels.items():
        prefix = name.split("_", 1)[0]
        if prefix not in partitions:
            raise UserError(
                f"label file {path}: file name {name!r} does not start with train_, devel_ or test_"
            )
        partitions[prefix].append(Item(name, label))
    return partitions


def _read_split_csvs(lab: Path) -> dict[str, list[Item]]:
    partitions: dict[str, list[Item]] = {}
    for part in PARTITIONS:
        path = lab / f"{part}.csv"
        if not path.is_file():
            partitions[part] = []
            continue
        header, rows = _read_rows(path, ",")
        if len(header) < 2:
            raise UserError(
                f"label file {path}: expected comma-separated columns "
                f"(file name first, label last), "
                f"found {header}"
            )
        labels = _rows_to_labels(path, rows, first=0, last=-1)
        partitions[part] = [Item(n, lab_) for n, lab_ in labels.items()]
    return partitions


def _rows_to_labels(
    path: Path, rows: list[list[str]], first: int, last: int
) -> dict[str, str | None]:
    labels: dict[str, str | None] = {}
    for lineno, row in enumerate(rows, start=2):
        if len(row) < 2 and not (len(row) == 1 and last == 1):
            raise UserError(f"label file {path}, line {lineno}: expected a file name and a label")
        name = row[first].strip().strip("'")
        label = row[last].strip() if len(row) > 1 else ""
        if not name:
            raise UserError(f"label file {path}, line {lineno}: empty file name")
        if name in labels:
            raise UserError(f"label file {path}, line {lineno}: duplicate file name {name!r}")
        labels[name] = None if label in UNLABELLED else label
    return labels


def _check(corpus: Corpus, need_audio: bool) -> None:
    """Refuse corpora that would train silently wrong: the errors users actually hit."""
    for part in ("train", "devel"):
        items = corpus.partitions.get(part, [])
        if not items:
            raise UserError(f"partition {part!r} of {corpus.root} is empty")
        missing = [i.name for i in items if i.label is None]
        if missing:
            raise UserError(
                f"partition {part!r} has {len(missing)} unlabelled files, e.g. {missing[0]}"
            )
    if need_audio:
        _check_audio_files(corpus)
    train_classes = sorted({i.label for i in corpus.partitions["train"] if i.label is not None})
    if len(train_classes) < 2:
        raise UserError(f"partition 'train' of {corpus.root} has only one class {train_classes}")
    for part in ("devel", "test"):
        for item in corpus.partitions.get(part, []):
            if item.label is not None and item.label not in train_classes:
                raise UserError(
                    f"class {item.label!r} of {part} file {item.name} is absent from train "
                    f"(train classes: {train_classes})"
                )
    corpus.classes = train_classes


def _check_audio_files(corpus: Corpus) -> None:
    wav_dir = corpus.wav_dir
    if not wav_dir.is_dir():
        raise UserError(f"audio directory not found: {wav_dir}")
    labelled = {i.name for items in corpus.partitions.values() for i in items}
    for name in sorted(labelled):
        if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
            raise UserError(  # a corpus reads its own audio only (symlinks are the owner's)
                f"label file names {name!r}, a path outside {wav_dir}: names are relative "
                "to wav/ and may not contain '..'"
            )
        if not (wav_dir / name).is_file():
            raise UserError(f"label for a missing wav: {wav_dir / name}")
    for path in sorted(wav_dir.glob("*.wav")):
        if path.name not in labelled:
            raise UserError(f"wav without a label: {path}")
