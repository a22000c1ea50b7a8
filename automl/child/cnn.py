"""Convolutional children: 1-D conv blocks over time, masked global pooling, dense head.

Features are the channels and time is the axis convolved, so the same model reads
MFCC/log-mel sequences of any length and the 8x8 digits as 8 steps of 8 pixels.
Padding is zeroed after every block and excluded from the global mean, so a batch's
longest utterance does not change another one's prediction.
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATION_MODULES = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid}


class ConvBlock(nn.Module):
    """conv -> (batch-norm) -> activation -> max-pool (ceil, so no sequence shrinks to 0)."""

    def __init__(self, n_in: int, spec: dict) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            n_in, spec["filters"], spec["kernel"], padding="same", bias=not spec["batch_norm"]
        )
        self.norm = nn.BatchNorm1d(spec["filters"]) if spec["batch_norm"] else nn.Identity()
        self.act = ACTIVATION_MODULES[spec["activation"]]()
        self.pool = spec["pool"]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.act(self.norm(self.conv(x)))
        if self.pool > 1:  # padding must not win a max: fill it with -inf first
            x = x.masked_fill(_mask(lengths, x.shape[-1])[:, None, :] == 0, float("-inf"))
            x = nn.functional.max_pool1d(x, self.pool, ceil_mode=True)
            lengths = torch.div(lengths + self.pool - 1, self.pool, rounding_mode="floor")
        return x.masked_fill(_mask(lengths, x.shape[-1])[:, None, :] == 0, 0.0), lengths


class CNNClassifier(nn.Module):
    def __init__(self, arch: dict, n_features: int, n_classes: int) -> None:
        super().__init__()
        blocks, n_in = [], n_features
        for spec in arch["blocks"]:
            blocks.append(ConvBlock(n_in, spec))
            n_in = spec["filters"]
        self.blocks = nn.ModuleList(blocks)
        head: list[nn.Module] = []
        for units in arch["dense"]:
            head += [nn.Dropout(arch["hparams"]["dropout"]), nn.Linear(n_in, units), nn.ReLU()]
            n_in = units
        head += [nn.Dropout(arch["hparams"]["dropout"]), nn.Linear(n_in, n_classes)]
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2) * _mask(lengths, x.shape[1])[:, None, :]  # [batch, features, time]
        for block in self.blocks:
            x, lengths = block(x, lengths)
        pooled = x.sum(-1) / lengths[:, None].to(x.dtype)
        return self.head(pooled)


def _mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    return (torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]).float()
