"""RL agents: learning beyond a random policy, exact resume from checkpoints, seeding."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

from rl import dqn, qlearning
from rl.buffers import PrioritizedReplayBuffer, ReplayBuffer
from rl.cli import main as rl_main
from rl.common import evaluate, latest_checkpoint

SMALL_DQN = dict(
    total_steps=6_000,
    learning_starts=500,
    train_freq=64,
    gradient_steps=32,
    hidden=[64, 64],
    eval_every=2_000,
    eval_episodes=5,
    checkpoint_every=2_000,
    exploration_fraction=0.3,
)


def random_return(env_id: str, episodes: int = 20) -> float:
    env = gym.make(env_id)
    env.action_space.seed(0)
    rng = np.random.default_rng(0)

    def act(obs: np.ndarray) -> np.ndarray:
        return rng.integers(env.action_space.n, size=obs.shape[:2])

    return evaluate(act, env_id, episodes, seeds=[0])[0][0]


def test_dqn_learns_cartpole_beyond_random():
    result = dqn.train(dqn.DQNConfig(seed=0, n_step=3, **SMALL_DQN))
    assert result.best_eval_return > 5 * random_return("CartPole-v1")  # random: about 20
    assert result.steps == 6_000 and result.steps_per_second > 0


def test_dqn_with_prioritized_replay_and_polyak_learns():
    config = dqn.DQNConfig(seed=1, prioritized=True, tau=0.05, num_envs=2, **SMALL_DQN)
    result = dqn.train(config)
    assert result.best_eval_return > 3 * random_return("CartPole-v1")


def test_qlearning_learns_taxi_beyond_random():
    result = qlearning.train(qlearning.QLearningConfig(episodes=3_000, seed=0, eval_every=1_000))
    assert random_return("Taxi-v4") < -150
    assert result.final_eval_return > 0


@pytest.mark.parametrize("env_id", ["FrozenLake-v1", "CliffWalking-v1"])
def test_qlearning_other_discrete_envs(env_id):
    result = qlearning.train(
        qlearning.QLearningConfig(
            env_id=env_id, episodes=2_000, seed=0, eval_every=1_000, eval_episodes=20
        )
    )
    assert result.best_eval_return > random_return(env_id)


def _kill_after_first_checkpoint(algo: str, config, folder) -> None:
    """Run training in a real process and SIGKILL it once its first checkpoint exists;
    keep only that checkpoint, so the resume starts exactly there."""
    fields = json.dumps(json.dumps(dataclasses.asdict(config)))
    code = (
        f"import json, pathlib; from rl import {algo} as m; "
        f"m.train(m.{type(config).__name__}(**json.loads({fields})), pathlib.Path({str(folder)!r}))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 120
    while not list(folder.glob("checkpoint-*.pt")) and time.time() < deadline:
        assert proc.poll() is None, "training ended before its first checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, *later = sorted(folder.glob("checkpoint-*.pt"))
    for path in later:
        path.unlink()
    assert not list(folder.glob("*.tmp"))  # atomic writes: no half-written checkpoint


def test_dqn_killed_and_resumed_continues_identically(tmp_path):
    """A run killed after a checkpoint and resumed ends exactly like the uninterrupted run."""
    config = dqn.DQNConfig(seed=3, **dict(SMALL_DQN, total_steps=8_000, n_step=2, num_envs=2))
    full = dqn.train(config, checkpoint_dir=tmp_path / "full")
    _kill_after_first_checkpoint("dqn", config, tmp_path / "part")
    resumed = dqn.train(config, tmp_path / "part", resume=True)
    a = torch.load(latest_checkpoint(tmp_path / "full"), weights_only=True)
    b = torch.load(latest_checkpoint(tmp_path / "part"), weights_only=True)
    assert a["step"] == b["step"] == 8_000 and a["episodes"] == b["episodes"]
    for key in a["q"]:
        torch.testing.assert_close(a["q"][key], b["q"][key], rtol=0, atol=0)
    assert (full.final_eval_return, full.steps_to_threshold) == (
        resumed.final_eval_return,
        resumed.steps_to_threshold,
    )


def test_qlearning_killed_and_resumed_continues_identically(tmp_path):
    config = qlearning.QLearningConfig(
        episodes=4_000, seed=2, eval_every=1_000, checkpoint_every=500
    )
    qlearning.train(config, tmp_path / "full")
    _kill_after_first_checkpoint("qlearning", config, tmp_path / "part")
    qlearning.train(config, tmp_path / "part", resume=True)
    a = torch.load(latest_checkpoint(tmp_path / "full"), weights_only=True)
    b = torch.load(latest_checkpoint(tmp_path / "part"), weights_only=True)
    assert a["episode"] == b["episode"] == 4_000
    assert torch.equal(a["q"], b["q"])


def test_dqn_returns_the_best_evaluated_network_and_scores_it_on_fresh_episodes(tmp_path):
    """best.pt holds the weights of the best periodic evaluation (evaluated again on the
    same episodes, they score exactly that), and the fresh score is of those weights."""
    config = dqn.DQNConfig(seed=0, **dict(SMALL_DQN, eval_every=1_000))
    result = dqn.train(config, checkpoint_dir=tmp_path)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["step"] == result.best_eval_step
    _, policy = dqn.load_policy(best)
    [again] = evaluate(policy, "CartPole-v1", config.eval_episodes, [config.seed], best["step"])
    assert again[0] == result.best_eval_return >= result.final_eval_return
    [fresh] = evaluate(
        policy, "CartPole-v1", config.eval_episodes, [config.seed], 0, offset=2_000_029
    )
    assert fresh == (result.returned_fresh_return, result.returned_fresh_std)


def test_dqn_without_checkpoints_does_not_cut_episodes_short():
    """MountainCar's episodes last 200 steps (a random policy never reaches the flag): with
    the old reset at every checkpoint_every (50) steps no episode would ever end. Each
    episode is followed by the step that resets it (Gymnasium's next-step autoreset)."""
    config = dqn.DQNConfig(
        env_id="MountainCar-v0", total_steps=1_000, learning_starts=2_000, checkpoint_every=50,
        eval_every=10_000, eval_episodes=1, hidden=[16],
    )  # fmt: skip
    assert dqn.train(config).episodes == 1_000 // 201  # 200 steps, then the step that resets


def test_qlearning_ended_by_steps_still_ends_with_an_evaluation(tmp_path):
    config = qlearning.QLearningConfig(
        episodes=10_000, total_steps=30_000, seed=0, eval_every=100_000, eval_episodes=20
    )
    result = qlearning.train(config, checkpoint_dir=tmp_path)
    assert result.steps >= 30_000 and result.episodes < 10_000  # the steps ended it
    assert np.isfinite(result.final_eval_return) and result.best_eval_step == result.steps
    assert (tmp_path / "best.pt").is_file() and np.isfinite(result.returned_fresh_return)


def test_same_seed_reproduces_in_one_process():
    config = dqn.DQNConfig(seed=5, **dict(SMALL_DQN, total_steps=2_500))
    first, second = dqn.train(config), dqn.train(config)
    other = dqn.train(dataclasses.replace(config, seed=6))
    assert first.final_eval_return == second.final_eval_return
    assert first.episodes == second.episodes
    assert (first.final_eval_return, first.episodes) != (other.final_eval_return, other.episodes)


def test_n_step_returns_stop_at_episode_end():
    buffer = ReplayBuffer(16, num_envs=1, obs_shape=(1,), n_step=3, gamma=0.5)
    rewards = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    for t, r in enumerate(rewards):
        buffer.add(
            np.array([[t]]),
            np.array([[t + 1]]),
            np.array([0]),
            np.array([r]),
            np.array([t == 1]),
            np.array([False]),
        )
    assert buffer.ready_rows() == 4  # the newest two rows lack a full 3-step window
    batch = buffer._gather(np.arange(4), np.zeros(4, np.int64), np.ones(4, np.float32))
    # t=0: 1 + 0.5*2 and the episode terminates: no bootstrap; t=2: three rewards, then s_5
    torch.testing.assert_close(batch.returns, torch.tensor([2.0, 2.0, 12.0, 24.0]))
    torch.testing.assert_close(batch.discounts, torch.tensor([0.0, 0.0, 0.125, 0.125]))
    torch.testing.assert_close(batch.next_obs[:, 0], torch.tensor([2.0, 2.0, 5.0, 6.0]))


def test_prioritized_sampling_prefers_high_priority():
    buffer = PrioritizedReplayBuffer(64, 1, (1,), seed=0, alpha=1.0)
    for t in range(32):
        buffer.add(
            np.array([[t]]),
            np.array([[t]]),
            np.array([0]),
            np.array([0.0]),
            np.array([False]),
            np.array([False]),
        )
    buffer.update_priorities(torch.arange(32), torch.full((32,), 0.01))
    buffer.update_priorities(torch.tensor([7]), torch.tensor([100.0]))
    batch = buffer.sample(256, beta=1.0)
    assert (batch.flat_index == 7).float().mean() > 0.9
    assert batch.weights[batch.flat_index == 7].max() < batch.weights.max() + 1e-6


def test_rl_train_and_evaluate_commands(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "rl.json"
    code = rl_main(
        [
            "train",
            "--env",
            "CartPole-v1",
            "--algo",
            "dqn",
            "--steps",
            "3000",
            "--seeds",
            "2",
            "--workers",
            "2",
            "--experiment",
            "rl-test",
            "--set",
            "learning_starts=500",
            "--set",
            "hidden=[32,32]",
            "--set",
            "eval_every=1500",
            "--set",
            "checkpoint_every=1500",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    summary = json.loads(out.read_text())
    assert [s["seed"] for s in summary["seeds"]] == [0, 1]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(summary["tracking_uri"])
    for row in summary["seeds"]:
        assert {"final_eval_return", "steps_per_second", "steps_to_threshold"} <= set(row)
        run = client.get_run(row["mlflow_run_id"])
        assert run.data.tags["mlflow.parentRunId"] == summary["parent_run_id"]
        assert run.data.tags["automl.env"] == "CartPole-v1"
        assert run.data.tags["automl.code_version"].startswith("0.1.0")
        assert client.get_metric_history(row["mlflow_run_id"], "episodic_return")
        assert {"eval_return", "loss", "epsilon", "sps"} <= set(run.data.metrics)
        assert row["best_eval_return"] >= row["final_eval_return"]
        assert np.isfinite(row["returned_fresh_return"])
        files = client.list_artifacts(row["mlflow_run_id"], "checkpoint")
        assert [f.path for f in files] == ["checkpoint/best.pt"]
    printed = capsys.readouterr().out
    assert "None" not in printed  # a threshold not reached says so
    assert f"parent run {summary['parent_run_id']}" in printed
    assert f"checkpoints: {tmp_path / 'checkpoints'}/seed-N" in printed
    assert f"summary: {out}" in printed and "#/experiments/" in printed
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["seed-0", "seed-1"]
    folder = tmp_path / "checkpoints" / "seed-1"
    assert rl_main(["evaluate", "--checkpoint", str(folder), "--episodes", "3"]) == 0
    assert "best.pt" in capsys.readouterr().out  # the returned policy, by default
    last = ["evaluate", "--checkpoint", str(folder), "--which", "last", "--episodes", "3"]
    assert rl_main(last) == 0
    assert latest_checkpoint(folder).name in capsys.readouterr().out
    # a checkpoint whose config someone edited: one line, never a traceback
    state = torch.load(folder / "best.pt", weights_only=True)
    for edit, message in [
        ({"hidden": [7]}, "its networks do not fit its config"),
        ({"env_id": "MountainCarContinuous-v0"}, "needs a discrete action space"),
        ({"env_id": "NoSuchEnv-v9"}, "cannot make its env NoSuchEnv-v9"),
    ]:
        torch.save({**state, "config": {**state["config"], **edit}}, tmp_path / "edited.pt")
        assert rl_main(["evaluate", "--checkpoint", str(tmp_path / "edited.pt")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.splitlines()) == 1, err


def test_rl_train_gives_up_waiting_for_a_node_after_max_wait(tmp_path, monkeypatch, capsys):
    """--max-wait, as a search has it: seeds asking for a resource no node has wait that
    long, then the job ends as interrupted (exit 2, one line, the parent KILLED)."""
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    argv = ["train", "--env", "CartPole-v1", "--steps", "600", "--trial-resource", "special=1",
            "--max-wait", "3s", "--json", "out.json"]  # fmt: skip
    started = time.time()
    assert rl_main(argv) == 2
    err = capsys.readouterr().err
    assert (
        "rl: error: seeds waited 3 s (--max-wait) for a node with 1 CPU, 1 special free while "
        "none ran, and none came; the training is saved: add such a node (or ask for less) "
        "and --resume it"
    ) in err.splitlines() and "Traceback" not in err
    assert 3 <= time.time() - started < 3 + 60
    summary = json.loads((tmp_path / "out.json").read_text())
    assert [s["status"] for s in summary["seeds"]] == ["interrupted"]  # it never ran
    parent = MlflowClient(summary["tracking_uri"]).get_run(summary["parent_run_id"])
    assert parent.info.status == "KILLED"


def test_a_full_disk_ends_rl_train_in_one_line_and_resume_finishes_it(
    tmp_path, monkeypatch, capsys, small_disks
):
    """Checkpoints on a disk that fills up: exit 2 with one line naming the file, the parent
    KILLED and the summary written; once there is room, ``--resume`` finishes the seed."""
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    disk = small_disks.mount(tmp_path / "checkpoints", "4k")
    small = ("learning_starts=200", "eval_every=300", "eval_episodes=2", "hidden=[16]")
    argv = ["train", "--env", "CartPole-v1", "--steps", "600", "--checkpoint-dir", str(disk),
            *(x for s in small for x in ("--set", s)), "--json", "out.json"]  # fmt: skip
    assert rl_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rl: error: a seed could not write"), err
    assert "No space left on device" in err[0] and str(disk) in err[0], err
    summary = json.loads((tmp_path / "out.json").read_text())
    client = MlflowClient(summary["tracking_uri"])
    assert client.get_run(summary["parent_run_id"]).info.status == "KILLED"

    small_disks.grow(disk)
    assert rl_main([*argv, "--resume"]) == 0
    summary = json.loads((tmp_path / "out.json").read_text())
    assert [s["status"] for s in summary["seeds"]] == ["done"]
    assert (disk / "seed-0" / "best.pt").is_file()


def test_a_failing_seed_is_recorded_as_failed_and_the_others_finish(tmp_path, monkeypatch):
    """The same trial wrapper as a search's children: the failure is a FAILED run with its
    error, the other seed finishes, the command says so with exit code 1."""
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTOML_FAULTS", "1:raise")
    small = ("learning_starts=200", "eval_every=600", "eval_episodes=2", "hidden=[16]")
    argv = ["train", "--env", "CartPole-v1", "--steps", "600", "--seeds", "2", "--workers", "2"]
    code = rl_main([*argv, *(x for s in small for x in ("--set", s)), "--json", "out.json"])
    assert code == 1
    summary = json.loads((tmp_path / "out.json").read_text())
    done, failed = summary["seeds"]
    assert done["status"] == "done" and failed["status"] == "failed"
    assert "injected fault: trial 1 raises" in failed["error"]
    client = MlflowClient(summary["tracking_uri"])
    run = client.get_run(failed["mlflow_run_id"])
    assert run.info.status == "FAILED" and "injected fault" in run.data.tags["automl.error"]
    assert client.get_run(done["mlflow_run_id"]).info.status == "FINISHED"
    assert client.get_run(summary["parent_run_id"]).info.status == "FAILED"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--env", "NoSuchEnv-v0"], "--env NoSuchEnv-v0"),
        (
            ["train", "--env", "CartPole-v1", "--algo", "qlearning", "--steps", "10"],
            "needs discrete observations",
        ),
        (["train", "--env", "CartPole-v1", "--set", "colour=3"], "--set colour=3"),
        (
            ["train", "--env", "CartPole-v1", "--set", "learning_rate=abc"],
            "--set learning_rate=abc: expected a number",
        ),
        (["train", "--env", "CartPole-v1", "--set", "hidden=[64,'x']"], "expected a JSON list"),
        (["evaluate", "--checkpoint", "missing.pt"], "file not found"),
        (["train", "--env", "CartPole-v1", "--address", "127.0.0.1:9"], "--address 127.0.0.1:9"),
        (
            ["train", "--env", "Taxi-v4", "--algo", "qlearning", "--population", "2"],
            "--population applies to --algo dqn",
        ),
        (
            ["train", "--env", "CartPole-v1", "--trial-resource", "special=1"],
            "--cpus-per-trial 1 --gpus-per-trial 0 --trial-resource special=1: no node can run",
        ),
        (
            ["train", "--env", "CartPole-v1", "--trial-resource", "special=1 if seed > 2"],
            "--trial-resource 'special=1 if seed > 2': no trial has a field 'seed'",
        ),
    ],
)
def test_rl_user_errors(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert rl_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing started, nothing left behind


POPULATION_DQN = dict(
    total_steps=2_500, learning_starts=500, train_freq=64, gradient_steps=16, hidden=[64, 64],
    eval_every=500, eval_episodes=2, max_grad_norm=1.0,
)  # fmt: skip


def test_a_population_of_one_is_the_single_seed_run(tmp_path):
    """One code path: the same losses at every phase, evaluations, returned policy and
    result (the clip at max_grad_norm 1 is active, so per-member clipping runs too)."""
    config = dqn.DQNConfig(seed=5, **POPULATION_DQN)
    single_log, member_log = [], []
    single = dqn.train(
        config, tmp_path / "single", on_metrics=lambda m, s: single_log.append((s, m))
    )
    (member,) = dqn.train_population(
        config, [5], [tmp_path / "member"], on_metrics=[lambda m, s: member_log.append((s, m))]
    )
    assert dataclasses.replace(member, seconds=0, steps_per_second=0) == dataclasses.replace(
        single, seconds=0, steps_per_second=0
    )
    strip = [(s, {k: v for k, v in m.items() if k != "sps"}) for s, m in single_log]
    assert [(s, {k: v for k, v in m.items() if k != "sps"}) for s, m in member_log] == strip
    assert any("loss" in m for _, m in single_log) and single.best_eval_step is not None
    best = [
        torch.load(d / "best.pt", weights_only=True)
        for d in (tmp_path / "single", tmp_path / "member")
    ]
    assert best[0]["step"] == best[1]["step"]
    assert all(torch.equal(best[0]["q"][k], best[1]["q"][k]) for k in best[0]["q"])


def test_a_killed_population_resumes_exactly_as_the_uninterrupted_one(tmp_path):
    """Each member's checkpoint holds its slice of the networks and of Adam's moments; the
    resumed population ends with every member's weights and results bit for bit those of
    the population that was never stopped."""
    config = dqn.DQNConfig(**dict(POPULATION_DQN, total_steps=4_000, checkpoint_every=1_000))
    seeds = [3, 7, 8]
    full = dqn.train_population(config, seeds, [tmp_path / "full" / f"{s}" for s in seeds])
    part = [tmp_path / "part" / f"{s}" for s in seeds]
    fields = json.dumps(json.dumps(dataclasses.asdict(config)))
    code = (
        "import json, pathlib; from rl import dqn; "
        f"dqn.train_population(dqn.DQNConfig(**json.loads({fields})), "
        f"{seeds}, [pathlib.Path(p) for p in {[str(p) for p in part]}])"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 120
    while not all(list(p.glob("checkpoint-*.pt")) for p in part) and time.time() < deadline:
        assert proc.poll() is None, "training ended before its first checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert dqn.common_checkpoint_step(part) < 4_000
    resumed = dqn.train_population(config, seeds, part, resume=True)
    for seed, a, b in zip(seeds, full, resumed, strict=True):
        end = [torch.load(latest_checkpoint(root / f"{seed}"), weights_only=True)
               for root in (tmp_path / "full", tmp_path / "part")]  # fmt: skip
        assert end[0]["step"] == end[1]["step"] == 4_000
        for key in end[0]["q"]:
            torch.testing.assert_close(end[0]["q"][key], end[1]["q"][key], rtol=0, atol=0)
        assert dataclasses.replace(a, seconds=0, steps_per_second=0) == dataclasses.replace(
            b, seconds=0, steps_per_second=0
        )


def test_population_members_keep_their_own_environments_exploration_and_replay():
    """With synchronous environments, before learning starts a member's episodes depend
    on its seed alone, whoever it trains beside; members with different seeds differ."""
    config = dqn.DQNConfig(
        **{**POPULATION_DQN, "total_steps": 500, "eval_every": 10_000, "vector_env": "sync"}
    )
    logs = {}
    for others in ([3, 4], [3, 9, 11]):
        found: list[list[float]] = [[] for _ in others]
        dqn.train_population(config, others, on_metrics=[_episodes_into(f) for f in found])
        logs[tuple(others)] = found
    assert logs[(3, 4)][0] == logs[(3, 9, 11)][0] and len(logs[(3, 4)][0]) > 5
    assert logs[(3, 4)][1] != logs[(3, 4)][0]


def test_cartpole_populations_step_in_gymnasiums_own_vectorised_env():
    """Every copy of every member in one NumPy environment; the same seeds reproduce."""
    config = dqn.DQNConfig(**{**POPULATION_DQN, "total_steps": 1_500, "num_envs": 2})
    envs = dqn.make_envs(config, 6)
    assert type(envs.unwrapped).__name__ == "CartPoleVectorEnv" and envs.num_envs == 6
    assert type(dqn.make_envs(dataclasses.replace(config, vector_env="sync"), 6)).__name__ == (
        "SyncVectorEnv"
    )
    runs = [dqn.train_population(config, [0, 1, 2]) for _ in range(2)]
    untimed = [[dataclasses.replace(r, seconds=0, steps_per_second=0) for r in run] for run in runs]
    assert untimed[0] == untimed[1]
    assert runs[0][0].episodes > 0 and runs[0][0] != runs[0][1]


def _episodes_into(returns: list[float]):
    def log(metrics: dict[str, float], step: int) -> None:
        if "episodic_return" in metrics:
            returns.append(metrics["episodic_return"])

    return log


def test_rl_train_spreads_populations_over_workers_with_a_run_per_seed(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    small = ("learning_starts=300", "eval_every=600", "eval_episodes=2", "hidden=[16]")
    argv = ["train", "--env", "CartPole-v1", "--steps", "900", "--seeds", "5",
            "--population", "2", "--workers", "2"]  # fmt: skip
    code = rl_main([*argv, *(x for s in small for x in ("--set", s)), "--json", "out.json"])
    assert code == 0
    summary = json.loads((tmp_path / "out.json").read_text())
    assert [r["seed"] for r in summary["seeds"]] == [0, 1, 2, 3, 4]  # populations 2 + 2 + 1
    client = MlflowClient(summary["tracking_uri"])
    for row in summary["seeds"]:
        assert row["status"] == "done" and row["steps"] == 900
        run = client.get_run(row["mlflow_run_id"])
        assert run.info.status == "FINISHED" and run.data.params["seed"] == str(row["seed"])
        assert run.data.tags["mlflow.parentRunId"] == summary["parent_run_id"]
        assert client.get_metric_history(run.info.run_id, "eval_return")
        assert [f.path for f in client.list_artifacts(run.info.run_id, "checkpoint")] == [
            "checkpoint/best.pt"
        ]
    assert len({r["mlflow_run_id"] for r in summary["seeds"]}) == 5
    assert rl_main(["evaluate", "--checkpoint", "checkpoints/seed-3", "--episodes", "2"]) == 0


def test_policies_evaluated_side_by_side_score_what_each_scores_alone():
    """A population's members are evaluated together (one batched product per step); each
    scores exactly what it scores evaluated alone, as ``rl evaluate`` evaluates it."""
    seeds = [10, 11, 12]
    together = evaluate(
        dqn.QNetwork(4, 2, [32], True, seeds=[0, 1, 2]).greedy_numpy(), "CartPole-v1", 4, seeds, 7
    )
    for k, seed in enumerate(seeds):
        member = dqn.QNetwork(4, 2, [32], True, seeds=[k])  # initialised as member k was
        assert evaluate(member.greedy_numpy(), "CartPole-v1", 4, [seed], 7) == [together[k]]
    assert len(set(together)) == 3  # the members play differently: the check has teeth


def test_a_narrow_layer_turned_for_speed_gives_autograd_gradients():
    """The Q-head's products are turned for speed (dqn.NarrowLinear); its gradients are
    autograd's, checked numerically in double precision."""
    shapes = [(3, 5, 7), (3, 7, 2), (3, 1, 2)]  # h [K, batch, in], w [K, in, out], b [K, 1, out]
    h, w, b = (torch.randn(s, dtype=torch.double, requires_grad=True) for s in shapes)
    assert torch.autograd.gradcheck(dqn.NarrowLinear.apply, (h, w, b))
    torch.testing.assert_close(dqn.stacked_linear(h, w, b), torch.baddbmm(b, h, w))
