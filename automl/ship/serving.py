"""A trained child as an MLflow pyfunc model, logged with MLflow's models-from-code.

Loading it runs this file (the project's own code), never a pickle: the weights are read
with ``torch.load(weights_only=True)``, the architecture, the class labels in order and
the normalisation from JSON (see :mod:`automl.ship.bundle`). Input: the frontend's features of
one utterance, a float32 array [frames, features] (as ``automl data`` computes them,
before normalisation). Output: a DataFrame with one row: the predicted class and a
probability per class.
"""

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd


class ChildModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from automl.ship import bundle

        artifacts = context.artifacts
        self.meta, weights = bundle.read_files(Path(artifacts["meta"]), Path(artifacts["weights"]))
        self.scorer = bundle.build_scorer(self.meta, weights)

    def predict(
        self, context: Any, model_input: np.ndarray, params: dict | None = None
    ) -> pd.DataFrame:
        """(``np.ndarray`` is a hint MLflow infers no schema from: the signature comes from
        the input example, [-1 frames, features].)"""
        import torch

        frames = np.asarray(model_input, np.float32)
        n = self.meta.n_features
        if frames.ndim != 2 or frames.shape[1] != n:
            raise ValueError(f"expected features [frames, {n}], got {frames.shape}")
        with torch.no_grad():
            probs = self.scorer(torch.from_numpy(frames)).numpy()
        classes = self.meta.classes
        row = {"class": classes[int(probs.argmax())]}
        row.update({f"p_{c}": float(p) for c, p in zip(classes, probs, strict=True)})
        return pd.DataFrame([row])


mlflow.models.set_model(ChildModel())
