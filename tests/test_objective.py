"""The search's objective (MnasNet's soft trade-off) and the Pareto fronts it reports."""

from __future__ import annotations

import pytest

from automl.search.objective import Objective, pareto_front


def test_uar_alone_is_the_default_reward():
    assert Objective().reward(0.7, {"n_params": 10**6, "latency_ms": 50}) == 0.7


def test_the_trade_off_is_mnasnets_soft_constraint():
    objective = Objective("uar-params", target=1000)
    assert objective.reward(0.8, {"n_params": 1000}) == pytest.approx(0.8)
    assert objective.reward(0.8, {"n_params": 2000}) == pytest.approx(0.8 * 2**-0.07)
    assert objective.reward(0.8, {"n_params": 500}) > 0.8  # under the target: a small bonus
    latency = Objective("uar-latency", target=10)
    assert latency.reward(0.8, {"latency_ms": 20}) == pytest.approx(0.8 * 2**-0.07)
    assert latency.reward(0.8, {"n_params": 5}) == 0.8  # a child stopped early: no latency


@pytest.mark.parametrize("kind,target", [("uar-params", None), ("uar-latency", -1.0), ("acc", 1)])
def test_a_trade_off_needs_a_positive_target_and_a_known_kind(kind, target):
    with pytest.raises(ValueError):
        Objective(kind, target)


def test_pareto_front_keeps_the_children_no_other_beats_on_both():
    rows = [
        {"trial": 0, "dev_uar": 0.60, "n_params": 100},
        {"trial": 1, "dev_uar": 0.70, "n_params": 300},
        {"trial": 2, "dev_uar": 0.65, "n_params": 400},  # beaten by 1: better and cheaper
        {"trial": 3, "dev_uar": 0.80, "n_params": 900},
        {"trial": 4, "dev_uar": 0.55, "n_params": 100},  # beaten by 0
        {"trial": 5, "dev_uar": 0.90, "n_params": None},  # no cost known: not ranked
    ]
    assert [r["trial"] for r in pareto_front(rows, "n_params")] == [0, 1, 3]


def test_the_leaderboard_ranks_by_the_reward_and_says_how_the_search_ended():
    from rich.console import Console

    from automl.child import normalize
    from automl.commands.search import leaderboard_table

    arch = normalize({"family": "rnn", "layers": [{"units": 8, "activation": "tanh"}]})
    trials = [
        {"trial": 0, "status": "done", "dev_uar": 0.90, "reward": 0.80, "n_params": 9000},
        {"trial": 1, "status": "done", "dev_uar": 0.85, "reward": 0.88, "n_params": 500},
        {"trial": 2, "status": "stopped", "dev_uar": 0.99, "reward": 0.99, "n_params": 10},
    ]
    for t in trials:
        t.update(architecture=arch, latency_ms=1.5, seconds=2.0, mlflow_run_id="r", confirms=None)
    summary = {
        "searcher": "random",
        "trained": 3,
        "wall_seconds": 60.0,
        "ended": "time budget",
        "objective": "uar-params",
        "trials": trials,
        "confirmed": [],
    }

    shown = ""  # the whole table as one line of words (its caption wraps under it)

    def rows() -> list[list[str]]:
        nonlocal shown
        console = Console(record=True, width=200)
        console.print(leaderboard_table(summary))
        text = console.export_text()
        shown = " ".join(text.split())
        assert "ended on its time budget" in text
        return [[cell.strip() for cell in line.split("│")[1:6]]  # rank trial reward UAR seeds
                for line in text.splitlines() if "gru[" in line]  # fmt: skip

    first, second = rows()  # a stopped child is not a candidate
    assert first[2] == "0.8800" and second[2] == "0.8000"  # by reward, not by dev UAR

    # child 0 confirmed on a second seed (its run not a row): it ranks first, by its mean
    again = {**trials[0], "trial": 3, "confirms": 0, "dev_uar": 0.82, "reward": 0.76}
    summary["trials"].append(again)
    summary["confirmed"] = [
        {"trial": 0, "dev_uar": 0.90, "dev_uar_mean": 0.86, "reward_mean": 0.78, "seeds": 2}
    ]
    first, second = rows()
    assert "children confirmed on a second seed rank first" in shown
    assert first == ["1", "0", "0.7800", "0.8600", "2"]
    assert second == ["2", "1", "0.8800", "0.8500", "1"]
