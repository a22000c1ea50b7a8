"""Child networks: architecture dict -> ``nn.Module`` taking (padded features, lengths)."""

from __future__ import annotations

from torch import nn

from automl.child.arch import arch_key, describe, normalize
from automl.child.cnn import CNNClassifier
from automl.child.mlp import MLPClassifier
from automl.child.rnn import RNNClassifier


def build_model(arch: dict, n_features: int, n_classes: int) -> nn.Module:
    """Build the network for a canonical architecture (see :func:`normalize`)."""
    family = {"rnn": RNNClassifier, "cnn": CNNClassifier, "mlp": MLPClassifier}[arch["family"]]
    return family(arch, n_features, n_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["arch_key", "build_model", "count_parameters", "describe", "normalize"]
