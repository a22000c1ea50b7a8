"""An evaluated child as an MLflow pyfunc model, logged with MLflow's models-from-code.

Loading it runs this file (the project's own code), never a pickle: the weights are read
with ``torch.load(weights_only=True)``, the architecture, the class labels in order and
the normalisation from JSON. Input: the frontend's features of one utterance, a float32
array [frames, features] (as ``automl data`` computes them, before normalisation).
Output: a DataFrame with one row: the predicted class and a probability per class.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

WEIGHTS, META = "weights", "meta"  # the artifacts' keys


class ChildModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        import torch

        from automl.children import build_model, normalize

        meta = json.loads(Path(context.artifacts[META]).read_text())
        self.classes = meta["classes"]
        self.mean = np.asarray(meta["norm_mean"], np.float32)
        self.std = np.asarray(meta["norm_std"], np.float32)
        self.model = build_model(normalize(meta["architecture"]), len(self.mean), len(self.classes))
        weights = torch.load(context.artifacts[WEIGHTS], weights_only=True, map_location="cpu")
        self.model.load_state_dict(weights)
        self.model.eval()

    def predict(self, context, model_input, params=None):
        """(No type hints: MLflow reads them as an input schema, which this one is not.)"""
        import pandas as pd
        import torch

        frames = np.asarray(model_input, np.float32)
        if frames.ndim != 2 or frames.shape[1] != len(self.mean):
            raise ValueError(f"expected features [frames, {len(self.mean)}], got {frames.shape}")
        x = torch.from_numpy((frames - self.mean) / self.std)[None]
        with torch.no_grad():
            probs = torch.softmax(self.model(x, torch.tensor([len(frames)])), -1)[0].numpy()
        row = {"class": self.classes[int(probs.argmax())]}
        row.update({f"p_{c}": float(p) for c, p in zip(self.classes, probs, strict=True)})
        return pd.DataFrame([row])


mlflow.models.set_model(ChildModel())
