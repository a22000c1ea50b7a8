"""rl's architecture-building environment: a real Gymnasium environment, its evaluator
injected, and rl's agents learning on it from a reward table."""

from __future__ import annotations

import itertools
import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from automl.search.searchers.episodes import architecture_env
from automl.search.space import load_space
from rl import dqn
from rl.cli import main as rl_main
from rl.envs import ARCHITECTURE_ENV, ArchitectureEnv

SIZES = [3, 2, 3]  # decision 2 is skipped when decision 1 takes choice 0
GATES = [None, None, (1, 0)]


def _reward(choices: list[int]) -> float:
    """Best at (2, 1, 2): each matching decision adds a third."""
    return float(np.mean([c == t for c, t in zip(choices, (2, 1, 2), strict=True)]))


@pytest.mark.parametrize("observation", ["history", "local"])
def test_passes_gymnasiums_env_checker(observation):
    env = ArchitectureEnv(SIZES, _reward, GATES, observation)
    check_env(env, skip_render_check=True)


def test_one_decision_per_step_and_the_reward_at_the_end():
    env = ArchitectureEnv(SIZES, _reward, GATES, "history")
    obs, info = env.reset(seed=0)
    assert obs.shape == (len(SIZES) + 1 + sum(SIZES),) and obs[0] == 1
    assert info["action_mask"].tolist() == [1, 1, 1]
    obs, reward, done, _, info = env.step(2)
    assert (reward, done, info["action_mask"].tolist()) == (0.0, False, [1, 1, 0])
    obs, reward, done, _, _ = env.step(1)
    assert not done and env.choices == [2, 1]
    obs, reward, done, _, _ = env.step(5)  # 5 % 3: choice 2
    assert done and env.choices == [2, 1, 2] and reward == 1.0


def test_a_closed_gate_skips_its_decision():
    env = ArchitectureEnv(SIZES, _reward, GATES, "local")
    env.reset()
    env.step(0)
    _, reward, done, _, _ = env.step(0)  # decision 2 is off: the episode ends here
    assert done and env.choices == [0, 0, 0] and env.made == [True, True, False]
    assert reward == pytest.approx(0.0)


def test_local_states_are_position_and_previous_choice():
    env = ArchitectureEnv(SIZES, None, None, "local")
    seen = {}
    for choices in itertools.product(*(range(n) for n in SIZES)):
        env.reset()
        states = [env.local_state()]
        for c in choices:
            obs, *_ = env.step(c)
            states.append(obs)
        for t, s in enumerate(states[:-1]):
            previous = choices[t - 1] if t else None
            assert seen.setdefault(s, (t, previous)) == (t, previous)  # one meaning per state
    assert len(seen) == 1 + SIZES[0] + SIZES[1]
    assert max(seen) < env.observation_space.n - 1  # the terminal state is distinct


def test_a_search_space_maps_to_the_environment():
    space = load_space("seed_gru")
    env = architecture_env(space, "history")
    assert env.sizes == space.sizes
    assert env.gates[0] is None and env.gates[1] is None  # the first layer is always present
    units = [d.name for d in space.decisions].index("block.2.units")
    assert env.gates[units + 1] == (units, 0)  # an absent layer's activation is skipped


def _write_table(path) -> str:
    rewards = {}
    for combo in itertools.product(*(range(n) for n in SIZES)):
        choices = [combo[0], combo[1], combo[2] if combo[1] != 0 else 0]
        rewards[",".join(map(str, choices))] = _reward(choices)
    path.write_text(json.dumps({"sizes": SIZES, "gates": GATES, "rewards": rewards}))
    return str(path)


def test_registered_environment_reads_a_reward_table(tmp_path):
    env = gym.make(ARCHITECTURE_ENV, table=_write_table(tmp_path / "t.json"))
    check_env(env.unwrapped, skip_render_check=True)
    env.reset(seed=0)
    for action in (2, 1, 2):
        _, reward, done, _, _ = env.step(action)
    assert done and reward == 1.0


def test_rl_dqn_learns_the_best_architecture_from_the_table(tmp_path):
    table = _write_table(tmp_path / "t.json")
    config = dqn.DQNConfig(
        env_id=ARCHITECTURE_ENV,
        env_kwargs={"table": table},
        total_steps=1_500,
        learning_starts=200,
        train_freq=16,
        gradient_steps=8,
        hidden=[32],
        eval_every=500,
        eval_episodes=1,
        checkpoint_every=1_500,
        exploration_fraction=0.5,
    )
    assert dqn.train(config).final_eval_return == 1.0


def test_rl_train_command_trains_qlearning_on_the_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    table = _write_table(tmp_path / "t.json")
    code = rl_main(
        [
            *("train", "--env", ARCHITECTURE_ENV, "--algo", "qlearning", "--episodes", "300"),
            *("--env-arg", f"table={table}", "--env-arg", "observation=local"),
            *("--set", "eval_every=100", "--set", "eval_episodes=1", "--json", "out.json"),
        ]
    )
    assert code == 0
    (row,) = json.loads((tmp_path / "out.json").read_text())["seeds"]
    assert row["status"] == "done" and row["final_eval_return"] == 1.0


def test_rl_train_names_a_bad_environment_argument(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--env", ARCHITECTURE_ENV, "--env-arg", "table=missing.json"]
    assert rl_main(argv) == 2
    err = capsys.readouterr().err
    assert f"--env {ARCHITECTURE_ENV}" in err and "missing.json" in err and "Traceback" not in err
