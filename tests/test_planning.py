"""The reward model, planning with it (Dyna), local search, and warm starts."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import hidden_target, told_rewards

from automl.child import arch_key
from automl.search.ledger import SearchLoop
from automl.search.searchers import SEARCHERS, Status, make_searcher
from automl.search.searchers.model import Encoding, make_model
from automl.search.searchers.planning import Planner, PlanningOptions
from automl.search.space import load_space, parse_space

RL = ("reinforce", "qlearning", "dqn")
# the DQN's defaults cost more than a test needs (the defaults are measured in
# benchmarks/searcher_efficiency.py); the mechanism is the same at these sizes
FAST = {"dqn": {"gradient_steps": 10, "candidates": 32, "mutations": 32, "dream": 16}}


def _random_rows(space, n, seed=0):
    rng = np.random.default_rng(seed)
    return [{d.name: d.choices[rng.integers(len(d.choices))] for d in space.decisions}
            for _ in range(n)]  # fmt: skip


# -- the model ----------------------------------------------------------------------------


def test_the_encoding_is_one_hot_of_the_active_decisions_only():
    space = load_space("seed_gru")
    values = {d.name: d.choices[0] for d in space.decisions}  # layers 2-5 absent (0 units)
    x = Encoding(space)([values])[0]
    active = sum(space.active_mask(values))
    assert x.shape == (sum(space.sizes),) and x.sum() == active < len(space.decisions)
    changed = {**values, "block.3.activation": space.decisions[-1].choices[-1]}  # inactive
    assert (Encoding(space)([changed])[0] == x).all()


@pytest.mark.parametrize("kind", ["gp", "ensemble", "forest"])
def test_each_model_ranks_unseen_children_and_is_deterministic(kind):
    space = load_space("seed_gru")
    reward = hidden_target(space)
    rows = _random_rows(space, 160)
    x, y = Encoding(space)(rows), np.array([reward(v) for v in rows])
    a, b = make_model(kind), make_model(kind)
    a.fit(x[:100], y[:100], np.zeros(100, bool), seed=3)
    b.fit(x[:100], y[:100], np.zeros(100, bool), seed=3)
    mean, std = a.predict(x[100:])
    assert np.corrcoef(mean, y[100:])[0, 1] > 0.6 and (std >= 0).all()
    assert np.array_equal(mean, b.predict(x[100:])[0])
    draws = [a.draw(x[100:], np.random.default_rng(s)) for s in range(2)]
    assert draws[0].shape == mean.shape and np.corrcoef(draws[0], y[100:])[0, 1] > 0.3


@pytest.mark.parametrize("kind", ["gp", "ensemble"])
def test_a_child_stopped_early_is_a_lower_bound_not_a_value(kind):
    """A partial reward below what the model expects leaves the estimate; above, raises it."""
    space = load_space("gru_hparams")
    rows = _random_rows(space, 40)
    x = Encoding(space)(rows)
    y = np.full(40, 0.8)
    y[0] = 0.1  # one child stopped early at 0.1: an underestimate, the rest say 0.8
    model = make_model(kind)
    lower = np.zeros(40, bool)
    lower[0] = True
    model.fit(x, y, lower, seed=0)
    partial = model.predict(x[:1])[0][0]
    model.fit(x, y, np.zeros(40, bool), seed=0)  # the same 0.1 as a finished child's value
    finished = model.predict(x[:1])[0][0]
    assert partial > finished + 0.1


# -- planning -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", RL)
def test_with_its_model_each_rl_searcher_finds_the_optimum_far_sooner(name):
    space = load_space("seed_gru")
    reward = hidden_target(space)
    best = {}
    for model in ("gp", "none"):
        found = []
        for seed in range(2):
            searcher = make_searcher(name, space, seed, model=model, **FAST.get(name, {}))
            searcher.set_budget(100)
            found.append(max(told_rewards(searcher, reward, 40)))
        best[model] = np.mean(found)
    assert best["gp"] >= 0.85 and best["gp"] > best["none"] + 0.15, best


@pytest.mark.parametrize("name", RL)
def test_what_is_imagined_never_becomes_a_child_and_nothing_trains_twice(name):
    """Through the search's own loop: every proposal the ledger sees is one ``ask`` handed
    out (the imagined children are not asked), and none repeats a child already trained."""
    space = load_space("gru_hparams")
    reward = hidden_target(space)
    searcher = make_searcher(name, space, 0, **FAST.get(name, {}))
    loop = SearchLoop(searcher, space, 40, ("test",))
    in_flight = []
    while (record := loop.next_child()) is not None or in_flight:
        if record is not None:
            in_flight.append(record)
        if record is None or len(in_flight) == 3:  # three in flight, told oldest first
            done = in_flight.pop(0)
            values = space.values_of(done.architecture)
            loop.child_finished(done.trial, reward(values), 1.0)
    assert searcher.planner.active and len(searcher.planner.told) == 40
    assert searcher.next_id == len(loop.records) == 40 and loop.cached == 0


def test_a_small_space_exhausted_is_proposed_again_rather_than_never():
    space = parse_space(
        {"family": "rnn", "fixed": {"cell": "gru"},
         "layers": {"count": 1, "units": [8, 16], "activation": ["tanh", "relu"]}},
        "tiny",
    )  # fmt: skip
    searcher = make_searcher("reinforce", space, 0, warmup=2)
    loop = SearchLoop(searcher, space, 10, ("test",), max_duplicates=5)
    while (record := loop.next_child()) is not None:
        loop.child_finished(record.trial, float(record.architecture["layers"][0]["units"]), 1.0)
    assert loop.trained == 4 and loop.converged  # all four children, then repeats


def test_a_resumed_model_based_search_proposes_what_the_uninterrupted_one_would():
    space = load_space("seed_gru")
    reward = hidden_target(space)
    for name in RL:
        a = make_searcher(name, space, 5, **FAST.get(name, {}))
        told_rewards(a, reward, 15)
        saved = io.BytesIO()  # as a resumed search reads it: a copy, weights only
        torch.save(a.state_dict(), saved)
        saved.seek(0)
        b = make_searcher(name, space, 5, **FAST.get(name, {}))
        b.load_state_dict(torch.load(saved, weights_only=True))
        assert b.planner.active
        assert told_rewards(a, reward, 5) == told_rewards(b, reward, 5), name


def _planner_told(space, rows, rewards, **options):
    planner = Planner(space, PlanningOptions(**options), seed=0)
    for values, reward in zip(rows, rewards, strict=True):
        planner.observe(values, reward, Status.COMPLETE, repeated=False)
    return planner


def test_the_model_fits_the_order_of_the_rewards_not_their_scale():
    """The copula warp (the default): a monotone change of the rewards (a cube and a
    shift) changes no estimate and so no proposal; without it the same change does. What
    is imagined comes back on the rewards' own scale, inside the told range."""
    space = load_space("seed_gru")
    reward = hidden_target(space)
    rows, candidates = _random_rows(space, 40), _random_rows(space, 200, seed=1)
    raw = np.array([reward(v) for v in rows])
    cubed = raw**3 - 5
    x = Encoding(space)(candidates)

    def ranking(planner):
        return np.argsort(planner.model.predict(x)[0], kind="stable")

    warped = [_planner_told(space, rows, y) for y in (raw, cubed)]
    assert np.array_equal(ranking(warped[0]), ranking(warped[1]))
    plain = [_planner_told(space, rows, y, warp="none") for y in (raw, cubed)]
    assert not np.array_equal(ranking(plain[0]), ranking(plain[1]))
    imagined = warped[1].imagine(candidates, np.random.default_rng(0))
    assert cubed.min() <= imagined.min() and imagined.max() <= cubed.max()
    assert np.corrcoef(imagined, [reward(v) for v in candidates])[0, 1] > 0.3


