"""The search ledger driven in-process (no Ray, no MLflow, no training): trial counts,
duplicates, the time budget, failed and stopped children, the best child and resuming,
each in milliseconds with real searchers and a toy reward."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
from optuna.trial import TrialState

from automl.search.ledger import CACHED, DONE, FAILED, STOPPED, Confirmation, SearchLoop
from automl.search.objective import Objective
from automl.search.searchers import SEARCHERS, make_searcher
from automl.search.sequential import DEADLINE_REASON, run_sequential
from automl.search.space import load_space, parse_space

IDENTITY = ("data", 0)  # (data fingerprint, seed): the same for every child here
OPTIONS = {"dqn": {"gradient_steps": 5}}  # fewer steps per child: milliseconds, still learning


class FakeClock:
    """The loop's clock: time moves only when a child says it trained."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def toy_uar(arch: dict[str, Any]) -> float:
    """Wider first layers and a learning rate near 0.003 score higher (in [0, 1])."""
    units = arch["layers"][0]["units"] / 200
    lr = arch["hparams"].get("lr", 0.003)
    return round(0.5 * units + 0.5 / (1 + abs(lr - 0.003) * 300), 6)


def hparam_loop(searcher: str = "random", budget: int = 6, seed: int = 0, **kwargs) -> SearchLoop:
    """A loop over the many distinct children of ``gru_hparams`` (duplicates are rare)."""
    space = load_space("gru_hparams")
    made = make_searcher(searcher, space, seed, **OPTIONS.get(searcher, {}))
    return SearchLoop(made, space, budget, IDENTITY, **kwargs)


def test_the_search_stops_at_its_trial_count():
    loop = hparam_loop(budget=7)
    seen = []

    def evaluate(trial: int, arch: dict[str, Any]) -> float:
        seen.append(trial)
        return toy_uar(arch)

    run_sequential(loop, evaluate)
    assert seen == [r.trial for r in loop.records if r.duplicate_of is None]
    assert loop.trained == loop.completed == len(seen) == 7
    assert loop.ended == "trials" and not loop.converged and not loop.out_of_time
    assert loop.running == 0 and loop.next_child() is None  # nothing more to hand out
    assert loop.searcher.n_told == len(loop.records) == 7 + loop.cached
    assert [r.trial for r in loop.records] == list(range(len(loop.records)))
    for r in loop.records:
        assert r.status in (DONE, CACHED) and r.reward == r.dev_uar == toy_uar(r.architecture)


def test_duplicates_are_told_again_without_budget_and_a_run_of_them_converges():
    space = parse_space({"family": "rnn", "layers": {"count": 1, "units": [8, 16]}}, "two")
    loop = SearchLoop(make_searcher("evolution", space, 0, population=2, sample=1), space,
                      budget=10, identity=IDENTITY, max_duplicates=4)  # fmt: skip
    trained = []

    def evaluate(trial: int, arch: dict[str, Any]) -> float:
        trained.append(trial)
        return arch["layers"][0]["units"] / 100

    run_sequential(loop, evaluate)
    assert len(trained) == loop.trained == 2  # only two distinct children exist
    assert loop.converged and loop.ended == "converged" and loop.duplicates_in_a_row == 4
    copies = [r for r in loop.records if r.duplicate_of is not None]
    assert len(copies) == loop.cached >= 4 and all(r.status == CACHED for r in copies)
    for r in copies:
        original = loop.by_trial[r.duplicate_of]
        assert r.key == original.key and r.dev_uar == original.dev_uar and r.seconds == 0.0
    searcher = loop.searcher
    assert searcher.n_repeated == loop.cached and searcher.n_fresh == 2  # told, budget unused
    assert searcher.n_told == len(loop.records)


def test_duplicates_between_fresh_children_use_no_budget():
    space = parse_space({"family": "rnn", "layers": {"count": 1, "units": [8, 16, 32]}}, "three")
    loop = SearchLoop(make_searcher("random", space, 3), space, budget=3, identity=IDENTITY)
    calls = []
    run_sequential(loop, lambda trial, arch: calls.append(trial) or 0.5)
    assert len(calls) == loop.trained == 3 and loop.cached > 0 and not loop.converged
    assert len(loop.records) == 3 + loop.cached and loop.ended == "trials"


