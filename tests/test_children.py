"""Architectures, child networks and their handling of variable-length input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from automl.child import build_model, normalize
from automl.child.arch import arch_key
from automl.child.rnn import ActivationCell
from runtime.errors import UserError


def test_short_form_is_accepted_and_defaults_filled():
    arch = normalize(
        {"family": "rnn", "cell": "gru", "layers": [{"units": 64, "activation": "tanh"}]}
    )
    assert arch["bidirectional"] is False and arch["pooling"] == "stats"
    hp = arch["hparams"]
    assert (hp["lr"], hp["optimizer"], hp["schedule"], hp["patience"]) == (
        0.01,
        "adam",
        "onecycle",
        5,
    )


def test_hyperparameters_beside_or_inside_and_zero_unit_layers_dropped():
    a = normalize(
        {"family": "rnn", "layers": [{"units": 40}, {"units": 0}, {"units": 80}], "lr": 0.01}
    )
    b = normalize(
        {"family": "rnn", "layers": [{"units": 40}, {"units": 80}], "hparams": {"lr": 0.01}}
    )
    assert a == b and arch_key(a) == arch_key(b)
    assert [layer["units"] for layer in a["layers"]] == [40, 80]


@pytest.mark.parametrize(
    "raw,field",
    [
        ({"family": "transformer"}, "family"),
        ({"family": "rnn", "layers": [{"units": 8}], "subsample": 0}, "subsample"),
        ({"family": "mlp", "layers": [{"units": 8}], "blocks": []}, "unknown field"),
        ({"family": "rnn"}, "layers"),  # [] is a model of the pooled features
        ({"family": "rnn", "layers": [{"units": -1}]}, r"layers\[0\].units"),
        (
            {"family": "rnn", "layers": [{"units": 8, "activation": "gelu"}]},
            r"layers\[0\].activation",
        ),
        ({"family": "rnn", "layers": [{"units": 8}] * 6}, "at most 5"),
        ({"family": "rnn", "layers": [{"units": 8}], "lr": "fast"}, "hparams.lr"),
        ({"family": "rnn", "layers": [{"units": 8}], "colour": 1}, "unknown field"),
        ({"family": "cnn", "blocks": [{"filters": 8, "kernel": 0}]}, r"blocks\[0\].kernel"),
    ],
)
def test_invalid_architectures_name_the_field(raw, field):
    with pytest.raises(UserError, match=field):
        normalize(raw)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_activation_cell_with_tanh_equals_torch_kernel(cell):
    """The step-loop cell implements exactly nn.GRU/nn.LSTM maths when its activation is tanh."""
    torch.manual_seed(0)
    ref = (nn.GRU if cell == "gru" else nn.LSTM)(5, 7, batch_first=True)
    ours = ActivationCell(cell, 5, 7, "tanh")
    with torch.no_grad():
        ours.input_proj.weight.copy_(ref.weight_ih_l0)
        ours.input_proj.bias.copy_(ref.bias_ih_l0)
        ours.hidden_proj.weight.copy_(ref.weight_hh_l0)
        ours.hidden_proj.bias.copy_(ref.bias_hh_l0)
    x = torch.randn(3, 6, 5)
    expected, _ = ref(x)
    got, h = ours(x, torch.full((3,), 6))
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(h, expected[:, -1])


ARCHS = [
    {"family": "rnn", "cell": "gru", "layers": [{"units": 6, "activation": "tanh"}]},
    {
        "family": "rnn",
        "cell": "gru",
        "bidirectional": True,
        "layers": [{"units": 6, "activation": "relu"}, {"units": 4, "activation": "tanh"}],
    },
    {
        "family": "rnn",
        "cell": "lstm",
        "bidirectional": True,
        "layers": [{"units": 6, "activation": "sigmoid"}, {"units": 4, "activation": "tanh"}],
    },
    {"family": "rnn", "layers": [{"units": 0}]},
    {
        "family": "rnn",
        "subsample": 3,
        "layer_norm": True,
        "layers": [{"units": 6, "activation": "relu"}, {"units": 4, "activation": "sigmoid"}],
    },
    {"family": "mlp", "layers": [{"units": 8, "activation": "relu"}]},
    {"family": "mlp", "layers": []},
    {
        "family": "cnn",
        "blocks": [
            {"filters": 6, "kernel": 3, "pool": 2},
            {"filters": 4, "kernel": 5, "batch_norm": False, "activation": "tanh"},
        ],
        "dense": [8],
    },
    {"family": "cnn", "blocks": [{"filters": 0}], "dense": [8]},
]


@pytest.mark.parametrize("raw", ARCHS, ids=lambda a: a["family"] + str(len(str(a))))
def test_a_normalised_architecture_normalises_to_itself(raw):
    """What a search records of a child is checked again where it trains (and by
    evaluate, export): a stack whose every layer or block has width 0 included."""
    once = normalize(raw)
    assert normalize(once) == once


@pytest.mark.parametrize("raw", ARCHS, ids=lambda a: a["family"] + str(len(str(a))))
def test_padding_does_not_change_predictions(raw):
    """A short utterance gets the same output alone as beside a longer one (packed/masked)."""
    torch.manual_seed(0)
    model = build_model(normalize(raw), n_features=3, n_classes=4).eval()
    short, long = torch.randn(1, 5, 3), torch.randn(1, 11, 3)
    alone = model(short, torch.tensor([5]))
    batch = torch.zeros(2, 11, 3)
    batch[0, :5], batch[1] = short[0], long[0]
    together = model(batch, torch.tensor([5, 11]))
    torch.testing.assert_close(together[0], alone[0], rtol=1e-5, atol=1e-5)
    assert together.shape == (2, 4)


def test_bidirectional_backward_direction_reads_valid_frames_in_reverse():
    """Reversing a sequence swaps the roles of the two directions (padding stays out)."""
    torch.manual_seed(1)
    arch = normalize(
        {"family": "rnn", "bidirectional": True, "layers": [{"units": 4, "activation": "relu"}]}
    )
    layer = build_model(arch, 3, 2).layers[0]
    layer.backward_cell.load_state_dict(layer.forward_cell.state_dict())
    x = torch.zeros(1, 7, 3)
    x[0, :5] = torch.randn(5, 3)
    _, h = layer(x, torch.tensor([5]))
    _, h_rev = layer(torch.cat([x[:, :5].flip(1), x[:, 5:]], 1), torch.tensor([5]))
    torch.testing.assert_close(h[0, :4], h_rev[0, 4:])