def test_children_in_flight_count_as_told_at_the_models_estimate():
    """The kriging believer: a child in flight leaves the model's estimates where they
    were but takes away its uncertainty there, so the next proposal goes elsewhere;
    ``in_flight=ignore`` proposes as if nothing ran."""
    space = load_space("seed_gru")
    reward = hidden_target(space)
    rows, candidates = _random_rows(space, 40), _random_rows(space, 200, seed=1)
    rewards = [reward(v) for v in rows]
    planner = _planner_told(space, rows, rewards)
    first = planner.pick(candidates)
    believer = planner._believer([candidates[first]])
    x = Encoding(space)(candidates)
    (mean, std), (mean_b, std_b) = planner.model.predict(x), believer.predict(x)
    assert std_b[first] < 0.5 * std[first] and np.corrcoef(mean, mean_b)[0, 1] > 0.95
    assert planner.pick(candidates, [candidates[first]]) != first
    ignoring = _planner_told(space, rows, rewards, in_flight="ignore")
    assert ignoring.pick(candidates, [candidates[first]]) == first


def test_model_none_is_the_model_free_agent():
    space = load_space("gru_hparams")
    searcher = make_searcher("qlearning", space, 0, model="none")
    told_rewards(searcher, hidden_target(space), 20)
    assert not searcher.planner.active and searcher.planner.model is None