def test_the_time_budget_ends_the_search_with_no_sleeping():
    clock = FakeClock()
    loop = hparam_loop(budget=100, deadline=clock() + 3.5, clock=clock)

    def evaluate(trial: int, arch: dict[str, Any]) -> float:
        clock.advance(1.0)  # each child trains one (fake) second
        return toy_uar(arch)

    run_sequential(loop, evaluate)
    assert loop.trained == 4  # started at 0, 1, 2 and 3 s; none at 4 s, past the deadline
    assert loop.out_of_time and loop.ended == "time budget" and not loop.converged
    assert all(r.status in (DONE, CACHED) for r in loop.records)
    assert [r.seconds for r in loop.records if r.duplicate_of is None] == [1.0] * 4


def test_a_child_that_keeps_its_last_epoch_is_told_its_last_figure_not_its_peak():
    """An annealed child reports each epoch's own dev UAR (the one it would keep if it
    ended there): a peak mid-schedule is not its figure."""
    loop = hparam_loop(budget=2)

    def evaluate(trial: int, arch: dict[str, Any]) -> list[float]:
        return [0.5, 0.9, 0.6]

    run_sequential(loop, evaluate)
    assert [(r.status, r.epochs, r.dev_uar) for r in loop.records] == [(DONE, 3, 0.6)] * 2


def test_a_child_running_past_the_deadline_and_its_grace_is_stopped_as_partial():
    """Children of three 0.5 s epochs; the deadline at 2 s, its grace until 2.5 s: the
    second child is stopped after its second epoch, told to TPE as a pruned trial."""
    clock = FakeClock(0.0)
    loop = hparam_loop("tpe", budget=10, deadline=2.0, clock=clock)

    def evaluate(trial: int, arch: dict[str, Any]):
        for epoch in range(1, 4):
            clock.advance(0.5)
            yield {"dev_uar": 0.1 * epoch + 0.01 * trial, "n_params": 1000 + trial}

    run_sequential(loop, evaluate, stop_at=2.5)
    first, second = loop.records
    assert (first.status, first.epochs, first.dev_uar) == (DONE, 3, pytest.approx(0.3))
    assert (second.status, second.epochs, second.error) == (STOPPED, 2, DEADLINE_REASON)
    assert second.dev_uar == second.reward == pytest.approx(0.21) and second.n_params == 1001
    assert loop.ended == "time budget"
    study = loop.searcher.study
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert study.trials[1].intermediate_values == {0: pytest.approx(0.21)}


def test_a_failed_child_is_recorded_failed_and_the_searcher_told_so():
    loop = hparam_loop("tpe", budget=4)

    def evaluate(trial: int, arch: dict[str, Any]) -> float:
        if trial == 1:
            raise RuntimeError("loss is NaN")
        return toy_uar(arch)

    run_sequential(loop, evaluate)
    failed = loop.by_trial[1]
    assert failed.status == FAILED and failed.error == "RuntimeError: loss is NaN"
    assert failed.dev_uar is None and failed.reward is None
    assert loop.trained == loop.completed == 4 and loop.ended == "trials"  # the search went on
    assert loop.searcher.n_failed == 1
    assert loop.searcher.study.trials[1].state == TrialState.FAIL
    assert loop.best() is not failed and loop.best().status == DONE


def test_an_early_stopped_child_is_recorded_stopped_and_never_the_best():
    """The rule stops, after epoch 1, every child below 0.75 there; a list's last epoch is
    its final result, so a one-epoch child is never stopped."""
    loop = hparam_loop("evolution", budget=8, seed=1)
    curves = {}

    def evaluate(trial: int, arch: dict[str, Any]) -> list[float]:
        start = toy_uar(arch)
        curves[trial] = [start, start + 0.1, start + 0.2] if trial < 6 else [start]
        return curves[trial]

    asked = []

    def hopeless(trial: int, epoch: int, best: float) -> bool:
        asked.append(trial)
        return best < 0.75

    run_sequential(loop, evaluate, early_stop=hopeless, stop_reason="stopped early (toy)")
    fresh = [r for r in loop.records if r.duplicate_of is None]
    stopped = [r for r in fresh if r.status == STOPPED]
    assert stopped and any(r.status == DONE for r in fresh)
    for r in stopped:
        assert r.error == "stopped early (toy)" and r.epochs == 1
        assert r.dev_uar == r.reward == curves[r.trial][0] < 0.75
    for r in fresh:
        if r.status == DONE:
            assert r.epochs == len(curves[r.trial]) and r.dev_uar == max(curves[r.trial])
    assert asked and all(trial < 6 for trial in asked)  # one-epoch children: never asked
    assert loop.best().status == DONE
    assert loop.searcher.n_told == len(loop.records) and loop.searcher.n_failed == 0


