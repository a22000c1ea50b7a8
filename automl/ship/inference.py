"""Load a model however it was shipped and score one utterance's features with it.

``--model`` takes an MLflow model URI (``models:/NAME/VERSION``, ``models:/<model id>``,
``runs:/<run id>/child-0007``), an MLflow model folder on disk, or a file ``automl export``
wrote (TorchScript ``.pt`` or ``.onnx``, each carrying the bundle's meta). All give the
same :class:`Predictor`: the meta (classes, frontend) and class probabilities.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from automl.ship import bundle
from automl.ship.bundle import META_FILE, WEIGHTS_FILE, ModelMeta
from runtime import tracking
from runtime.errors import UserError

ONNX_META_KEY = "automl.meta"  # the bundle's meta.json in an ONNX file's metadata
TORCHSCRIPT_META = "meta.json"  # and among a TorchScript file's extra files


@dataclass
class Predictor:
    meta: ModelMeta
    score: Callable[[np.ndarray], np.ndarray]  # features [frames, n] -> probabilities [classes]

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, np.float32)
        if features.ndim != 2 or features.shape[1] != self.meta.n_features:
            raise UserError(
                f"features of shape {features.shape}: this model takes [frames, "
                f"{self.meta.n_features}]"
            )
        return self.score(features)


def load(model: str, tracking_uri: str | None = None) -> Predictor:
    path = Path(model)
    if path.is_file():
        return _onnx(path) if path.suffix == ".onnx" else _torchscript(path)
    meta, weights = load_bundle(model, tracking_uri)
    return from_scorer(meta, bundle.build_scorer(meta, weights))


def load_bundle(model: str, tracking_uri: str | None = None) -> tuple[ModelMeta, dict]:
    """The bundle of an MLflow model (a URI or a model folder on disk)."""
    path = Path(model)
    if path.is_file():
        raise UserError(f"--model {model}: an exported file; give the MLflow model it came from")
    if path.is_dir():
        return _read_folder(path, model)
    if not is_mlflow_uri(model):
        raise UserError(f"--model {model}: no such file, and not an MLflow model URI")
    with tempfile.TemporaryDirectory() as tmp:
        return _read_folder(_download(model, tracking_uri, Path(tmp)), model)


def is_mlflow_uri(model: str) -> bool:
    """``models:/...``, ``runs:/...`` or a bare model id (``m-...``): a model MLflow holds."""
    return ":/" in model or model.startswith("m-")


def from_scorer(meta: ModelMeta, scorer: bundle.Scorer) -> Predictor:
    import torch

    def score(features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return scorer(torch.from_numpy(features)).numpy()

    return Predictor(meta, score)


def _download(uri: str, tracking_uri: str | None, into: Path) -> Path:
    model_uri = f"models:/{uri}" if uri.startswith("m-") else uri
    try:
        return tracking.download_model(model_uri, tracking_uri, into)
    except (tracking.TrackingError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"--model {uri}: cannot load it from {tracking_uri} ({first[:200]})"
        ) from None


def _read_folder(folder: Path, name: str) -> tuple[ModelMeta, dict]:
    """An MLflow model this project logged (its bundle under ``artifacts/``), or a bundle."""
    for place in (folder / "artifacts", folder):
        if (place / META_FILE).is_file() and (place / WEIGHTS_FILE).is_file():
            return bundle.read(place)
    raise UserError(
        f"--model {name}: not a model of this project (no {META_FILE} and {WEIGHTS_FILE}); "
        "a searched child has one when it was among the top --log-models of its search"
    )


def _torchscript(path: Path) -> Predictor:
    import torch

    extra = {TORCHSCRIPT_META: ""}
    try:
        module = torch.jit.load(str(path), _extra_files=extra, map_location="cpu")
    except RuntimeError as exc:
        raise UserError(f"--model {path}: not a TorchScript file ({str(exc)[:120]})") from None
    if not extra[TORCHSCRIPT_META]:
        raise UserError(f"--model {path}: a TorchScript file without this project's meta.json")
    meta = ModelMeta.from_json(extra[TORCHSCRIPT_META], str(path))

    def score(features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(features)).numpy()

    return Predictor(meta, score)


def _onnx(path: Path) -> Predictor:
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped Fail/InvalidGraph errors
        raise UserError(f"--model {path}: not an ONNX model ({str(exc)[:160]})") from None
    text = session.get_modelmeta().custom_metadata_map.get(ONNX_META_KEY)
    if text is None:
        raise UserError(f"--model {path}: an ONNX file without this project's meta")
    meta = ModelMeta.from_json(text, str(path))
    name = session.get_inputs()[0].name

    def score(features: np.ndarray) -> np.ndarray:
        return session.run(None, {name: features})[0]

    return Predictor(meta, score)


def rows(predictor: Predictor, named: list[tuple[str, np.ndarray]]) -> list[dict[str, Any]]:
    """Per utterance: its name, the predicted class and each class's probability."""
    out = []
    for name, features in named:
        probs = predictor.probabilities(features)
        classes = predictor.meta.classes
        out.append({
            "file": name,
            "class": classes[int(np.argmax(probs))],
            "probabilities": {c: float(p) for c, p in zip(classes, probs, strict=True)},
        })  # fmt: skip
    return out
