"""The ComParE layout reader and every data error a user can make."""

from __future__ import annotations

import shutil

import pytest
import soundfile as sf
from conftest import CORPUS_MISTAKES, RATE, break_corpus, tone

from automl.cli import main
from automl.data.corpus import load_compare
from runtime.errors import UserError


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


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "cp1252"])
def test_label_files_in_the_encodings_spreadsheets_save(compare_corpus, caplog, encoding):
    """UTF-8 with a BOM (the header must still read file_name), UTF-16 with its BOM
    ("Unicode text"), Windows-1252 (with a warning naming the first non-UTF-8 line)."""
    root = compare_corpus()
    tsv = root / "lab" / "toy.tsv"
    text = tsv.read_text().replace("\thigh", "\taigu-é")
    tsv.write_bytes(text.encode(encoding))
    corpus = load_compare(root)
    assert corpus.classes == ["aigu-é", "low"] and len(corpus.partitions["train"]) == 8
    warned = [r.getMessage() for r in caplog.records if "not UTF-8" in r.getMessage()]
    assert warned == (
        [f"label file {tsv} is not UTF-8 (line 6): read as Windows-1252"]
        if encoding == "cp1252"
        else []
    )


def test_a_label_file_in_no_known_encoding_names_the_line(compare_corpus):
    root = compare_corpus()
    tsv = root / "lab" / "toy.tsv"
    lines = tsv.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"low", b"l\x81w").replace(b"high", b"h\x81gh")
    tsv.write_bytes(b"\n".join(lines))
    with pytest.raises(UserError, match=r"toy.tsv, line 4: neither UTF-8 nor Windows-1252"):
        load_compare(root)


def test_several_tasks_need_task_option(compare_corpus):
    root = compare_corpus()
    shutil.copy(root / "lab" / "toy.tsv", root / "lab" / "other.tsv")
    with pytest.raises(UserError, match=r"several tasks.*--task"):
        load_compare(root)
    assert load_compare(root, task="other").name == "other"


@pytest.mark.parametrize("case,message", CORPUS_MISTAKES)
def test_bad_data_is_one_clear_error(compare_corpus, case, message):
    root = compare_corpus()
    break_corpus(root, case)
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
