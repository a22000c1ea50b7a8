"""Search spaces, the searchers' ask/tell protocol and state, and the controller's learning."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
import yaml
from conftest import hidden_target, told_rewards

from automl.search.ledger import CACHED, DONE, SearchLoop
from automl.search.searchers import SEARCHERS, Status, make_searcher, searcher_class
from automl.search.space import builtin_names, load_space, parse_space
from runtime.cli import build_config, parse_overrides
from runtime.errors import UserError


def test_seed_gru_is_the_reference_space():
    space = load_space("search_spaces/seed_gru.yaml")
    units = [d for d in space.decisions if d.name.endswith(".units")]
    acts = [d for d in space.decisions if d.name.endswith(".activation")]
    assert len(units) == len(acts) == 5
    assert units[0].choices == (40, 80, 120, 160, 200)  # at least one layer
    assert all(d.choices == (0, 40, 80, 120, 160, 200) for d in units[1:])
    assert all(d.choices == ("tanh", "relu", "sigmoid") for d in acts)
    values = {d.name: d.choices[0] for d in space.decisions}
    arch = space.to_architecture(values)
    assert arch["cell"] == "gru" and len(arch["layers"]) == 1  # later layers have 0 units
    assert not space.is_active(acts[1], values)  # an absent layer's activation is no decision


def test_all_builtin_spaces_load():
    assert {"seed_gru", "cnn", "gru_hparams"} <= set(builtin_names())
    hp = load_space("gru_hparams")
    names = {d.name for d in hp.decisions}
    assert {"lr", "batch_size", "dropout"} <= names
    arch = hp.to_architecture({d.name: d.choices[-1] for d in hp.decisions})
    assert arch["hparams"]["lr"] == 0.01 and arch["hparams"]["batch_size"] == 64


@pytest.mark.parametrize(
    "text,message",
    [
        (
            "family: rnn\nlayers: {count: 2, units: [8]}\ncolour: red\n",
            r"unknown key\(s\) \['colour'\]",
        ),
        ("family: rnn\nlayers: {count: 2, units: []}\n", "empty choices"),
        ("family: rnn\nlayers: {count: two, units: [8]}\n", "layers.count must be an integer"),
        ("family: rnn\nlayers: {count: 2, units: [8, big]}\n", "units"),
        ("family: rnn\nlayers: {count: 2, units: [8]}\nchoices: {lr: 0.1}\n", "expected a list"),
        ("family: rnn\nlayers: {count: 2, units: [8], activation: [swish]}\n", "activation"),
        ("family: tree\n", "family must be"),
        ("family: rnn\nlayers: [1, 2\n", "YAML syntax error"),
        (
            "family: rnn\nblocks: {count: 1, filters: [8]}\nlayers: {count: 1, units: [8]}\n",
            "blocks",
        ),
    ],
)
def test_invalid_space_files(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as info:
        load_space(str(path))
    assert str(path) in str(info.value)


def test_missing_space_file():
    with pytest.raises(UserError, match="file not found"):
        load_space("no_such_space")


def test_unknown_searcher():
    with pytest.raises(UserError, match="unknown --searcher 'bayes'"):
        make_searcher("bayes", load_space("seed_gru"))


def test_controller_converges_to_hidden_target_far_faster_than_random():
    """Reward = share of decisions equal to a hidden target architecture. The controller
    alone (``model=none``): with its model it never repeats a child, so the late mean is
    not what converging looks like there (tests/test_planning.py measures that)."""
    space = load_space("seed_gru")
    reward = hidden_target(space)
    late = {}
    for name, options in (("reinforce", {"model": "none"}), ("random", {})):
        searchers = [make_searcher(name, space, seed, **options) for seed in range(2)]
        late[name] = np.mean([np.mean(told_rewards(s, reward, 250)[-50:]) for s in searchers])
    assert late["reinforce"] > 0.85
    assert late["random"] < 0.4
    assert late["reinforce"] > 2 * late["random"]


def test_propose_is_given_the_id_ask_numbers_the_proposal_with():
    """A subclass keys what it keeps by the id it is handed; it never counts ids itself,
    and a restored searcher goes on numbering where the saved one stopped."""
    from automl.search.searchers.random import RandomSearcher

    class Recording(RandomSearcher):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.given: list[int] = []

        def _propose(self, proposal_id):
            self.given.append(proposal_id)
            return super()._propose(proposal_id)

    space = load_space("seed_gru")
    searcher = Recording(space, 0)
    proposals = [searcher.ask() for _ in range(3)]
    assert searcher.given == [p.id for p in proposals] == [0, 1, 2]
    searcher.tell(proposals[1].id, 0.5)
    restored = Recording(space, 0)
    restored.load_state_dict(searcher.state_dict())  # 0 and 2 were pending: asked again
    assert restored.ask().id == 3 and restored.given == [3]


def test_controller_updates_asynchronously_in_any_order():
    space = load_space("seed_gru")
    searcher = make_searcher("reinforce", space, 0, batch_size=3)
    proposals = [searcher.ask() for _ in range(5)]
    metrics = [searcher.tell(p.id, 0.1 * i) for i, p in reversed(list(enumerate(proposals)))]
    assert [bool(m) for m in metrics] == [False, False, True, False, False]
    assert {"controller/mean_reward", "controller/baseline", "controller/entropy"} <= set(
        metrics[2]
    )


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_state_round_trip_continues_identically(name):
    """Save mid-search (through torch.save / weights_only load), restore, and continue."""
    space = load_space("gru_hparams")
    reward = hidden_target(space)
    a = make_searcher(name, space, 7)
    told_rewards(a, reward, 12)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = make_searcher(name, space, 99)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    if name == "tpe":  # Optuna's sampler has its own stream; the history must carry over
        assert len(b.study.trials) == len(a.study.trials) == 12
        assert b.best_reward == a.best_reward
        return
    assert told_rewards(a, reward, 10) == told_rewards(b, reward, 10)


START_SPACE = """
family: rnn
choices: {lr: [0.001, 0.003], subsample: [1, 3]}
layers: {count: 3, min: 1, units: [0, 40, 120], activation: [tanh, relu]}
start_with:
  - lr: 0.003
    subsample: 1
    layers: [{units: 120, activation: tanh}, {units: 120, activation: tanh}]
  - {lr: 0.001, subsample: 3, layers: [{units: 40, activation: relu}]}