def test_the_best_child_is_the_finished_one_with_the_highest_objective():
    """uar-params: a narrow child of slightly lower dev UAR beats a wide one (dev UAR 0.82
    to 0.9 with the first layer's width, parameters its square)."""
    space = load_space("gru_hparams")
    objective = Objective("uar-params", target=1_000)
    loop = SearchLoop(make_searcher("random", space, 2), space, 12, IDENTITY, objective=objective)

    def evaluate(trial: int, arch: dict[str, Any]) -> dict[str, Any]:
        units = arch["layers"][0]["units"]
        return {"dev_uar": 0.8 + units / 2000, "n_params": units**2, "epochs": 5}

    run_sequential(loop, evaluate)
    done = [r for r in loop.records if r.status == DONE]
    best = loop.best()
    assert best.reward == max(r.reward for r in done)
    assert best.dev_uar < max(r.dev_uar for r in done)  # the trade-off changed the winner
    for r in done:
        assert r.reward == pytest.approx(objective.reward(r.dev_uar, {"n_params": r.n_params}))
        assert r.epochs == 5


def test_the_leaders_are_retrained_on_another_seed_and_the_best_has_the_best_mean():
    """Child 0 draws a lucky seed (0.95; 0.2 on its second), the others score 0.5 + 0.01 per
    trial: both leaders are confirmed after the budget, not told to the searcher nor
    counted, and the best is the later leader (one figure each), not the lucky one."""
    loop = hparam_loop(budget=10, confirmation=Confirmation(leaders=2))

    def evaluate(trial: int, arch: dict[str, Any]) -> float:
        leader = loop.by_trial[trial].confirms
        if leader is not None:
            return 0.2 if leader == 0 else 0.5 + 0.01 * leader
        return 0.95 if trial == 0 else 0.5 + 0.01 * trial

    run_sequential(loop, evaluate)
    searched = loop.searched
    second = max(r.trial for r in searched if r.trial != 0 and r.status == DONE)
    confirmations = loop.confirmations
    assert loop.trained == 10 and loop.searcher.n_told == 10 + loop.cached
    assert [r.confirms for r in confirmations] == [0, second]
    assert min(r.trial for r in confirmations) > max(r.trial for r in searched)
    for again in confirmations:
        leader = loop.by_trial[again.confirms]
        assert again.architecture == leader.architecture and again.key != leader.key
        assert again.status == DONE
    assert loop.best().trial == second
    assert loop.mean_dev_uar(loop.by_trial[0]) == pytest.approx((0.95 + 0.2) / 2)
    assert len(loop.seeds_of(loop.by_trial[0])) == 2 and loop.ended == "trials"

    restored = hparam_loop(budget=10, confirmation=Confirmation(leaders=2))
    restored.restore(loop.export())
    assert restored.best().trial == second and restored.next_child() is None


@pytest.mark.parametrize(
    ("lucky_again", "confirmed", "best"),
    [(0.85, [0], 0), (0.7, [0, 1], 1)],  # 0.875 > 0.86, 0.84; 0.8 < 0.86, then 0.85 > 0.84
)
def test_a_leader_whose_one_reward_is_below_the_best_confirmed_mean_is_not_confirmed(
    lucky_again: float, confirmed: list[int], best: int
):
    """Children 0, 1, 2 score 0.9, 0.86 and 0.84 (the rest 0.5), three leaders to confirm
    one at a time, each confirmation 0.02 below its leader's figure except child 0's: a
    leader is retrained only while its one reward is above the best mean so far."""
    loop = hparam_loop(budget=8, confirmation=Confirmation(leaders=3))
    first = {0: 0.9, 1: 0.86, 2: 0.84}

    def evaluate(trial: int, arch: dict[str, Any]) -> float:
        leader = loop.by_trial[trial].confirms
        if leader is None:
            return first.get(trial, 0.5)
        return lucky_again if leader == 0 else first[leader] - 0.02

    run_sequential(loop, evaluate)
    assert [r.confirms for r in loop.confirmations] == confirmed
    assert loop.best().trial == best and loop.ended == "trials"


