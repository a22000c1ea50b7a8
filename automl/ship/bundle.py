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
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from runtime import tracking
from runtime.errors import UserError
from runtime.files import read_torch_file, write_torch
from runtime.tags import MODEL_URI_TAG, RUN_NAME_TAG

META_FILE, WEIGHTS_FILE = "meta.json", "weights.pt"
FUSION = "fusion"  # the family of a fused model's architecture: {"members": [...]}
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
        """The meta of a bundle, checked field by field: a file that is not one this
        project wrote is one line, "not a model of this project: <what>"."""
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise UserError(f"{where}: not a model of this project (not JSON: {exc})") from None
        if not isinstance(raw, dict):
            raise UserError(f"{where}: not a model of this project (not a JSON object)")
        required = ("architecture", "classes", "norm_mean", "norm_std")
        missing = [k for k in required if k not in raw]
        if missing:
            raise UserError(f"{where}: not a model of this project (no {', '.join(missing)})")
        meta = cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})
        problem = meta._problem()
        if problem:
            raise UserError(f"{where}: not a model of this project ({problem})")
        return meta

    def _problem(self) -> str | None:
        """What is wrong with these fields, or None."""
        from automl.child import normalize
        from automl.data.frontends import FRONTENDS

        classes, mean, std = self.classes, self.norm_mean, self.norm_std
        if not isinstance(classes, list) or len(classes) < 2:
            return "classes: expected a list of two or more labels"
        if not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
            return "classes: expected different labels (strings)"
        for name, values in (("norm_mean", mean), ("norm_std", std)):
            if (
                not isinstance(values, list)
                or not values
                or not all(isinstance(v, int | float) and math.isfinite(v) for v in values)
            ):
                return f"{name}: expected a list of finite numbers"
        if len(mean) != len(std) or min(std) <= 0:
            return "norm_std: expected as many positive numbers as norm_mean"
        if not isinstance(self.frontend, str) or not (
            self.frontend in ("", *FRONTENDS) or self.frontend.startswith("csv:")
        ):
            return f"frontend: {self.frontend!r} is none this project has"
        if self.max_seconds is not None and not (
            isinstance(self.max_seconds, int | float) and 0 < self.max_seconds < math.inf
        ):
            return f"max_seconds: expected a number of seconds, got {self.max_seconds!r}"
        members = self.architecture.get("members") if isinstance(self.architecture, dict) else 0
        fused = isinstance(self.architecture, dict) and self.architecture.get("family") == FUSION
        for architecture in members if fused and isinstance(members, list) else [self.architecture]:
            try:
                normalize(architecture)
            except UserError as exc:
                return str(exc)
        return None

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


class Fused(nn.Module):
    """Late fusion: the members' class probabilities averaged, returned as log
    probabilities so that :class:`Scorer`'s softmax gives that average back."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        outputs: list[torch.Tensor] = []
        for member in self.members:  # a loop TorchScript keeps (automl export)
            outputs.append(torch.softmax(member(x, lengths), dim=-1))
        return torch.log(torch.stack(outputs).mean(dim=0))


def build_network(meta: ModelMeta, weights: dict[str, torch.Tensor]) -> nn.Module:
    """The network of a bundle: one child's, or the members of a fusion (their weights
    under ``<member index>.``)."""
    from automl.child import build_model, normalize

    n_features, n_classes = meta.n_features, len(meta.classes)
    if meta.architecture.get("family") != FUSION:
        network = build_model(normalize(meta.architecture), n_features, n_classes)
        network.load_state_dict(weights)
        return network
    members = []
    for k, architecture in enumerate(meta.architecture["members"]):
        member = build_model(normalize(architecture), n_features, n_classes)
        prefix = f"{k}."
        member.load_state_dict(
            {name[len(prefix) :]: w for name, w in weights.items() if name.startswith(prefix)}
        )
        members.append(member)
    return Fused(members)


def build_scorer(meta: ModelMeta, weights: dict[str, torch.Tensor]) -> Scorer:
    try:
        network = build_network(meta, weights)
    except RuntimeError as exc:  # missing, unexpected or mis-shaped tensors
        first = str(exc).strip().splitlines()[0][:160]
        raise UserError(
            f"not a model of this project: its weights do not fit its meta.json ({first})"
        ) from None
    mean = torch.tensor(meta.norm_mean, dtype=torch.float32)
    std = torch.tensor(meta.norm_std, dtype=torch.float32)
    return Scorer(network, mean, std).eval()


def write(folder: Path, meta: ModelMeta, weights: dict[str, torch.Tensor]) -> dict[str, str]:
    """The two files in ``folder``; returns them by their MLflow artifact keys."""
    folder.mkdir(parents=True, exist_ok=True)
    write_torch(folder / WEIGHTS_FILE, weights)
    (folder / META_FILE).write_text(meta.to_json())
    return {"weights": str(folder / WEIGHTS_FILE), "meta": str(folder / META_FILE)}


def read(folder: Path) -> tuple[ModelMeta, dict[str, torch.Tensor]]:
    return read_files(folder / META_FILE, folder / WEIGHTS_FILE)


def read_files(meta: Path, weights: Path) -> tuple[ModelMeta, dict[str, torch.Tensor]]:
    parsed = ModelMeta.from_json(meta.read_text(errors="replace"), str(meta))
    found = read_torch_file(weights, "a model's weights", "not a model of this project")
    if not isinstance(found, dict) or not all(isinstance(w, torch.Tensor) for w in found.values()):
        raise UserError(f"{weights}: not a model of this project (no state dict of tensors)")
    return parsed, found


def log_model(
    uri: str,
    run_id: str,
    name: str,
    meta: ModelMeta,
    weights: dict[str, torch.Tensor],
    example: np.ndarray,
) -> str:
    """Log the bundle as MLflow pyfunc model ``name`` into run ``run_id`` (models-from-code:
    :mod:`automl.ship.serving` is the model's code; nothing is pickled); returns its URI."""
    with tempfile.TemporaryDirectory() as tmp:
        files = write(Path(tmp), meta, weights)
        return tracking.log_pyfunc_model(uri, run_id, name, SERVING, files, example, REQUIREMENTS)


def denormalised(features: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """Normalised features back as the frontend gave them (an input example)."""
    mean, std = np.asarray(meta.norm_mean), np.asarray(meta.norm_std)
    return (features * std + mean).astype(np.float32)


def log_child_model(uri: str, run_id: str, meta: ModelMeta, example: np.ndarray) -> str:
    """Log a finished child's checkpoint as its run's MLflow model, named as its run is
    (``runs:/<id>/child-0007``: the experiment's Models page tells them apart), and tag
    the run with the model's URI; a child logged before keeps its model. The run
    ends as it was (status and end time): logging it later does not change its record."""
    run = tracking.get_run(uri, run_id)
    if MODEL_URI_TAG in run.tags:
        return run.tags[MODEL_URI_TAG]
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = f"{tracking.CHECKPOINT_DIR}/{WEIGHTS_FILE}"
        path = tracking.download_artifact(uri, run_id, checkpoint, Path(tmp))
        weights = torch.load(path, weights_only=True, map_location="cpu")
    name = run.tags.get(RUN_NAME_TAG) or f"model-{run_id[:8]}"
    model_uri = log_model(uri, run_id, name, meta, weights, example)
    tracking.set_tag(uri, run_id, MODEL_URI_TAG, model_uri)
    tracking.end_run(uri, run_id, run.status, end_time=run.end_time)
    return model_uri