"""


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_a_searcher_proposes_the_spaces_start_children_first_and_learns_from_them(name):
    """The space's ``start_with`` children come first, in order, as full assignments (the
    blocks left out absent); the searcher is told them like its own, and a state saved
    between them (torch.save, weights_only load) still holds the one not yet proposed."""
    space = parse_space(yaml.safe_load(START_SPACE), "start.yaml")
    first, second = space.start_with
    assert space.to_architecture(first)["layers"] == [{"units": 120, "activation": "tanh"}] * 2
    assert len(space.to_architecture(second)["layers"]) == 1
    searcher = make_searcher(name, space, 0)
    searcher.enqueue(*space.start_with)
    asked = searcher.ask()
    assert asked.values == first
    buffer = io.BytesIO()
    torch.save(searcher.state_dict(), buffer)
    buffer.seek(0)
    restored = make_searcher(name, space, 0)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    searcher.tell(asked.id, 0.9)
    assert searcher.best_reward == 0.9 and searcher.n_told == 1
    assert searcher.ask().values == restored.ask().values == second
    assert searcher.state_dict()["queued"] == []  # the searcher's own proposals from here


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{subsample: 1, layers: [{units: 120}]}", r"start_with\[0\].lr: no value"),
        ("{lr: 0.1, subsample: 1, layers: [{units: 40}]}", r"start_with\[0\].lr: 0.1; one of"),
        (
            "{lr: 0.001, subsample: 1, layers: [{units: 80, activation: tanh}]}",
            r"start_with\[0\].layers\[0\].units: 80; one of \[40, 120\]",
        ),
        (
            "{lr: 0.001, subsample: 1, cell: lstm, layers: [{units: 40, activation: tanh}]}",
            r"\['cell'\] not decided by the space",
        ),
        ("{lr: 0.001, subsample: 1, layers: [{units: 40, activation: tanh}]}", None),
        ("{lr: 0.001, subsample: 1, layers: [{}, {}, {}, {}]}", "a list of at most 3"),
        ("{lr: 0.001, subsample: 1}", r"start_with\[0\].layers\[0\].units: left out; one of"),
    ],
)
def test_a_start_child_the_space_cannot_build_is_refused_naming_its_field(entry, message):
    text = START_SPACE.split("start_with:")[0] + f"start_with:\n  - {entry}\n"
    if message is None:  # a layer's activation only where it is present: the rest absent
        assert len(parse_space(yaml.safe_load(text), "s.yaml").start_with) == 1
        return
    with pytest.raises(UserError, match=message):
        parse_space(yaml.safe_load(text), "s.yaml")


@pytest.mark.parametrize("name", ["evolution", "tpe"])
def test_baselines_improve_on_random(name):
    space = load_space("seed_gru")
    reward = hidden_target(space, seed=5)
    ours = np.mean(
        [np.mean(told_rewards(make_searcher(name, space, s), reward, 150)[-50:]) for s in range(2)]
    )
    rand = np.mean(
        [
            np.mean(told_rewards(make_searcher("random", space, s), reward, 150)[-50:])
            for s in range(2)
        ]
    )
    assert ours > rand + 0.1


def test_loop_never_trains_an_identical_child_twice():
    """Duplicates are told their original's result and use no budget; a searcher that only
    proposes children it already has ends the search as converged."""
    space = parse_space({"family": "rnn", "layers": {"count": 1, "units": [8, 16]}}, "tiny")
    searcher = make_searcher("random", space, 0)
    loop = SearchLoop(searcher, space, budget=6, identity=("data", 0), max_duplicates=5)
    trained = []
    while (record := loop.next_child()) is not None:
        trained.append(record)
        loop.child_finished(
            record.trial,
            dev_uar=record.architecture["layers"][0]["units"] / 100,
            seconds=1.0,
            mlflow_run_id=f"run{record.trial}",
        )
    assert len(trained) == loop.trained == 2  # only two distinct architectures exist
    assert loop.converged and loop.duplicates_in_a_row == 5
    assert loop.searcher.n_told == len(loop.records) == 2 + loop.cached
    assert [r.status for r in loop.records].count(CACHED) == loop.cached >= 5
    for r in loop.records:
        original = next(t for t in trained if t.key == r.key)
        assert (r.dev_uar, r.mlflow_run_id) == (original.dev_uar, original.mlflow_run_id)
        assert r.duplicate_of == (None if r is original else original.trial)
    assert loop.best().dev_uar == 0.16 and loop.best().status == DONE


def test_duplicates_use_no_budget():
    space = parse_space({"family": "rnn", "layers": {"count": 1, "units": [8, 16, 32]}}, "three")
    loop = SearchLoop(make_searcher("random", space, 3), space, budget=3, identity=("d", 0))
    while (record := loop.next_child()) is not None:
        loop.child_finished(record.trial, 0.5, 1.0)
    assert loop.trained == loop.completed == 3 and not loop.converged  # every child trained
    assert len(loop.records) == 3 + loop.cached


def test_loop_duplicate_of_an_in_flight_child_waits_for_it():
    space = parse_space({"family": "rnn", "layers": {"count": 1, "units": [8]}}, "one")
    searcher = make_searcher("random", space, 0)
    loop = SearchLoop(searcher, space, budget=3, identity=("d", 0), max_duplicates=2)
    first = loop.next_child()
    assert loop.next_child() is None  # the next two are copies of the one in flight
    assert loop.searcher.n_told == 0 and loop.converged
    loop.child_finished(first.trial, 0.5, 2.0, "run0")
    assert [r.status for r in loop.records] == [DONE, CACHED, CACHED]
    assert loop.searcher.n_told == 3


def test_command_line_lists_every_searcher_from_the_registry(capsys):
    from automl.cli import main

    with pytest.raises(SystemExit):
        main(["search", "--help"])
    usage = capsys.readouterr().out
    for name in SEARCHERS:
        assert name in usage
        assert searcher_class(name).name == name  # each entry loads the class it names


# -- failure is a state each searcher interprets -----------------------------------------


def _fail_first_then(searcher, n: int = 3):
    """Ask n proposals; the first fails, the others score 0.5. Returns the failed one's values."""
    proposals = [searcher.ask() for _ in range(n)]
    searcher.tell(proposals[0].id, None, Status.FAILED)
    for p in proposals[1:]:
        searcher.tell(p.id, 0.5)
    return proposals[0].values


