"""UAR against scikit-learn, and the trainer on small real data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import recall_score

from automl.child.metrics import uar
from automl.child.trainer import TrainConfig, split_uar, train_child
from automl.cli import main
from automl.data.prepare import load_dataset


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 5)), min_size=1, max_size=60))
def test_uar_equals_sklearn_macro_recall_over_reference_classes(pairs):
    y_true, y_pred = map(np.array, zip(*pairs, strict=True))
    expected = recall_score(
        y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0
    )
    assert uar(y_true, y_pred) == pytest.approx(expected)


def test_uar_when_a_class_is_never_predicted():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 0, 0, 0, 0])
    assert uar(y_true, y_pred) == pytest.approx(1 / 3)
    assert uar(y_true, y_pred) == pytest.approx(recall_score(y_true, y_pred, average="macro"))


GRU = {"family": "rnn", "cell": "gru", "layers": [{"units": 32, "activation": "tanh"}], "lr": 0.01}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_trainer_learns_digits_and_keeps_the_last_epoch_of_its_annealed_schedule(digits):
    result = train_child({**GRU, "patience": 1}, digits, TrainConfig(epochs=4, seed=0))
    chance = 1 / digits.n_classes
    assert result.dev_uar > 0.85 > 5 * chance
    assert [h.epoch for h in result.history] == [1, 2, 3, 4]  # no plateau stop: it anneals
    assert result.best_epoch == 4 and result.dev_uar == result.history[-1].dev_uar
    assert [h.kept_dev_uar for h in result.history] == [h.dev_uar for h in result.history]
    assert split_uar(result.architecture, result.state_dict, digits, "devel") == result.dev_uar
    assert result.n_params == sum(v.numel() for v in result.state_dict.values())
    assert result.latency_ms > 0 and result.train_seconds > 0


@pytest.mark.parametrize(
    "arch",
    [
        {
            "family": "rnn",
            "cell": "lstm",
            "layers": [{"units": 16, "activation": "relu"}],
            "lr": 0.01,
        },
        {"family": "cnn", "blocks": [{"filters": 16, "kernel": 3}], "dense": [16], "lr": 0.01},
    ],
)
def test_other_families_learn(digits, arch):
    """Five epochs: the one-cycle schedule spends its first third warming up."""
    assert train_child(arch, digits, TrainConfig(epochs=5, seed=0)).dev_uar > 0.7


def test_same_seed_same_result_other_seed_differs(digits):
    arch = {**GRU, "dropout": 0.2, "class_weighted": True}
    a = train_child(arch, digits, TrainConfig(epochs=2, seed=3))
    b = train_child(arch, digits, TrainConfig(epochs=2, seed=3))
    c = train_child(arch, digits, TrainConfig(epochs=2, seed=4))
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]
    assert a.dev_uar == b.dev_uar
    assert [h.train_loss for h in a.history] != [h.train_loss for h in c.history]


def test_class_weighted_training_on_synth_cry_beats_chance():
    """On the 70/20/10 corpus a weighted loss keeps the model off the majority class."""
    ds = load_dataset("synth-cry")
    base = {"family": "cnn", "blocks": [{"filters": 16, "kernel": 5}], "lr": 0.003}
    weighted = train_child({**base, "class_weighted": True}, ds, TrainConfig(epochs=6, seed=0))
    assert weighted.dev_uar > 0.5  # chance is 1/3


def test_train_command_writes_json(tmp_path):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(GRU))
    out = tmp_path / "out.json"
    assert (
        main(
            [
                "train",
                "--data",
                "digits",
                "--arch",
                str(arch),
                "--epochs",
                "2",
                "--seed",
                "1",
                "--json",
                str(out),
                "--save-model",
                str(tmp_path / "m.pt"),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert {"dev_uar", "n_params", "train_seconds", "epochs"} <= set(result)
    assert result["epochs"] == 2 and 0 <= result["dev_uar"] <= 1
    import torch

    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert sum(v.numel() for v in state.values()) == result["n_params"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--arch", "missing.json"], "--arch missing.json: file not found"),
        (["--arch", "{bad}"], "not valid JSON"),
        (["--arch", "{arch}", "--json", "/nonexistent/dir/out.json"], "does not exist"),
    ],
)
def test_train_command_user_errors(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text("{nope")
    (tmp_path / "arch.json").write_text(json.dumps(GRU))
    argv = [a.replace("{bad}", "bad.json").replace("{arch}", "arch.json") for a in argv]
    assert main(["train", "--data", "digits", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# -- the recipe: length-bucketed batches, schedules, early stop on a plateau ------------


def test_length_batches_cover_every_utterance_once_with_little_padding():
    from automl.child.recipe import length_batches

    lengths = torch.from_numpy(np.random.default_rng(0).integers(10, 500, size=1000))
    generator = torch.Generator().manual_seed(0)
    epochs = [length_batches(lengths, 32, generator) for _ in range(2)]
    for batches in epochs:
        assert len(batches) == -(-1000 // 32)
        assert sorted(torch.cat(batches).tolist()) == list(range(1000))
    assert not torch.equal(torch.cat(epochs[0]), torch.cat(epochs[1]))  # reshuffled
    padded = sum(int(lengths[b].max()) * len(b) for b in epochs[0])
    shuffled = torch.randperm(1000, generator=generator).split(32)
    padded_shuffled = sum(int(lengths[b].max()) * len(b) for b in shuffled)
    assert padded < 0.75 * padded_shuffled, (padded, padded_shuffled)


@pytest.mark.parametrize("name", ["onecycle", "cosine"])
def test_schedules_warm_up_then_anneal(name):
    from automl.child.recipe import make_schedule

    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    schedule = make_schedule(name, optimizer, 0.01, total_steps=100)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    peak = int(np.argmax(rates))
    assert 0 < peak < 40 and max(rates) == pytest.approx(0.01, rel=0.05)
    assert rates[0] < 0.5 * max(rates) and rates[-1] < 0.05 * max(rates)


@pytest.mark.parametrize("name", ["onecycle", "cosine"])
def test_schedules_take_a_single_step_and_leave_rmsprop_without_momentum(name):
    from automl.child.recipe import make_optimizer, make_schedule

    optimizer = make_optimizer("rmsprop", [torch.nn.Parameter(torch.zeros(1))], 0.01, 0.0)
    schedule = make_schedule(name, optimizer, 0.01, total_steps=1)
    optimizer.step()
    schedule.step()
    assert np.isfinite(optimizer.param_groups[0]["lr"])
    assert optimizer.param_groups[0]["momentum"] == 0


def test_a_plateau_stops_training_in_the_second_half_and_keeps_the_best_epoch():
    data = load_dataset("digits")
    arch = {
        **{"family": "rnn", "layers": [{"units": 8}], "epochs": 10, "patience": 2},
        **{"lr": 1e-9, "schedule": "constant"},  # nothing is learnt: no epoch beats the first
    }
    result = train_child(arch, data, TrainConfig(seed=0))
    assert [h.epoch for h in result.history] == [1, 2, 3, 4, 5, 6]  # past half, 2 flat epochs
    assert result.best_epoch == 1 and result.dev_uar == result.history[0].dev_uar
    assert {h.kept_dev_uar for h in result.history} == {result.dev_uar}  # what ASHA is told
    assert split_uar(result.architecture, result.state_dict, data, "devel") == result.dev_uar
    assert result.architecture["hparams"]["patience"] == 2


def test_fused_layers_run_in_full_precision_under_bf16_autocast():
    """bf16 autocast has no loss scaler, so the fused RNN must not run in fp16 there."""
    from automl.child.rnn import FusedLayer

    layer = FusedLayer("gru", 8, 16, bidirectional=True)
    x, lengths = torch.randn(3, 5, 8, requires_grad=True), torch.tensor([5, 3, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, last = layer(torch.nn.functional.linear(x, torch.eye(8)), lengths)
    assert out.dtype == last.dtype == torch.float32
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