# -- local search -------------------------------------------------------------------------


def test_local_search_climbs_to_the_optimum_of_a_smooth_reward():
    space = load_space("gru_hparams")
    reward = hidden_target(space)
    searcher = make_searcher("local", space, 0, start=5)
    rewards = told_rewards(searcher, reward, 150)
    assert max(rewards) == 1.0
    assert searcher.centre is not None


def test_local_search_restarts_at_a_local_optimum():
    """On a reward with one best child and a flat rest, the first centre's neighbourhood
    holds nothing better: once it is told, local search starts again at random."""
    space = parse_space(
        {"family": "rnn", "fixed": {"cell": "gru"}, "choices": {"lr": [0.001, 0.003, 0.01]},
         "layers": {"count": 2, "units": [0, 8, 16], "activation": ["tanh", "relu"]}},
        "flat",
    )  # fmt: skip
    searcher = make_searcher("local", space, 0, start=2)
    told_rewards(searcher, lambda v: 0.5, 2)
    first = searcher.centre
    neighbours = {arch_key(space.to_architecture(v)) for v in space.neighbours(first[0])}
    proposals = [searcher.ask() for _ in range(len(searcher.queue))]
    keys = {arch_key(space.to_architecture(p.values)) for p in proposals}
    assert keys <= neighbours  # the neighbourhood first
    for p in proposals:
        searcher.tell(p.id, 0.5)
    searcher.ask()
    assert searcher.centre is None  # a local optimum: a restart


# -- warm start ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_every_searcher_takes_a_warm_start_and_goes_on(name):
    space = load_space("gru_hparams")
    reward = hidden_target(space)
    earlier = [(v, reward(v), Status.COMPLETE) for v in _random_rows(space, 12, seed=9)]
    searcher = make_searcher(name, space, 0, **FAST.get(name, {}))
    searcher.warm_start(earlier)
    assert searcher.n_told == 12 and not searcher.pending
    assert searcher.best_reward == max(r for _, r, _ in earlier)
    told_rewards(searcher, reward, 5)


@pytest.mark.parametrize("name", RL)
def test_a_warm_started_searcher_reaches_a_reward_in_fewer_children(name):
    space = load_space("seed_gru")
    reward = hidden_target(space)
    earlier = make_searcher("random", space, 77)
    told = [(v, reward(v), Status.COMPLETE) for v in (earlier.ask().values for _ in range(40))]

    def children_to(goal, warm):
        searcher = make_searcher(name, space, 0, **FAST.get(name, {}))
        if warm:
            searcher.warm_start(told)
        for n in range(1, 61):
            if told_rewards(searcher, reward, 1)[0] >= goal:
                return n
        return 61

    assert children_to(0.8, warm=True) < children_to(0.8, warm=False)


def test_an_architecture_reads_back_as_the_values_that_build_it():
    for name in ("seed_gru", "cnn", "gru_hparams"):
        space = load_space(name)
        for values in _random_rows(space, 30):
            arch = space.to_architecture(values)
            assert space.to_architecture(space.values_of(arch)) == arch
    other = load_space("cnn").to_architecture(_random_rows(load_space("cnn"), 1)[0])
    assert load_space("seed_gru").values_of(other) is None