def test_a_leader_is_confirmed_while_others_train_and_a_later_leader_too():
    """The budget handed out, one child still training: the leader so far is confirmed at
    once (no worker idles), the loop says more may come, and a child that ends as the new
    leader is confirmed as well. Once a confirmation finished, the best is a confirmed
    child: one looked at once is as optimistic as the leader was before its second seed."""
    loop = hparam_loop(budget=3, confirmation=Confirmation(leaders=1))
    a, b, c = (loop.next_child() for _ in range(3))
    loop.child_finished(a.trial, 0.6, 1.0)
    loop.child_finished(b.trial, 0.5, 1.0)
    first = loop.next_child()
    assert first.confirms == a.trial and loop.more_to_come
    assert loop.next_child() is None and loop.more_to_come  # c may still lead
    loop.child_finished(first.trial, 0.4, 1.0)
    loop.child_finished(c.trial, 0.55, 1.0)
    assert loop.best().trial == a.trial and loop.mean_dev_uar(a) == pytest.approx(0.5)
    assert loop.next_child() is None and not loop.more_to_come  # a still leads by one seed

    loop = hparam_loop(budget=3, confirmation=Confirmation(leaders=1))
    a, b, c = (loop.next_child() for _ in range(3))
    loop.child_finished(a.trial, 0.6, 1.0)
    assert loop.next_child().confirms == a.trial
    loop.child_finished(c.trial, 0.7, 1.0)
    later = loop.next_child()
    assert later.confirms == c.trial and loop.more_to_come  # b still trains


def test_a_confirmation_is_not_judged_by_the_early_stop_rule_and_one_cut_short_does_not_count():
    """The rule stops the first five children after their first epoch but never a
    confirmation; the deadline's stop cuts the second one short: its leader keeps one
    figure, and the best is the leader confirmed, although its mean fell below that one."""
    clock = FakeClock(0.0)
    loop = hparam_loop(budget=10, confirmation=Confirmation(leaders=2), deadline=1000.0,
                       clock=clock)  # fmt: skip

    def evaluate(trial: int, arch: dict[str, Any]):
        for epoch in range(1, 4):
            clock.advance(1.0 if trial < 11 else 500.0)  # the second confirmation is slow
            yield 0.1 * epoch + (0.01 * trial if trial < 10 else -0.2)  # the leaders' fall

    def first_epoch_only(trial: int, epoch: int, best: float) -> bool:
        return epoch >= 1 and trial < 5  # the first five stop; 5-9 finish

    run_sequential(loop, evaluate, stop_at=1100.0, early_stop=first_epoch_only)
    fast, slow = loop.confirmations
    assert (fast.status, fast.epochs) == (DONE, 3)
    assert (slow.status, slow.error) == (STOPPED, DEADLINE_REASON)
    leader, second = (loop.by_trial[r.confirms] for r in (fast, slow))
    assert len(loop.seeds_of(leader)) == 2 and len(loop.seeds_of(second)) == 1
    assert loop.mean_reward(leader) < loop.mean_reward(second)  # 0.245 against one 0.38
    assert loop.best() is leader


def test_a_start_child_is_not_judged_by_the_early_stop_rule():
    """The rule stops every child after its first epoch, but not the space's start child
    (``seed_gru``'s 2 x 120 tanh, the model the search is measured against): it trains its
    three epochs and is the best, while the others keep one epoch each."""
    space = load_space("seed_gru")
    searcher = make_searcher("random", space, 0)
    searcher.enqueue(*space.start_with)  # as a search that is not resumed does
    searcher.enqueue(*space.start_with)  # proposed again: a duplicate, not a start child
    loop = SearchLoop(searcher, space, 5, IDENTITY)

    def evaluate(trial: int, arch: dict[str, Any]) -> list[float]:
        return [0.4, 0.5, 0.6]

    run_sequential(loop, evaluate, early_stop=lambda trial, epoch, best: True)
    again = loop.records[1]
    assert (again.duplicate_of, again.start) == (0, False)
    first, *others = [r for r in loop.records if r.duplicate_of is None]
    tanh_120 = {"units": 120, "activation": "tanh"}
    assert first.start and first.architecture["layers"] == [tanh_120] * 2
    assert (first.status, first.epochs, first.dev_uar) == (DONE, 3, 0.6)
    assert others and all(not r.start and (r.status, r.epochs) == (STOPPED, 1) for r in others)
    assert loop.best() is first


