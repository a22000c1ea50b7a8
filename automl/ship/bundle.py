"""A trained child packed for inference: its weights and what they need beside them.

Weights alone cannot score new audio: the class labels in order, the normalisation the
network was trained behind and the frontend that makes its features are part of the
model. A bundle keeps them as two files, ``weights.pt`` (a state dict, loaded with
``weights_only=True``: no pickled code) and ``meta.json``. The same bundle is what an
MLflow model carries (:mod:`automl.ship.serving`), what ``automl export`` writes into a
TorchScript or ONNX file, and what ``automl predict`` reads from any of them.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from runtime import tracking
from runtime.errors import UserError
from runtime.tags import MODEL_URI_TAG

META_FILE, WEIGHTS_FILE = "meta.json", "weights.pt"
SERVING = Path(__file__).with_name("serving.py")  # the model's code, run by MLflow on load
REQUIREMENTS = ["torch", "numpy", "pandas", "mlflow", "automl-rl"]  # what loading it needs


@dataclass
class ModelMeta:
    architecture: dict[str, Any]
    classes: list[str]  # in the order of the network's outputs
    norm_mean: list[float]  # subtracted from the frontend's features, then divided by std
    norm_std: list[float]
    frontend: str = ""  # a frontend name (mfcc, logmel, ...), csv:PATH, or "" (no audio)
    max_seconds: float | None = None  # the crop the training utterances had
    data: str = ""  # the corpus it was trained on

    @property
    def n_features(self) -> int:
        return len(self.norm_mean)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str, where: str) -> ModelMeta:
        try:
            raw = json.loads(text)
            return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})
        except (ValueError, TypeError) as exc:
            raise UserError(f"{where}: not a model's meta.json ({exc})") from None

    def audio_frontend(self) -> str:
        """The frontend that turns a wav into this model's input, or a user error."""
        if not self.frontend or self.frontend.startswith("csv:") or self.data == "digits":
            raise UserError(
                f"this model was trained on precomputed features ({self.data or 'no corpus'}, "
                f"frontend {self.frontend or 'none'}): it cannot take audio files"
            )
        return self.frontend


class Scorer(nn.Module):
    """One utterance's features [frames, features] as the frontend gives them -> class
    probabilities [classes]: normalisation, network and softmax in one module, so an
    exported file needs nothing beside it."""

    def __init__(self, network: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = ((features - self.mean) / self.std)[None]
        lengths = torch.tensor([features.shape[0]])
        return torch.softmax(self.network(x, lengths), dim=-1)[0]


def build_scorer(meta: ModelMeta, weights: dict[str, torch.Tensor]) -> Scorer:
    from automl.child import build_model, normalize

    network = build_model(normalize(meta.architecture), meta.n_features, len(meta.classes))
    network.load_state_dict(weights)
    mean = torch.tensor(meta.norm_mean, dtype=torch.float32)
    std = torch.tensor(meta.norm_std, dtype=torch.float32)
    return Scorer(network, mean, std).eval()


def write(folder: Path, meta: ModelMeta, weights: dict[str, torch.Tensor]) -> dict[str, str]:
    """The two files in ``folder``; returns them by their MLflow artifact keys."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(weights, folder / WEIGHTS_FILE)
    (folder / META_FILE).write_text(meta.to_json())
    return {"weights": str(folder / WEIGHTS_FILE), "meta": str(folder / META_FILE)}


def read(folder: Path) -> tuple[ModelMeta, dict[str, torch.Tensor]]:
    return read_files(folder / META_FILE, folder / WEIGHTS_FILE)


def read_files(meta: Path, weights: Path) -> tuple[ModelMeta, dict[str, torch.Tensor]]:
    parsed = ModelMeta.from_json(meta.read_text(), str(meta))
    return parsed, torch.load(weights, weights_only=True, map_location="cpu")


def log_model(
    uri: str, run_id: str, meta: ModelMeta, weights: dict[str, torch.Tensor], example: np.ndarray
) -> str:
    """Log the bundle as an MLflow pyfunc model into run ``run_id`` (models-from-code:
    :mod:`automl.ship.serving` is the model's code; nothing is pickled); returns its URI."""
    with tempfile.TemporaryDirectory() as tmp:
        return tracking.log_pyfunc_model(
            uri, run_id, SERVING, write(Path(tmp), meta, weights), example, REQUIREMENTS
        )


def denormalised(features: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """Normalised features back as the frontend gave them (an input example)."""
    mean, std = np.asarray(meta.norm_mean), np.asarray(meta.norm_std)
    return (features * std + mean).astype(np.float32)


def log_child_model(uri: str, run_id: str, meta: ModelMeta, example: np.ndarray) -> str:
    """Log a finished child's checkpoint as its run's MLflow model (``runs:/<id>/model``)
    and tag the run with the model's URI; a child logged before keeps its model. The run
    ends as it was (status and end time): logging it later does not change its record."""
    run = tracking.get_run(uri, run_id)
    if MODEL_URI_TAG in run.tags:
        return run.tags[MODEL_URI_TAG]
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = f"{tracking.CHECKPOINT_DIR}/{WEIGHTS_FILE}"
        path = tracking.download_artifact(uri, run_id, checkpoint, Path(tmp))
        weights = torch.load(path, weights_only=True, map_location="cpu")
    model_uri = log_model(uri, run_id, meta, weights, example)
    tracking.set_tag(uri, run_id, MODEL_URI_TAG, model_uri)
    tracking.end_run(uri, run_id, run.status, end_time=run.end_time)
    return model_uri
