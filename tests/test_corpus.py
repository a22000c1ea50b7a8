"""The ComParE layout reader and every data error a user can make."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import soundfile as sf
from conftest import RATE, tone

from automl.cli import main
from automl.data.corpus import load_compare
from automl.errors import UserError


def test_reads_tsv_layout_with_partitions_and_classes(compare_corpus):
    corpus = load_compare(compare_corpus())
    assert corpus.name == "toy"
    assert {p: len(items) for p, items in corpus.partitions.items()} == {
        "train": 8,
        "devel": 8,
        "test": 8,
    }
    assert corpus.classes == ["high", "low"]


def test_unlabelled_test_partition_and_confidential_labels(compare_corpus):
    root = compare_corpus()
    tsv = root / "lab" / "toy.tsv"
    lines = tsv.read_text().splitlines()
    public = [x.split("\t")[0] + "\t" if x.startswith("test_") else x for x in lines]
    tsv.write_text("\n".join(public) + "\n")
    corpus = load_compare(root)
    assert all(i.label is None for i in corpus.partitions["test"])
    (root / "lab" / "toy_confidential.tsv").write_text(
        "\n".join(["file_name\tlabel"] + [x for x in lines if x.startswith("test_")]) + "\n"
    )
    corpus = load_compare(root)  # the confidential file is not taken for a second task
    assert all(i.label in ("low", "high") for i in corpus.partitions["test"])


def test_newer_csv_layout(compare_corpus):
    root = compare_corpus()
    rows = [x.split("\t") for x in (root / "lab" / "toy.tsv").read_text().splitlines()[1:]]
    (root / "lab" / "toy.tsv").unlink()
    for part in ("train", "devel", "test"):
        text = "filename,speaker,label\n" + "".join(
            f"{n},spk1,{lab}\n" for n, lab in rows if n.startswith(part)
        )
        (root / "lab" / f"{part}.csv").write_text(text)
    corpus = load_compare(root)
    assert len(corpus.partitions["devel"]) == 8 and corpus.classes == ["high", "low"]


def test_several_tasks_need_task_option(compare_corpus):
    root = compare_corpus()
    shutil.copy(root / "lab" / "toy.tsv", root / "lab" / "other.tsv")
    with pytest.raises(UserError, match=r"several tasks.*--task"):
        load_compare(root)
    assert load_compare(root, task="other").name == "other"


def _break(root: Path, case: str) -> None:
    lab = root / "lab" / "toy.tsv"
    if case == "missing-dir":
        shutil.rmtree(root)
    elif case == "no-label-file":
        lab.unlink()
    elif case == "wrong-columns":
        lab.write_text(lab.read_text().replace("file_name\tlabel", "file\tclass"))
    elif case == "wrong-delimiter":
        lab.write_text(lab.read_text().replace("\t", ","))
    elif case == "duplicate":
        lab.write_text(lab.read_text() + "train_001.wav\tlow\n")
    elif case == "label-missing-wav":
        (root / "wav" / "train_002.wav").unlink()
    elif case == "wav-without-label":
        sf.write(root / "wav" / "train_999.wav", tone(300), RATE)
    elif case == "empty-partition":
        lab.write_text(
            "\n".join(x for x in lab.read_text().splitlines() if not x.startswith("devel_"))
        )
        for wav in root.glob("wav/devel_*"):
            wav.unlink()
    elif case == "one-class":
        lab.write_text(lab.read_text().replace("\thigh", "\tlow"))
    elif case == "class-absent-from-train":
        lines = lab.read_text().splitlines()
        lab.write_text("\n".join([*lines[:-1], lines[-1].split("\t")[0] + "\tmid"]) + "\n")


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing-dir", "data directory not found"),
        ("no-label-file", "no label file"),
        ("wrong-columns", "expected tab-separated columns"),
        ("wrong-delimiter", "comma-separated"),
        ("duplicate", "duplicate file name 'train_001.wav'"),
        ("label-missing-wav", "label for a missing wav: .*train_002.wav"),
        ("wav-without-label", "wav without a label: .*train_999.wav"),
        ("empty-partition", "partition 'devel' .* is empty"),
        ("one-class", "only one class"),
        ("class-absent-from-train", "class 'mid' .* absent from train"),
    ],
)
def test_bad_data_is_one_clear_error(compare_corpus, case, message):
    root = compare_corpus()
    _break(root, case)
    with pytest.raises(UserError, match=message):
        load_compare(root)


@pytest.mark.parametrize("case", ["unreadable", "empty"])
def test_unreadable_or_empty_wav_names_the_file(compare_corpus, capsys, case):
    root = compare_corpus()
    wav = root / "wav" / "devel_003.wav"
    if case == "unreadable":
        wav.write_bytes(b"RIFF not really a wav")
    else:
        sf.write(wav, tone(300)[:0], RATE)
    arch = root / "arch.json"
    arch.write_text('{"family": "rnn", "layers": [{"units": 8}]}')
    code = main(["train", "--data", f"compare:{root}", "--arch", str(arch), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "devel_003.wav" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cli_reports_bad_data_with_exit_2(compare_corpus, capsys, tmp_path):
    arch = tmp_path / "arch.json"
    arch.write_text('{"family": "rnn", "layers": [{"units": 8}]}')
    code = main(["train", "--data", f"compare:{tmp_path / 'nope'}", "--arch", str(arch)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("automl: error: data directory not found")
