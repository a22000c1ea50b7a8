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

from automl.child.arch import IN_CELL


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
    """One direction of a GRU/LSTM layer whose cell activation is configurable.

    The step loop is written for autograd's cost on the CPU, where a child spends most of
    its time: the input projections of all steps are one matmul and ``unbind`` hands the
    loop one step each (indexing ``x[:, t]`` would make every step's backward write a
    gradient as large as the whole sequence); the reset and update gates are one sigmoid,
    the interpolation one ``lerp``. No per-step mask: padding comes after a sequence's
    last step, so it never reaches a valid output, and the final state is read at each
    sequence's own last step."""

    def __init__(self, cell: str, n_in: int, units: int, activation: str) -> None:
        super().__init__()
        gates = 3 if cell == "gru" else 4
        self.cell, self.units, self.activation = cell, units, activation
        self.input_proj = nn.Linear(n_in, gates * units)
        self.hidden_proj = nn.Linear(units, gates * units)
        bound = units**-0.5
        for p in self.parameters():  # the same initialisation as nn.GRU / nn.LSTM
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        projected = self.input_proj(x)  # all time steps in one matmul
        out = self._gru(projected) if self.cell == "gru" else self._lstm(projected)
        last = out.gather(1, (lengths - 1).clamp_min(0)[:, None, None].expand(-1, 1, self.units))
        return out, last[:, 0]

    def _gru(self, projected: torch.Tensor) -> torch.Tensor:
        units, weight, bias = self.units, self.hidden_proj.weight.t(), self.hidden_proj.bias
        h = projected.new_zeros(projected.shape[0], units)
        steps = _steps(projected)
        outputs: list[torch.Tensor] = []
        for t in range(projected.shape[1]):
            gi = steps[t] if not torch.jit.is_scripting() else projected[:, t]
            gh = torch.addmm(bias, h, weight)
            reset_update = torch.sigmoid(gi[:, : 2 * units] + gh[:, : 2 * units])
            candidate = _activate(
                gi[:, 2 * units :] + reset_update[:, :units] * gh[:, 2 * units :],
                self.activation,
            )
            h = torch.lerp(candidate, h, reset_update[:, units:])
            outputs.append(h)
        return torch.stack(outputs, dim=1)

    def _lstm(self, projected: torch.Tensor) -> torch.Tensor:
        units, weight, bias = self.units, self.hidden_proj.weight.t(), self.hidden_proj.bias
        h = projected.new_zeros(projected.shape[0], units)
        c = projected.new_zeros(projected.shape[0], units)
        steps = _steps(projected)
        outputs: list[torch.Tensor] = []
        for t in range(projected.shape[1]):
            gi = steps[t] if not torch.jit.is_scripting() else projected[:, t]
            gates = gi + torch.addmm(bias, h, weight)
            sig = torch.sigmoid(gates)  # i, f, (g unused), o
            g = _activate(gates[:, 2 * units : 3 * units], self.activation)
            c = sig[:, units : 2 * units] * c + sig[:, :units] * g
            h = sig[:, 3 * units :] * _activate(c, self.activation)
            outputs.append(h)
        return torch.stack(outputs, dim=1)


def _steps(projected: torch.Tensor) -> list[torch.Tensor]:
    """The steps of ``[batch, steps, features]`` for the training loop; an exported model
    (TorchScript, then an ONNX ``Loop``) indexes the steps instead, which ONNX types."""
    if torch.jit.is_scripting():
        return []
    return list(projected.unbind(1))


