"""Recurrent children: stacked GRU/LSTM layers over variable-length feature sequences.

Each layer has its own width and activation. The activation is applied *inside* the
cell, as Keras' ``GRU(activation=...)`` does: it replaces tanh for the candidate state
(GRU) or for the cell input and output (LSTM); the gates stay sigmoid. Layers whose
activation is tanh use the fused ``nn.GRU``/``nn.LSTM`` kernels on packed sequences;
the others run a step loop whose input projections are computed for all steps at once.
Padding never leaks into the state: packed sequences or a per-step mask keep it out.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

ACTIVATION_FNS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}


class FusedLayer(nn.Module):
    """A tanh GRU/LSTM layer on cuDNN/oneDNN kernels via packed sequences.

    Under bf16 autocast it runs in fp32: autocast would run the cuDNN RNN in fp16, and the
    bf16 path has no loss scaler to keep fp16 gradients from underflowing. (The fp16 path
    has one, so there the layer stays in fp16.)"""

    def __init__(self, cell: str, n_in: int, units: int, bidirectional: bool) -> None:
        super().__init__()
        rnn_cls = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn_cls(n_in, units, batch_first=True, bidirectional=bidirectional)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # TorchScript (export, fp32) compiles the branch unless it is a separate `if`
        if not torch.jit.is_scripting():  # noqa: SIM102
            if _bf16_autocast(x):
                return self._fp32(x, lengths)
        return self._run(x, lengths)

    @torch.jit.unused
    def _fp32(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(x.device.type, enabled=False):
            return self._run(x.float(), lengths)

    def _run(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.jit.is_scripting():  # an exported model takes one utterance: no padding
            out, hidden = self.rnn(x)
            h_n = hidden[0] if isinstance(hidden, tuple) else hidden
            return out, torch.cat(list(h_n), dim=-1)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, hidden = self.rnn(packed)
        h_n = hidden[0] if isinstance(hidden, tuple) else hidden
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out, torch.cat(list(h_n), dim=-1)


def _bf16_autocast(x: torch.Tensor) -> bool:
    kind = x.device.type
    return torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind) == torch.bfloat16


class ActivationCell(nn.Module):
    """One direction of a GRU/LSTM layer whose cell activation is configurable."""

    def __init__(self, cell: str, n_in: int, units: int, activation: str) -> None:
        super().__init__()
        gates = 3 if cell == "gru" else 4
        self.cell, self.units, self.act = cell, units, ACTIVATION_FNS[activation]
        self.input_proj = nn.Linear(n_in, gates * units)
        self.hidden_proj = nn.Linear(units, gates * units)
        bound = units**-0.5
        for p in self.parameters():  # the same initialisation as nn.GRU / nn.LSTM
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, steps, _ = x.shape
        projected = self.input_proj(x)  # all time steps in one matmul
        h = x.new_zeros(batch, self.units)
        c = x.new_zeros(batch, self.units)
        outputs = []
        for t in range(steps):
            gi, gh = projected[:, t], self.hidden_proj(h)
            if self.cell == "gru":
                h_new = self._gru_step(gi, gh, h)
            else:
                h_new, c_new = self._lstm_step(gi + gh, c)
                c = torch.where(mask[:, t, None], c_new, c)
            h = torch.where(mask[:, t, None], h_new, h)
            outputs.append(h)
        return torch.stack(outputs, dim=1) * mask[..., None], h

    def _gru_step(self, gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        reset = torch.sigmoid(i_r + h_r)
        update = torch.sigmoid(i_z + h_z)
        candidate = self.act(i_n + reset * h_n)
        return (1 - update) * candidate + update * h

    def _lstm_step(self, gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, g, o = gates.chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * self.act(g)
        return torch.sigmoid(o) * self.act(c_new), c_new


class ActivationLayer(nn.Module):
    """A (bi)directional :class:`ActivationCell` layer; backward reads reversed sequences."""

    def __init__(
        self, cell: str, n_in: int, units: int, activation: str, bidirectional: bool
    ) -> None:
        super().__init__()
        self.forward_cell = ActivationCell(cell, n_in, units, activation)
        self.backward_cell = (
            ActivationCell(cell, n_in, units, activation) if bidirectional else None
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        steps = torch.arange(x.shape[1], device=x.device)
        mask = steps[None, :] < lengths[:, None]
        out, h = self.forward_cell(x, mask)
        if self.backward_cell is None:
            return out, h
        reverse = _reverse_index(lengths, steps)
        out_b, h_b = self.backward_cell(_gather_steps(x, reverse), mask)
        return torch.cat([out, _gather_steps(out_b, reverse)], dim=-1), torch.cat([h, h_b], dim=-1)


def _reverse_index(lengths: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Per sequence, the time index that reverses its valid part and leaves padding in place."""
    rev = lengths[:, None] - 1 - steps[None, :]
    return torch.where(rev >= 0, rev, steps[None, :])


def _gather_steps(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


class RNNClassifier(nn.Module):
    """Stacked recurrent layers, then a pooling over time into a linear head.

    ``pooling``: ``last``, the last layer's final state; ``mean``, its outputs averaged
    over the valid steps; ``stats``, their mean and standard deviation (statistics
    pooling, as x-vector speaker and paralinguistic models use). With no layer at all
    (every width 0) the input itself is pooled: the smallest model the reference space
    can describe (``last`` then means ``mean``).
    """

    def __init__(self, arch: dict, n_features: int, n_classes: int) -> None:
        super().__init__()
        directions = 2 if arch["bidirectional"] else 1
        layers, n_in = [], n_features
        for spec in arch["layers"]:
            if spec["activation"] == "tanh":
                layers.append(FusedLayer(arch["cell"], n_in, spec["units"], arch["bidirectional"]))
            else:
                layers.append(
                    ActivationLayer(
                        arch["cell"], n_in, spec["units"], spec["activation"], arch["bidirectional"]
                    )
                )
            n_in = spec["units"] * directions
        self.layers = nn.ModuleList(layers)
        self.pooling = arch["pooling"] if layers or arch["pooling"] != "last" else "mean"
        self.dropout = nn.Dropout(arch["hparams"]["dropout"])
        self.head = nn.Linear(n_in * (2 if self.pooling == "stats" else 1), n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        last = x
        for layer in self.layers:
            x, last = layer(x, lengths)
            x = self.dropout(x)
        if self.pooling == "last":
            return self.head(self.dropout(last))
        return self.head(self.dropout(_pool(x, lengths, self.pooling == "stats")))


def _pool(x: torch.Tensor, lengths: torch.Tensor, with_std: bool) -> torch.Tensor:
    """Mean (and standard deviation) over each sequence's valid steps."""
    mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
    count = lengths[:, None].to(x.dtype)
    mean = (x * mask[..., None]).sum(1) / count
    if not with_std:
        return mean
    var = (((x - mean[:, None]) * mask[..., None]) ** 2).sum(1) / count
    return torch.cat([mean, var.clamp_min(1e-8).sqrt()], dim=-1)