def test_tell_refuses_a_reward_that_contradicts_its_status():
    searcher = make_searcher("random", load_space("seed_gru"), 0)
    p, q = searcher.ask(), searcher.ask()
    with pytest.raises(ValueError):
        searcher.tell(p.id, None)  # a completed child needs its reward
    with pytest.raises(ValueError):
        searcher.tell(q.id, 0.0, Status.FAILED)  # a failure is not a number


def test_tpe_records_a_failure_as_a_failed_trial_not_as_zero():
    from optuna.trial import TrialState

    searcher = make_searcher("tpe", load_space("seed_gru"), 0)
    _fail_first_then(searcher)
    states = [t.state for t in searcher.study.trials]
    assert states == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert searcher.study.trials[0].value is None
    restored = make_searcher("tpe", load_space("seed_gru"), 1)
    restored.load_state_dict(searcher.state_dict())
    assert [t.state for t in restored.study.trials] == states


def test_evolution_leaves_a_failed_child_out_of_its_population():
    searcher = make_searcher("evolution", load_space("seed_gru"), 0, population=4, sample=2)
    failed = _fail_first_then(searcher)
    assert len(searcher.population) == 2
    assert all(values != failed for values, _ in searcher.population)
    assert searcher.n_failed == 1 and searcher.best_reward == 0.5