def _ten_second_children(confirmation_figure: float) -> SearchLoop:
    """Children of 10 s under a 100 s budget, two leaders to confirm one at a time, each
    confirmation scoring ``confirmation_figure``."""
    clock = FakeClock(0.0)
    loop = hparam_loop(budget=100, deadline=100.0, clock=clock,
                       confirmation=Confirmation(leaders=2))  # fmt: skip

    def evaluate(trial: int, arch: dict[str, Any]) -> float:
        clock.advance(10.0)
        return confirmation_figure if loop.by_trial[trial].confirms is not None else toy_uar(arch)

    run_sequential(loop, evaluate)
    return loop


def test_the_time_budget_leaves_the_confirmations_their_share():
    """The searcher's children start until 80 s, the confirmations at 80 and 90 s (the
    first leader's second seed scores 0: its mean leaves the second leader above it),
    none at 100 s."""
    loop = _ten_second_children(0.0)
    assert loop.trained == 8 and len(loop.confirmations) == 2
    assert [r.started for r in loop.confirmations] == [80.0, 90.0]
    assert loop.ended == "time budget" and all(r.status in (DONE, CACHED) for r in loop.records)


def test_time_kept_for_a_confirmation_not_needed_goes_back_to_the_searcher():
    """The first leader's second seed scores 1.0: its mean is above the second leader's
    one reward, which is then not confirmed, and the searcher's children start again at
    90 s instead of the workers idling until the deadline."""
    loop = _ten_second_children(1.0)
    assert [r.started for r in loop.confirmations] == [80.0]
    assert [r.started for r in loop.searched][-1] == 90.0 and loop.trained == 9
    assert loop.ended == "time budget"


class CallLog(SearchLoop):
    """A real loop that also notes which of its methods the driver calls."""

    calls: list[str]

    def next_child(self):
        record = super().next_child()
        self.calls.append("next_child" if record else "next_child -> None")
        return record

    def child_finished(self, trial, *args, **kwargs):
        self.calls.append("child_finished")
        super().child_finished(trial, *args, **kwargs)

    def child_failed(self, trial, *args, **kwargs):
        self.calls.append("child_failed")
        super().child_failed(trial, *args, **kwargs)


def test_children_run_one_at_a_time_in_the_ray_adapters_order():
    """next_child, then the child's result, then the next: one child in flight at most;
    on_change after every suggestion and every result, as the Ray adapter calls it."""
    space = load_space("gru_hparams")
    loop = CallLog(make_searcher("random", space, 0), space, 3, IDENTITY)
    loop.calls = []
    in_flight, changes = [], []

    def evaluate(trial: int, arch: dict[str, Any]) -> float:
        in_flight.append(loop.running)
        if trial == 1:
            raise ValueError("no")
        return toy_uar(arch)

    run_sequential(loop, evaluate, on_change=lambda: changes.append(loop.settled))
    assert loop.calls == [
        "next_child", "child_finished", "next_child", "child_failed",
        "next_child", "child_finished", "next_child -> None",
    ]  # fmt: skip
    assert in_flight == [1, 1, 1] and changes == [0, 1, 1, 2, 2, 3, 3]


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("name", sorted(set(SEARCHERS) - {"tpe"}))  # TPE restarts its stream
def test_a_search_resumed_from_its_saved_state_trains_what_the_uninterrupted_one_would(name):
    """Stopped after four children, saved (torch.save, weights_only load), restored into
    a searcher of another seed and a new loop: the same eight children as in one go."""

    def evaluate(trial: int, arch: dict[str, Any]) -> float:
        return toy_uar(arch)

    whole = hparam_loop(name, budget=8, seed=5)
    run_sequential(whole, evaluate)

    first = hparam_loop(name, budget=8, seed=5)

    def stop_after_four() -> None:
        if first.completed == 4 and first.running == 0:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_sequential(first, evaluate, on_change=stop_after_four)
    buffer = io.BytesIO()
    torch.save({"searcher": first.searcher.state_dict(), "records": first.export()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = hparam_loop(name, budget=8, seed=99)
    resumed.searcher.load_state_dict(saved["searcher"])
    resumed.restore(saved["records"])
    run_sequential(resumed, evaluate)

    def trained(loop: SearchLoop) -> list[tuple[int, str]]:
        return [(r.proposal_id, r.key) for r in loop.records]

    assert trained(resumed) == trained(whole) and resumed.trained == 8
    assert resumed.searcher.state_dict()["next_id"] == whole.searcher.state_dict()["next_id"]
