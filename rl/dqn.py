"""DQN for any Gymnasium environment with a discrete action space, in one file.

Double DQN, dueling heads, n-step returns, Huber loss, gradient clipping, hard or Polyak
target updates, a linear epsilon schedule, optional prioritized replay, and Gymnasium
vector environments. Read :func:`train` top to bottom: it is the algorithm.

The returned policy is the best-evaluated network (as stable-baselines3's
``EvalCallback`` keeps ``best_model``): DQN's greedy policy often peaks and then degrades
while training goes on. It is written to ``best.pt`` beside the checkpoints and scored
again on fresh episodes at the end, since it was selected on the periodic evaluations.

Checkpoints: when a run writes them (``checkpoint_dir``), every ``checkpoint_every`` env
steps a training *segment* ends. The state (networks, optimizer, replay buffer and its
position, step counters, random streams, the best network) is saved, and every
environment is reset with a seed derived from the run's seed and the step, so a run
resumed from a checkpoint continues exactly as the uninterrupted run would have. The
cost is one truncated episode per environment and segment; a run without checkpoints
resets its environments only when it starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rl.buffers import Batch, PrioritizedReplayBuffer, ReplayBuffer
from rl.common import (
    FRESH_SEED_OFFSET,
    EvalTracker,
    Metrics,
    RunResult,
    encode_obs,
    evaluate,
    latest_checkpoint,
    linear_schedule,
    obs_size,
    save_best,
    save_checkpoint,
    segment_seed,
)
from runtime.errors import UserError


@dataclass
class DQNConfig:
    """Defaults are rl-zoo's CartPole-v1 DQN hyperparameters, plus the Rainbow-style parts."""

    env_id: str = "CartPole-v1"
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to gymnasium.make
    total_steps: int = 50_000
    seed: int = 0
    num_envs: int = 1
    learning_rate: float = 2.3e-3
    buffer_size: int = 100_000
    batch_size: int = 64
    gamma: float = 0.99
    learning_starts: int = 1_000
    train_freq: int = 256  # env steps between training phases
    gradient_steps: int = 128  # gradient steps per training phase
    target_update: int = 10  # env steps between hard target updates (tau == 1)
    tau: float = 1.0  # 1: hard updates; < 1: Polyak averaging after every gradient step
    exploration_fraction: float = 0.16
    start_epsilon: float = 1.0
    end_epsilon: float = 0.04
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    double: bool = True
    dueling: bool = True
    n_step: int = 1
    max_grad_norm: float = 10.0
    prioritized: bool = False
    per_alpha: float = 0.6
    per_beta: float = 0.4  # annealed linearly to 1 over the run
    eval_every: int = 5_000
    eval_episodes: int = 10
    checkpoint_every: int = 10_000
    threads: int = 1