@pytest.mark.parametrize("failure_reward", [0.0, 0.25])
def test_reinforce_learns_its_configured_failure_reward(failure_reward):
    searcher = make_searcher(
        "reinforce", load_space("seed_gru"), 0, batch_size=8, failure_reward=failure_reward
    )
    _fail_first_then(searcher)
    assert [r for _, r, _ in searcher.buffer] == [failure_reward, 0.5, 0.5]


def test_random_search_counts_a_failure_and_nothing_else():
    searcher = make_searcher("random", load_space("seed_gru"), 0)
    _fail_first_then(searcher)
    assert (searcher.n_told, searcher.n_failed, searcher.best_reward) == (3, 1, 0.5)


# -- a saved state fits only the searcher, space and options it came from ----------------


EDITED = {"family": "rnn", "layers": {"count": 2, "units": [8, 16], "activation": ["tanh"]}}


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_state_refuses_another_space(name):
    space = parse_space(EDITED, "space")
    saved = make_searcher(name, space, 0).state_dict()
    edited = parse_space({**EDITED, "layers": {**EDITED["layers"], "units": [8, 32]}}, "space")
    with pytest.raises(
        UserError, match=r"space changed.*block.0.units.choices: \[8, 16\] -> \[8, 32\]"
    ):
        make_searcher(name, edited, 0).load_state_dict(saved)


def test_state_refuses_another_searcher_and_other_options():
    space = load_space("seed_gru")
    saved = make_searcher("reinforce", space, 0, lr=0.01).state_dict()
    with pytest.raises(UserError, match="state is of searcher 'reinforce', not 'evolution'"):
        make_searcher("evolution", space, 0).load_state_dict(saved)
    with pytest.raises(UserError, match=r"options differ.*lr: 0.01 -> 0.02"):
        make_searcher("reinforce", space, 0, lr=0.02).load_state_dict(saved)


