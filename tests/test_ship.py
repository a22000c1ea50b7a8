"""Shipping a model: ``automl export`` (TorchScript, ONNX) and ``automl predict`` on raw
audio, from a model bundle on disk (the MLflow paths: tests/test_search_e2e.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_compare

from automl.child import build_model, normalize
from automl.cli import main
from automl.data.prepare import features_of, load_dataset
from automl.ship import bundle, inference

ARCHITECTURES = {
    "bigru tanh+relu, stats": {
        "family": "rnn", "cell": "gru", "bidirectional": True, "pooling": "stats",
        "layers": [{"units": 12, "activation": "tanh"}, {"units": 8, "activation": "relu"}],
    },
    "lstm sigmoid+tanh, last": {
        "family": "rnn", "cell": "lstm", "pooling": "last",
        "layers": [{"units": 8, "activation": "sigmoid"}, {"units": 8, "activation": "tanh"}],
    },
    "bilstm tanh, mean": {
        "family": "rnn", "cell": "lstm", "bidirectional": True, "pooling": "mean",
        "layers": [{"units": 8, "activation": "tanh"}],
    },
    "gru relu+sigmoid, 3 frames a step, layer-normalised": {
        "family": "rnn", "subsample": 3, "layer_norm": True,
        "layers": [{"units": 8, "activation": "relu"}, {"units": 6, "activation": "sigmoid"}],
    },
    "mlp": {"family": "mlp", "layers": [{"units": 8, "activation": "relu"}]},
    "cnn": {
        "family": "cnn", "dense": [8],
        "blocks": [{"filters": 8, "kernel": 3, "pool": 2, "batch_norm": True},
                   {"filters": 8, "kernel": 5, "pool": 1}],
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_compare(tmp_path_factory.mktemp("ship") / "corpus")


def _bundle(folder: Path, corpus: Path, raw: dict, frontend: str = "mfcc") -> bundle.ModelMeta:
    """A network with seeded random weights, packed as a search packs its children."""
    data = load_dataset(f"compare:{corpus}", frontend)
    arch = normalize(raw)
    torch.manual_seed(0)
    network = build_model(arch, data.n_features, len(data.classes))
    for name, value in network.state_dict().items():  # batch norm statistics too
        if "running" in name:
            value.uniform_(0.5, 1.5)
    meta = bundle.ModelMeta(
        arch, data.classes, data.norm_mean.tolist(), data.norm_std.tolist(), frontend,
        data=f"compare:{corpus}",
    )  # fmt: skip
    bundle.write(folder, meta, network.state_dict())
    return meta


def _utterances(corpus: Path) -> list[np.ndarray]:
    """The frontend's features of test files, at lengths from one frame to triple."""
    x = features_of(corpus / "wav" / "test_001.wav", "mfcc")
    y = features_of(corpus / "wav" / "test_008.wav", "mfcc")
    return [x[:1], x[:17], y, np.concatenate([x, y, x])]


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_an_exported_model_gives_the_networks_outputs_at_any_length(tmp_path, corpus, name):
    """Each format, for each kind of layer (fused and step-loop recurrent, pooled three
    ways, convolutional), matches the network as training runs it: a padded batch of
    utterances of different lengths, normalised, softmaxed."""
    meta = _bundle(tmp_path / "bundle", corpus, ARCHITECTURES[name])
    _, weights = bundle.read(tmp_path / "bundle")
    network = build_model(meta.architecture, meta.n_features, len(meta.classes)).eval()
    network.load_state_dict(weights)
    utterances = _utterances(corpus)
    lengths = torch.tensor([len(u) for u in utterances])
    padded = torch.zeros(len(utterances), int(lengths.max()), meta.n_features)
    mean, std = np.asarray(meta.norm_mean), np.asarray(meta.norm_std)
    for i, u in enumerate(utterances):
        padded[i, : len(u)] = torch.from_numpy(((u - mean) / std).astype(np.float32))
    with torch.no_grad():
        expected = torch.softmax(network(padded, lengths), -1).numpy()
    for fmt, suffix in (("torchscript", ".pt"), ("onnx", ".onnx")):
        out = tmp_path / f"model{suffix}"
        assert main(["export", "--model", str(tmp_path / "bundle"), "--format", fmt,
                     "--out", str(out)]) == 0  # fmt: skip
        exported = inference.load(str(out))
        assert exported.meta == meta
        got = np.stack([exported.probabilities(u) for u in utterances])
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=fmt)


