"""Networks on utterance-level functionals: dense layers over one vector per utterance.

With a functionals frontend (``compare``, ``egemaps``, ``mfcc-functionals``) every
utterance is one feature vector: what the challenge's baseline SVM reads. This family
puts a small network there instead, so a search space can hold the baseline's input and
networks on it. Given frame features, it reads their mean over the valid frames. No
hidden layer at all is a linear softmax model on the vector.
"""

from __future__ import annotations

import torch
from torch import nn

from automl.child.cnn import ACTIVATION_MODULES


class MLPClassifier(nn.Module):
    """(Linear -> LayerNorm -> activation -> dropout) per layer, then a linear head."""

    def __init__(self, arch: dict, n_features: int, n_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        n_in, dropout = n_features, arch["hparams"]["dropout"]
        for spec in arch["layers"]:
            layers += [
                nn.Dropout(dropout),
                nn.Linear(n_in, spec["units"]),
                nn.LayerNorm(spec["units"]),
                ACTIVATION_MODULES[spec["activation"]](),
            ]
            n_in = spec["units"]
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_in, n_classes))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
        pooled = (x * mask[..., None].to(x.dtype)).sum(1) / lengths[:, None].to(x.dtype)
        return self.head(self.body(pooled))