# -- searcher options: typed, validated, defaults written once ---------------------------


@pytest.mark.parametrize(
    "name,items,message",
    [
        ("reinforce", ["lr=fast"], "--searcher-opt lr=fast: expected a number"),
        ("reinforce", ["colour=red"], "KEY one of baseline_decay, batch_size"),
        ("reinforce", ["batch_size=2.5"], "expected an integer"),
        ("evolution", ["population"], "expected KEY=VALUE"),
        ("random", ["lr=0.1"], "none: this config has no options"),
    ],
)
def test_searcher_options_are_checked_against_the_typed_config(name, items, message):
    with pytest.raises(UserError, match=re.escape(message)):
        parse_overrides(searcher_class(name).Config, items, "--searcher-opt")


@pytest.mark.parametrize("name", ["reinforce", "qlearning", "dqn"])
def test_a_planning_option_out_of_its_choices_is_one_line(name):
    message = "--searcher-opt: warp must be one of ['copula', 'none'], got 'log'"
    with pytest.raises(UserError, match=re.escape(message)):
        build_config(searcher_class(name).Config, {"warp": "log"}, "--searcher-opt")
    message = "--searcher-opt: in_flight must be one of ['believer', 'ignore'], got 'lie'"
    with pytest.raises(UserError, match=re.escape(message)):
        build_config(searcher_class(name).Config, {"in_flight": "lie"}, "--searcher-opt")


def test_searcher_options_parse_and_reach_the_searcher():
    cls = searcher_class("evolution")
    options = parse_overrides(cls.Config, ["population=6", "sample=2"], "--searcher-opt")
    assert options == {"population": 6, "sample": 2}
    searcher = make_searcher("evolution", load_space("seed_gru"), 0, **options)
    assert (searcher.config.population, searcher.config.sample) == (6, 2)
    with pytest.raises(UserError, match="sample <= population"):
        make_searcher("evolution", load_space("seed_gru"), 0, population=2, sample=3)


# -- the RL searchers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,options",
    [("qlearning", {"model": "none"}), ("dqn", {"model": "none", "gradient_steps": 10})],
)
def test_rl_searchers_learn_a_hidden_target_far_faster_than_random(name, options):
    """The agents alone (``model=none``); with their model, tests/test_planning.py."""
    space = load_space("seed_gru")
    reward = hidden_target(space)
    late = {}
    for searcher_name, opts in ((name, options), ("random", {})):
        runs = []
        for seed in range(2):
            searcher = make_searcher(searcher_name, space, seed, **opts)
            searcher.set_budget(250)
            runs.append(np.mean(told_rewards(searcher, reward, 250)[-50:]))
        late[searcher_name] = np.mean(runs)
    assert late[name] > 0.6 and late[name] > 2 * late["random"], late


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_searchers_take_results_in_any_order_with_failures(name):
    """Four children in flight, told in a shuffled order, one of each four failing and one
    stopped early (a partial reward: a lower bound)."""
    space = load_space("gru_hparams")
    reward = hidden_target(space)
    searcher = make_searcher(name, space, 0)
    searcher.set_budget(20)
    order = np.random.default_rng(0)
    for _ in range(5):
        proposals = [searcher.ask() for _ in range(4)]
        for i in order.permutation(4):
            p = proposals[i]
            if i == 0:
                searcher.tell(p.id, None, Status.FAILED)
            elif i == 1:
                searcher.tell(p.id, reward(p.values) / 2, Status.PARTIAL)
            else:
                searcher.tell(p.id, reward(p.values))
    assert (searcher.n_told, searcher.n_failed) == (20, 5)
    assert not searcher.pending and not getattr(searcher, "playing", {})
    assert 0 < searcher.best_reward <= 1
    searcher.ask()  # and it goes on