def test_predict_classifies_audio_files_alike_with_every_kind_of_model(tmp_path, corpus, capsys):
    """From raw audio through the model's frontend and normalisation: the bundle, its
    TorchScript and its ONNX export give the same class and probabilities per file."""
    meta = _bundle(tmp_path / "bundle", corpus, ARCHITECTURES["bigru tanh+relu, stats"])
    models = [str(tmp_path / "bundle")]
    for fmt, suffix in (("torchscript", ".pt"), ("onnx", ".onnx")):
        models.append(str(tmp_path / f"model{suffix}"))
        assert main(["export", "--model", models[0], "--format", fmt, "--out", models[-1]]) == 0
    wavs = [str(corpus / "wav" / f"test_{k:03d}.wav") for k in (1, 5, 8)]
    answers = []
    for model in models:
        out = tmp_path / "predictions.json"
        assert main(["predict", "--model", model, *wavs, "--json", str(out)]) == 0
        answers.append(json.loads(out.read_text())["predictions"])
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1].startswith(f"{wavs[-1]}\t")
    first = answers[0]
    assert [row["file"] for row in first] == wavs
    for row in first:
        assert set(row["probabilities"]) == set(meta.classes)
        assert sum(row["probabilities"].values()) == pytest.approx(1.0)
        assert row["class"] == max(row["probabilities"], key=row["probabilities"].get)
    for other in answers[1:]:
        assert [r["class"] for r in other] == [r["class"] for r in first]
        for a, b in zip(other, first, strict=True):
            for c in meta.classes:
                assert a["probabilities"][c] == pytest.approx(b["probabilities"][c], abs=1e-5)


def test_export_and_predict_mistakes_are_one_line(tmp_path, corpus, capsys):
    _bundle(tmp_path / "bundle", corpus, ARCHITECTURES["cnn"])
    digits = tmp_path / "digits"
    meta = _bundle(digits, corpus, ARCHITECTURES["cnn"])
    (digits / bundle.META_FILE).write_text(
        json.dumps({**json.loads(meta.to_json()), "data": "digits", "frontend": ""})
    )
    (tmp_path / "bad.wav").write_text("not audio")
    (tmp_path / "bad.onnx").write_text("not onnx")
    wav = str(corpus / "wav" / "test_001.wav")
    model = str(tmp_path / "bundle")
    cases = [
        (["predict", "--model", str(digits), wav], "trained on precomputed features"),
        (["predict", "--model", model, str(tmp_path / "bad.wav")], "unreadable wav"),
        (["predict", "--model", model, "missing.wav"], "no such audio file: missing.wav"),
        (["predict", "--model", str(tmp_path / "bad.onnx"), wav], "not an ONNX model"),
        (["predict", "--model", str(tmp_path), wav], "not a model of this project"),
        (["predict", "--model", "nothing-here", wav], "no such file, and not an MLflow"),
        (["export", "--model", model, "--format", "onnx", "--out", "/nonexistent/m.onnx"],
         "does not exist"),
        (["export", "--model", str(tmp_path / "bad.onnx"), "--format", "onnx", "--out",
          str(tmp_path / "m.onnx")], "an exported file; give the MLflow model"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def _tamper(folder: Path, case: str) -> None:
    """What a careless (or hostile) user does to a model folder."""
    meta_path, weights_path = folder / bundle.META_FILE, folder / bundle.WEIGHTS_FILE
    meta = json.loads(meta_path.read_text())
    if case in ("classes as a string", "one class more", "a million units", "no classes"):
        if case == "classes as a string":
            meta["classes"] = "low,high"
        elif case == "one class more":
            meta["classes"] = [*meta["classes"], "extra"]
        elif case == "a million units":
            meta["architecture"]["layers"][0]["units"] = 1_000_000
        else:
            del meta["classes"]
        meta_path.write_text(json.dumps(meta))
    elif case == "meta of binary bytes":
        meta_path.write_bytes(bytes(range(256)) * 4)
    elif case == "a feature fewer":
        meta_path.write_text(json.dumps({**meta, "norm_mean": meta["norm_mean"][:-1],
                                         "norm_std": meta["norm_std"][:-1]}))  # fmt: skip
    elif case == "weights as text":
        weights_path.write_text("these are not weights")
    elif case == "weights empty":
        weights_path.write_bytes(b"")
    elif case == "weights truncated":
        weights_path.write_bytes(weights_path.read_bytes()[:300])
    elif case == "a bare tensor":
        torch.save(torch.zeros(3), weights_path)
    else:
        raise ValueError(case)


@pytest.mark.parametrize(
    "case",
    ["classes as a string", "one class more", "a million units", "no classes",
     "meta of binary bytes", "a feature fewer", "weights as text", "weights empty",
     "weights truncated", "a bare tensor"],
)  # fmt: skip
def test_a_tampered_model_folder_is_not_a_model_of_this_project(tmp_path, corpus, capsys, case):
    """predict and export on a model folder someone edited: one line, exit 2, naming what
    is wrong; no torch or JSON traceback, no huge allocation."""
    model = tmp_path / "model"
    _bundle(model, corpus, {"family": "rnn", "layers": [{"units": 8, "activation": "tanh"}]})
    _tamper(model, case)
    wav = str(corpus / "wav" / "test_001.wav")
    for argv in (["predict", "--model", str(model), wav],
                 ["export", "--model", str(model), "--format", "onnx", "--out",
                  str(tmp_path / "m.onnx")]):  # fmt: skip
        assert main(argv) == 2, (case, argv)
        err = capsys.readouterr().err
        assert "not a model of this project" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "m.onnx").exists()
