"""What each child asks Ray for (`--trial-resource`, with and without a condition): the
rules on their own, without Ray. That Ray places children by them is tested on a real
two-node cluster in test_cluster.py."""

from __future__ import annotations

import pytest

from automl.child import build_model, count_parameters
from automl.search.placement import ChildResources, parse_rules, space_fields
from automl.search.space import load_space
from runtime.errors import UserError

SPACE = load_space("gru_hparams")


def _child(units: list[int], **choices) -> dict:
    values = {d.name: d.choices[0] for d in SPACE.decisions}
    for i, width in enumerate(units):
        values[f"block.{i}.units"] = width
    return SPACE.to_architecture({**values, **choices})


def _resources(*rules: str, cpus: float = 1.0, gpus: float = 0.0) -> ChildResources:
    return ChildResources(cpus, gpus, parse_rules(rules), n_features=13, n_classes=3)


def test_without_conditions_every_child_asks_the_same():
    resources = _resources("a100=1", cpus=2, gpus=0.5)
    for units in ([40, 0, 0], [200, 200, 200]):
        assert resources.for_child(_child(units)) == {"CPU": 2, "GPU": 0.5, "a100": 1}


def test_a_condition_on_the_parameter_count_splits_children_by_size():
    small, large = _child([40, 0, 0]), _child([200, 200, 200])
    counts = [count_parameters(build_model(a, 13, 3)) for a in (small, large)]
    assert counts[0] < 50_000 < counts[1]
    resources = _resources("GPU=0.5 if params >= 5e4")
    assert resources.for_child(small) == {"CPU": 1}  # no zero amounts asked of Ray
    assert resources.for_child(large) == {"CPU": 1, "GPU": 0.5}
    assert resources.facts(small)["params"] == str(counts[0])


def test_conditions_on_architecture_fields_and_later_rules_win():
    resources = _resources(
        "big=1 if layers.count >= 2",
        "GPU=0 if hparams.batch_size == 16",  # keeps these off --gpus-per-trial's GPU
        "fast=1 if bidirectional == true",  # booleans as users write them
        "cpu=2 if layers.count >= 3",  # Ray's own CPU, whatever the case
        "deep=1 if layers.2.units > 0",  # a child without that layer: false, not an error
        gpus=1,
    )
    one = _child([40, 0, 0], batch_size=16)
    assert resources.for_child(one) == {"CPU": 1}
    three = _child([40, 80, 120], bidirectional=True, batch_size=32)
    assert resources.for_child(three) == {"CPU": 2, "GPU": 1, "big": 1, "fast": 1, "deep": 1}


def test_every_request_a_child_can_make_is_listed_with_the_options_that_make_it():
    resources = _resources("a100=1", "GPU=1 if params >= 1e6", cpus=2)
    assert resources.requests() == [
        ("--cpus-per-trial 2 --gpus-per-trial 0 --trial-resource a100=1", {"CPU": 2, "a100": 1}),
        ("--trial-resource 'GPU=1 if params >= 1e6'", {"CPU": 2, "GPU": 1, "a100": 1}),
    ]


def test_the_space_tells_which_fields_a_condition_may_name():
    known = space_fields(SPACE)
    assert {"layers.2.units", "layers.count", "hparams.lr", "bidirectional"} <= known
    _resources("x=1 if layers.2.units >= 80").check_fields(known)
    with pytest.raises(UserError) as refused:
        _resources("x=1 if layers.3.units >= 80").check_fields(known)
    assert "no child has a field 'layers.3.units'" in str(refused.value)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("a100", "expected NAME=AMOUNT or 'NAME=AMOUNT if CONDITION'"),
        ("a100=0", "a100=0: expected a number > 0"),
        ("CPU=2", "CPU: use --cpus-per-trial"),
        ("a100=1 if params", "expected a condition FIELD OP VALUE"),
        ("a100=1 if params >= many", ">= compares numbers, got 'many'"),
    ],
)
def test_a_malformed_rule_is_one_line_naming_it(rule, message):
    with pytest.raises(UserError) as refused:
        parse_rules([rule])
    assert message in str(refused.value)