class QNetwork(nn.Module):
    """MLP trunk; a dueling head splits it into a state value and action advantages."""

    def __init__(self, n_obs: int, n_actions: int, hidden: list[int], dueling: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for units in hidden:
            layers += [nn.Linear(n_obs, units), nn.ReLU()]
            n_obs = units
        self.trunk = nn.Sequential(*layers)
        self.advantage = nn.Linear(n_obs, n_actions)
        self.value = nn.Linear(n_obs, 1) if dueling else None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        h = self.trunk(obs)
        a = self.advantage(h)
        if self.value is None:
            return a
        return self.value(h) + a - a.mean(dim=1, keepdim=True)

    def greedy_numpy(self) -> Callable[[np.ndarray], np.ndarray]:
        """A numpy copy for acting, where a torch call per env step would cost more than the
        step itself. Refresh it whenever the weights change. With a dueling head the greedy
        action is the advantage's argmax, so the value stream is not needed."""
        linears = [m for m in self.trunk if isinstance(m, nn.Linear)] + [self.advantage]
        return numpy_policy(
            [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in linears]
        )


def numpy_policy(
    weights: list[tuple[np.ndarray, np.ndarray]],
) -> Callable[[np.ndarray], np.ndarray]:
    """Greedy actions of a ReLU MLP given as (weight [in, out], bias) per layer."""

    def act(obs: np.ndarray) -> np.ndarray:
        h = obs
        for w, b in weights[:-1]:
            h = np.maximum(h @ w + b, 0.0)
        return (h @ weights[-1][0] + weights[-1][1]).argmax(axis=-1)

    return act


def check_env(config: DQNConfig) -> None:
    """DQN picks among discrete actions; refuse anything else before any worker starts."""
    env = gym.make(config.env_id, **config.env_kwargs)
    env.close()
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise UserError(
            f"--algo dqn needs a discrete action space; {config.env_id} has {env.action_space}"
        )


def make_envs(config: DQNConfig) -> gym.vector.VectorEnv:
    return gym.make_vec(
        config.env_id,
        num_envs=config.num_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
        **config.env_kwargs,
    )


def set_up_torch(threads: int) -> None:
    """Threads, and denormal floats flushed to zero: Adam's second moments of tiny
    gradients turn denormal, and the CPU computes on them several times slower (measured:
    the fused Adam step of 8 stacked CartPole networks took 2.6 ms instead of 0.46 ms)."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)


def build_network(config: DQNConfig, env: gym.Env | gym.vector.VectorEnv) -> QNetwork:
    obs_space = getattr(env, "single_observation_space", env.observation_space)
    act_space = getattr(env, "single_action_space", env.action_space)
    return QNetwork(obs_size(obs_space), int(act_space.n), config.hidden, config.dueling)


def train(
    config: DQNConfig,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    on_metrics: Metrics | None = None,
) -> RunResult:
    set_up_torch(config.threads)
    torch.manual_seed(config.seed)
    envs = make_envs(config)
    obs_space = envs.single_observation_space
    q = build_network(config, envs)
    target = build_network(config, envs)
    target.load_state_dict(q.state_dict())
    optimizer = torch.optim.Adam(q.parameters(), lr=config.learning_rate, fused=True)
    buffer_cls = PrioritizedReplayBuffer if config.prioritized else ReplayBuffer
    extra = {"alpha": config.per_alpha} if config.prioritized else {}
    buffer = buffer_cls(
        config.buffer_size,
        config.num_envs,
        (obs_size(obs_space),),
        n_step=config.n_step,
        gamma=config.gamma,
        seed=config.seed,
        **extra,
    )
    rng = np.random.default_rng(config.seed)  # exploration
    tracker = EvalTracker(config.env_id)
    step, gradient_steps, episodes = 0, 0, 0
    best_q: dict[str, torch.Tensor] | None = None  # the best-evaluated weights so far
    log = on_metrics or (lambda metrics, step: None)

    def snapshot() -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly (weights_only-loadable)."""
        return {
            "algo": "dqn",
            "config": asdict(config),
            "q": q.state_dict(),
            "target": target.state_dict(),
            "optimizer": optimizer.state_dict(),
            "buffer": buffer.state_dict(),
            "rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "step": step,
            "gradient_steps": gradient_steps,
            "episodes": episodes,
            "tracker": tracker.state_dict(),
            "best_q": best_q,
        }

    if resume and checkpoint_dir and (path := latest_checkpoint(checkpoint_dir)):
        state = torch.load(path, weights_only=True)
        q.load_state_dict(state["q"])
        target.load_state_dict(state["target"])
        optimizer.load_state_dict(state["optimizer"])
        buffer.load_state_dict(state["buffer"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        step, gradient_steps, episodes = state["step"], state["gradient_steps"], state["episodes"]
        tracker.load_state_dict(state["tracker"])
        best_q = state["best_q"]

    episode_return = np.zeros(config.num_envs)
    started, steps_at_start, eval_seconds = time.perf_counter(), step, 0.0
    act, target_stale = q.greedy_numpy(), True
    losses: list[torch.Tensor] = []
    segment_start = True  # the run (or the resumed run) starts a segment
    while step < config.total_steps:
        # A segment starts: checkpoint, then reset every env with a seed fixed by (seed, step).
        if segment_start or (checkpoint_dir and step % config.checkpoint_every < config.num_envs):
            segment_start = False
            if checkpoint_dir and step > 0:
                save_checkpoint(checkpoint_dir, step, snapshot())
            buffer.mark_segment_end()
            raw_obs, _ = envs.reset(
                seed=[segment_seed(config.seed, step, i) for i in range(config.num_envs)]
            )
            obs = encode_obs(obs_space, raw_obs)
            episode_return[:] = 0

        # Act: epsilon-greedy on the online network.
        epsilon = linear_schedule(
            config.start_epsilon,
            config.end_epsilon,
            config.exploration_fraction * config.total_steps,
            step,
        )
        explore = rng.random(config.num_envs) < epsilon
        greedy = act(obs)
        actions = np.where(
            explore, rng.integers(envs.single_action_space.n, size=config.num_envs), greedy
        )
        raw_next, rewards, terminated, truncated, infos = envs.step(actions)
        next_obs = encode_obs(obs_space, raw_next)
        real_next = next_obs.copy()
        if "final_obs" in infos:  # the true last observation of episodes that just ended
            for i in np.flatnonzero(infos["_final_obs"]):
                real_next[i] = encode_obs(obs_space, infos["final_obs"][i])
        buffer.add(obs, real_next, actions, rewards, terminated, truncated)
        obs = next_obs
        step += config.num_envs

        episode_return += rewards
        for i in np.flatnonzero(terminated | truncated):
            episodes += 1
            log({"episodic_return": float(episode_return[i]), "epsilon": epsilon}, step)
            episode_return[i] = 0

        # Learn: a phase of gradient steps every train_freq env steps.
        if step >= config.learning_starts and step % config.train_freq < config.num_envs:
            beta = config.per_beta + (1 - config.per_beta) * min(1.0, step / config.total_steps)
            for batch in phase_batches(buffer, config, beta):
                loss, td_error = gradient_step(q, target, optimizer, batch, config)
                gradient_steps += 1
                if config.prioritized:
                    buffer.update_priorities(batch.flat_index, td_error)
                if config.tau < 1:
                    polyak(q, target, config.tau)
                losses.append(loss)
            act, target_stale = q.greedy_numpy(), True
            log(
                {
                    "loss": float(torch.stack(losses).mean()),
                    "epsilon": epsilon,
                    "sps": (step - steps_at_start) / (time.perf_counter() - started - eval_seconds),
                },
                step,
            )
            losses = []
        if config.tau >= 1 and step % config.target_update < config.num_envs and target_stale:
            copy_weights(q, target)  # hard update; skipped while q has not changed since
            target_stale = False

        # Evaluate: greedy episodes on a separate environment.
        if step % config.eval_every < config.num_envs or step >= config.total_steps:
            eval_started = time.perf_counter()
            mean, std = evaluate(
                act, config.env_id, config.eval_episodes, config.seed, step, config.env_kwargs
            )
            eval_seconds += time.perf_counter() - eval_started
            if tracker.record(mean, std, step):
                best_q = {k: v.detach().clone() for k, v in q.state_dict().items()}
                if checkpoint_dir:
                    save_best(checkpoint_dir, policy_state(config, best_q, step))
            log({"eval_return": mean, "eval_return_std": std}, step)

    if checkpoint_dir:
        save_checkpoint(checkpoint_dir, step, snapshot())
    envs.close()
    seconds = time.perf_counter() - started
    _, returned = load_policy(policy_state(config, best_q or q.state_dict(), step))
    fresh = evaluate(
        returned, config.env_id, config.eval_episodes, config.seed, 0, config.env_kwargs,
        offset=FRESH_SEED_OFFSET,
    )  # fmt: skip
    return tracker.result(
        fresh=fresh,
        steps=step,
        episodes=episodes,
        seconds=seconds,
        steps_per_second=(step - steps_at_start) / (seconds - eval_seconds),
    )


def gradient_step(
    q: QNetwork,
    target: QNetwork,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    config: DQNConfig,
    next_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Huber-loss step towards the (double) DQN target; returns the loss and the TD
    errors (for priorities). ``next_mask`` [batch, actions]: the actions valid in each next
    state, where some are not (the architecture environment's shorter decisions)."""
    q_taken = q(batch.obs).gather(1, batch.actions[:, None]).squeeze(1)
    with torch.no_grad():  # double DQN: the online net picks, the target rates
        q_next_target = target(batch.next_obs)
        chooser = q(batch.next_obs) if config.double else q_next_target
        if next_mask is not None:
            chooser = chooser.masked_fill(~next_mask, float("-inf"))
        next_actions = chooser.argmax(1)
        next_value = q_next_target.gather(1, next_actions[:, None]).squeeze(1)
        td_target = batch.returns + batch.discounts * next_value
    elementwise = nn.functional.smooth_l1_loss(q_taken, td_target, reduction="none")
    if config.prioritized:  # importance weights; uniform replay's are all one
        elementwise = batch.weights * elementwise
    loss = elementwise.mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    _clip_gradients(optimizer.param_groups[0]["params"], config.max_grad_norm)
    optimizer.step()
    return loss.detach(), q_taken.detach() - td_target


def phase_batches(buffer: ReplayBuffer, config: DQNConfig, beta: float) -> Iterator[Batch]:
    """The batches of one training phase. Uniform replay draws them all at once; prioritized
    replay draws each after the previous step has updated the priorities."""
    if isinstance(buffer, PrioritizedReplayBuffer):
        for _ in range(config.gradient_steps):
            yield buffer.sample(config.batch_size, beta)
    else:
        yield from buffer.sample_many(config.gradient_steps, config.batch_size)


def _clip_gradients(params: list[nn.Parameter], max_norm: float) -> None:
    """Scale gradients down to ``max_norm`` when above it; unlike ``clip_grad_norm_`` no
    multiply-by-one when below, which on the CPU costs as much as the optimizer step."""
    total = grad_norms([p.grad for p in params])[0]
    if total > max_norm:
        nn.utils.clip_grads_with_norm_(params, max_norm, total)


def grad_norms(grads: list[torch.Tensor], members: int = 1) -> torch.Tensor:
    """The gradient norm of each member of stacked gradients ([members, ...] each; one
    network is one member), summed in the same order either way, so that a population of
    one (:mod:`rl.population`) clips exactly as a single network does."""
    return torch.stack([g.reshape(members, -1).norm(dim=1) for g in grads]).norm(dim=0)


def copy_weights(q: nn.Module, target: nn.Module) -> None:
    with torch.no_grad():
        for t, p in zip(target.parameters(), q.parameters(), strict=True):
            t.copy_(p)


def polyak(q: nn.Module, target: nn.Module, tau: float) -> None:
    with torch.no_grad():
        for p, t in zip(q.parameters(), target.parameters(), strict=True):
            t.lerp_(p, tau)


def policy_state(config: DQNConfig, weights: dict[str, torch.Tensor], step: int) -> dict:
    """What :func:`load_policy` needs: a checkpoint's ``best.pt`` (weights_only-loadable)."""
    return {"algo": "dqn", "config": asdict(config), "q": weights, "step": step}


def load_policy(state: dict[str, Any]) -> tuple[DQNConfig, Callable[[np.ndarray], int]]:
    """A greedy policy from a checkpoint or a ``best.pt`` (for ``rl evaluate``)."""
    config = DQNConfig(**state["config"])
    env = gym.make(config.env_id, **config.env_kwargs)
    q = build_network(config, env)
    env.close()
    q.load_state_dict(state["q"])
    act = q.greedy_numpy()
    return config, act