def _activate(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "relu":
        return torch.relu(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    return torch.tanh(x)


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
        mask = (steps[None, :] < lengths[:, None])[..., None]
        out, h = self.forward_cell(x, lengths)
        if self.backward_cell is None:
            return out * mask, h
        reverse = _reverse_index(lengths, steps)
        out_b, h_b = self.backward_cell(_gather_steps(x, reverse), lengths)
        out = torch.cat([out, _gather_steps(out_b, reverse)], dim=-1)
        return out * mask, torch.cat([h, h_b], dim=-1)


def _reverse_index(lengths: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Per sequence, the time index that reverses its valid part and leaves padding in place."""
    rev = lengths[:, None] - 1 - steps[None, :]
    return torch.where(rev >= 0, rev, steps[None, :])


def _gather_steps(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


class Normalised(nn.Module):
    """A recurrent layer whose outputs are layer-normalised over their features (the final
    state, read by ``last`` pooling, stays as the cell left it)."""

    def __init__(self, layer: nn.Module, features: int) -> None:
        super().__init__()
        self.layer, self.norm = layer, nn.LayerNorm(features)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, last = self.layer(x, lengths)
        return self.norm(out), last


class RNNClassifier(nn.Module):
    """Stacked recurrent layers, then a pooling over time into a linear head.

    ``subsample`` k > 1 stacks k consecutive frames into one before the first layer (as
    speech models subsample: k times fewer steps for every layer, a step loop's cost and
    the distance gradients travel both cut by k). ``layer_norm`` normalises each layer's
    outputs over their features before the next layer (and the pooling) reads them, so a
    stack of in-cell ReLU or sigmoid layers, whose outputs are unbounded or all positive,
    hands every layer inputs of one scale; ``in-cell`` normalises those layers only. A tanh
    layer's outputs are bounded and centred already, and normalising them cost a 2 x 128
    tanh GRU dev UAR (final epoch, 3-4 seeds: synth-cry 0.663 -> 0.621, synth-cry-long
    0.894 -> 0.885), while a 4-layer ReLU/sigmoid stack without it sat at chance for its
    first epochs (0.33-0.43 against 0.56-0.80 with it).

    ``pooling``: ``last``, the last layer's final state; ``mean``, its outputs averaged
    over the valid steps; ``stats``, their mean and standard deviation (statistics
    pooling, as x-vector speaker and paralinguistic models use). With no layer at all
    (every width 0) the input itself is pooled: the smallest model the reference space
    can describe (``last`` then means ``mean``).
    """

    def __init__(self, arch: dict, n_features: int, n_classes: int) -> None:
        super().__init__()
        directions = 2 if arch["bidirectional"] else 1
        self.subsample = arch.get("subsample", 1)
        layers, n_in = [], n_features * self.subsample
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
            if _normalised(arch.get("layer_norm", False), spec["activation"]):
                layers[-1] = Normalised(layers[-1], n_in)
        self.layers = nn.ModuleList(layers)
        self.pooling = arch["pooling"] if layers or arch["pooling"] != "last" else "mean"
        self.dropout = nn.Dropout(arch["hparams"]["dropout"])
        self.head = nn.Linear(n_in * (2 if self.pooling == "stats" else 1), n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.subsample > 1:
            x, lengths = stack_frames(x, lengths, self.subsample)
        last = x
        for layer in self.layers:
            x, last = layer(x, lengths)
            x = self.dropout(x)
        if self.pooling == "last":
            return self.head(self.dropout(last))
        return self.head(self.dropout(_pool(x, lengths, self.pooling == "stats")))


def _normalised(layer_norm: bool | str, activation: str) -> bool:
    """Whether a layer of this in-cell ``activation`` is layer-normalised."""
    return activation != "tanh" if layer_norm == IN_CELL else bool(layer_norm)


def stack_frames(
    x: torch.Tensor, lengths: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[batch, steps, features]`` -> ``[batch, ceil(steps / k), k * features]``: each new
    step holds k consecutive frames (the last one zero-padded); any length works, a
    sequence shorter than k becomes one step."""
    batch, steps, features = x.shape
    pad = (k - steps % k) % k
    if pad:
        x = torch.cat([x, x.new_zeros(batch, pad, features)], dim=1)
    return x.reshape(batch, (steps + pad) // k, k * features), (lengths + k - 1) // k


def _pool(x: torch.Tensor, lengths: torch.Tensor, with_std: bool) -> torch.Tensor:
    """Mean (and standard deviation) over each sequence's valid steps."""
    mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
    count = lengths[:, None].to(x.dtype)
    mean = (x * mask[..., None]).sum(1) / count
    if not with_std:
        return mean
    var = (((x - mean[:, None]) * mask[..., None]) ** 2).sum(1) / count
    return torch.cat([mean, var.clamp_min(1e-8).sqrt()], dim=-1)
