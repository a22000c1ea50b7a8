"""Frontends, the on-disk feature cache, normalisation and the built-in corpora."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import tone

from automl.data import synth
from automl.data.frontends import MFCC, LogMel, OpenSmile
from automl.data.prepare import load_dataset
from runtime.errors import UserError


def _cache_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.npz"))


def test_features_are_cached_by_content_and_config(compare_corpus, tmp_path):
    root, cache = compare_corpus(), tmp_path / "features"
    first = load_dataset(f"compare:{root}", "mfcc", cache_dir=cache)
    [file] = _cache_files(cache)
    stamp = file.stat().st_mtime_ns
    second = load_dataset(f"compare:{root}", "mfcc", cache_dir=cache)
    assert file.stat().st_mtime_ns == stamp  # read back, not recomputed
    np.testing.assert_array_equal(first.splits["devel"].frames, second.splits["devel"].frames)
    load_dataset(f"compare:{root}", "logmel", cache_dir=cache)
    assert len(_cache_files(cache)) == 2  # another frontend config, another entry
    sf.write(root / "wav" / "train_001.wav", tone(500), 16000)
    changed = load_dataset(f"compare:{root}", "mfcc", cache_dir=cache)
    assert len(_cache_files(cache)) == 3 and changed.fingerprint != first.fingerprint


def test_normalisation_is_fit_on_train_only(compare_corpus, tmp_path):
    ds = load_dataset(f"compare:{compare_corpus()}", "mfcc", cache_dir=tmp_path)
    train = ds.splits["train"].frames
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(train.std(0)[train.std(0) > 0], 1, atol=1e-3)
    assert ds.n_features == 39 and ds.classes == ["high", "low"]
    assert ds.splits["test"].labels.tolist() == [1] * 4 + [0] * 4


def test_frontend_shapes_and_resampling(tmp_path):
    wav16, wav22 = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(wav16, tone(440, 1.0, 16000), 16000)
    sf.write(wav22, tone(440, 1.0, 22050), 22050)
    mfcc = MFCC()
    a, b = mfcc.extract(wav16), mfcc.extract(wav22)
    assert a.shape == b.shape == (51, 39)  # resampled to one rate: 1 s at 20 ms hops
    assert LogMel(n_mels=64).extract(wav16).shape == (51, 64)


def test_opensmile_frontends(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, tone(440, 1.0), 16000)
    lld = OpenSmile("ComParE_2016", "lld").extract(wav)
    functionals = OpenSmile("eGeMAPSv02", "functionals").extract(wav)
    assert lld.shape[1] == 65 and lld.shape[0] > 90
    assert functionals.shape == (1, 88)


@pytest.mark.parametrize("per_frame", [False, True])
def test_opensmile_style_csv_features(compare_corpus, tmp_path, per_frame):
    root = compare_corpus()
    rows = [x.split("\t") for x in (root / "lab" / "toy.tsv").read_text().splitlines()[1:]]
    lines = ["name;frameTime;f1;f2"]
    for name, label in rows:
        value = 1.0 if label == "high" else -1.0
        for frame in range(3 if per_frame else 1):
            lines.append(f"'{name}';{frame * 0.01};{value};{frame}")
    csv_path = tmp_path / "features.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    for wav in (root / "wav").iterdir():  # features from CSV need no audio
        wav.unlink()
    ds = load_dataset(f"compare:{root}", f"csv:{csv_path}")
    assert ds.n_features == 2
    assert set(ds.splits["train"].lengths.tolist()) == {3 if per_frame else 1}


def test_csv_features_missing_a_file(compare_corpus, tmp_path):
    root = compare_corpus()
    csv_path = tmp_path / "features.csv"
    csv_path.write_text("name;f1\n'train_001.wav';1.0\n")
    with pytest.raises(UserError, match=r"no rows for .* files"):
        load_dataset(f"compare:{root}", f"csv:{csv_path}")


def test_unknown_data_and_frontend(compare_corpus):
    with pytest.raises(UserError, match="unknown --data"):
        load_dataset("timit")
    with pytest.raises(UserError, match="unknown --frontend"):
        load_dataset(f"compare:{compare_corpus()}", "wav2vec")


def _tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def test_synth_cry_is_deterministic_imbalanced_and_in_compare_layout(tmp_path):
    a = synth.ensure_corpus(tmp_path / "a")
    b = synth.ensure_corpus(tmp_path / "b")
    assert _tree_hash(a) == _tree_hash(b)
    ds = load_dataset(f"compare:{a}", "mfcc", task="synth-cry", cache_dir=tmp_path / "f")
    assert ds.classes == ["crying", "fussing", "neutral"]
    for part in ("train", "devel", "test"):
        shares = np.bincount(ds.splits[part].labels, minlength=3) / len(ds.splits[part])
        np.testing.assert_allclose(shares, [0.1, 0.2, 0.7], atol=0.02)  # crying, fussing, neutral
    public = (a / "lab" / "synth-cry.tsv").read_text()
    assert "test_0001.wav\t\n" in public  # test labels only in the confidential file


def test_digits_are_sequences_of_rows():
    ds = load_dataset("digits")
    assert ds.n_features == 8 and ds.n_classes == 10
    assert set(ds.splits["train"].lengths.tolist()) == {8}
    assert sum(len(s) for s in ds.splits.values()) == 1797


@pytest.mark.parametrize("frontend", ["mfcc", "logmel"])
def test_a_file_shorter_than_one_window_gives_a_frame_without_a_warning(tmp_path, frontend):
    """12 ms of sound (less than the 25 ms window): one frame, and no raw librosa warning
    printed once per such file."""
    import warnings

    from automl.data.prepare import features_of

    path = tmp_path / "short.wav"
    sf.write(path, np.full(200, 0.1, np.float32), 16000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        features = features_of(path, frontend)
    assert features.shape[0] == 1 and np.isfinite(features).all()
