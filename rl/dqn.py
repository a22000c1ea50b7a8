"""DQN for any Gymnasium environment with a discrete action space: one seed, or a population
of K seeds trained together in one process, by one loop.

Double DQN, dueling heads, n-step returns, Huber loss, gradient clipping, hard or Polyak
target updates, a linear epsilon schedule, optional prioritized replay, and Gymnasium
vector environments. Read :func:`train_population` top to bottom: it is the algorithm.

Why one loop for K members: a gradient step on CartPole-sized networks spends much of its
time outside the arithmetic (dispatch, autograd, optimizer bookkeeping). The K Q-networks
are stacked (:class:`QNetwork`, weights ``[K, in, out]``) and run in batched products, one
loss sums the members' losses (each member's gradient is its own) and one fused Adam steps
them all (Adam is elementwise: K independent Adams). A single seed is the population of
one (:func:`train`), so both get every feature: checkpoints, exact resume, ``best.pt``.

What a member does on its own stays its own: replay buffer, exploration stream, gradient
clipping by its own norm, evaluations, best policy, checkpoint folder, metrics callback and
result. Its environments are copies in one vector environment; where the environment has
a vectorised implementation of Gymnasium's own (CartPole: every copy stepped in one NumPy
call) that is used (``vector_env="auto"``), and its copies share one random stream, so a
member's episodes depend on the whole population's seeds; ``vector_env="sync"`` steps
each copy as its own seeded environment, so a member's episodes depend on its seed alone.

The returned policy is the best-evaluated network (as stable-baselines3's
``EvalCallback`` keeps ``best_model``): DQN's greedy policy often peaks and then degrades
while training goes on. It is written to ``best.pt`` and scored again on fresh episodes at
the end, since it was selected on the periodic evaluations.

Checkpoints: when a run writes them, every ``checkpoint_every`` env steps a training
*segment* ends. Each member's state (its slice of the networks and of Adam's moments, its
replay buffer, random stream, counters, best network) is saved in its own folder, and
every environment is reset with a seed fixed by the seeds and the step, so a run resumed
from a checkpoint continues exactly as the uninterrupted run would have. The cost is one
truncated episode per environment and segment; a run without checkpoints resets its
environments only when it starts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from itertools import pairwise
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
    Policies,
    RunResult,
    checkpoint_path,
    encode_obs,
    evaluate,
    linear_schedule,
    obs_size,
    save_best,
    save_checkpoint,
    segment_seed,
)
from runtime.errors import UserError
from runtime.process import configure_process


@dataclass
class DQNConfig:
    """Defaults are rl-zoo's CartPole-v1 DQN hyperparameters, plus the Rainbow-style parts."""

    env_id: str = "CartPole-v1"
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to gymnasium.make
    total_steps: int = 50_000  # env steps per member
    seed: int = 0
    num_envs: int = 1  # per member
    vector_env: str = "auto"  # "auto": the env's own vectorised implementation if any; "sync"
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

    def __post_init__(self) -> None:
        if self.vector_env not in ("auto", "sync"):
            raise ValueError(f"vector_env must be 'auto' or 'sync', not {self.vector_env!r}")


#: gradient steps whose target Q-values one product computes, while the target is frozen
TARGET_CHUNK = 8


def stacked_linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``h @ w + b`` for every member at once: ``[K, batch, in]`` to ``[K, batch, out]``."""
    if w.shape[2] < w.shape[1]:
        return NarrowLinear.apply(h, w, b)
    return torch.baddbmm(b, h, w)


class NarrowLinear(torch.autograd.Function):
    """A layer narrower than its input (the Q-head: 256 to 3), with its products turned
    the way the batched matrix product runs them fastest. Measured with K = 8, a batch of
    64 and a 256 x 3 head on two threads: the forward against a contiguous copy of the
    transposed weights 42 us instead of 84, the weight gradient as ``(g^T h)^T`` 35 us
    instead of autograd's ``h^T g`` at 131; the results are the same products."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(h, w)
        return torch.bmm(h, w.transpose(1, 2).contiguous().transpose(1, 2)).add_(b)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        h, w = ctx.saved_tensors
        grad_h = torch.bmm(g, w.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        grad_w = torch.bmm(g.transpose(1, 2), h).transpose(1, 2).contiguous()
        return grad_h, grad_w, g.sum(dim=1, keepdim=True)


class QNetwork(nn.Module):
    """K ReLU-MLP Q-networks of one shape, stacked: ``forward`` maps observations
    ``[K, batch, obs]`` to Q-values ``[K, batch, actions]``.

    Weights are ``[K, in, out]`` (batched products without a transposed operand). The
    dueling head is one product whose last column is the state value, the others the
    action advantages. Member k is initialised as ``nn.Linear`` initialises a layer, from a
    generator seeded by ``seeds[k]``: its starting weights are its seed's, whoever it
    trains beside."""

    def __init__(
        self, n_obs: int, n_actions: int, hidden: list[int], dueling: bool, seeds: Sequence[int]
    ) -> None:
        super().__init__()
        self.n_actions, self.dueling = n_actions, dueling
        widths = [n_obs, *hidden, n_actions + int(dueling)]
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

        def uniform(shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
            bound = 1 / math.sqrt(fan_in)
            draws = [torch.rand(shape, generator=g) * 2 * bound - bound for g in generators]
            return nn.Parameter(torch.stack(draws))

        layers = list(pairwise(widths))
        self.weights = nn.ParameterList(uniform((i, o), i) for i, o in layers)
        self.biases = nn.ParameterList(uniform((1, o), i) for i, o in layers)
        # the same parameters as a plain tuple: slicing a ParameterList builds a new module
        # (measured: a third of a small network's forward); load_state_dict copies in place
        self.layers = tuple(zip(self.weights, self.biases, strict=True))

    @property
    def members(self) -> int:
        return self.weights[0].shape[0]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        h = obs
        for w, b in self.layers[:-1]:
            h = stacked_linear(h, w, b).relu_()  # in place: one tensor less per layer
        w, b = self.layers[-1]
        out = stacked_linear(h, w, b)
        if not self.dueling:
            return out
        advantage, value = out[..., :-1], out[..., -1:]
        return value + advantage - advantage.mean(dim=2, keepdim=True)

    def member(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k`` as a population of one's state dict (``best.pt``, checkpoints)."""
        return {name: t[k : k + 1].detach().clone() for name, t in self.state_dict().items()}

    def greedy_numpy(self) -> Policies:
        """A numpy copy for acting, where torch calls per env step would cost more than the
        step itself: observations ``[K, n, obs]`` to greedy actions ``[K, n]``. Member k's
        actions are its own products (numpy multiplies a stack slice by slice), so they do
        not depend on the members beside it. Refresh it whenever the weights change. The
        value column does not change the argmax."""
        weights = [w.detach().numpy().copy() for w in self.weights]
        biases = [b.detach().numpy().copy() for b in self.biases]
        weights[-1] = weights[-1][..., : self.n_actions]
        biases[-1] = biases[-1][..., : self.n_actions]

        def act(obs: np.ndarray) -> np.ndarray:
            h = obs
            for w, b in zip(weights[:-1], biases[:-1], strict=True):
                h = np.maximum(h @ w + b, 0.0)
            return (h @ weights[-1] + biases[-1]).argmax(axis=-1)

        return act


def stack_states(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Members' state dicts (each a population of one) as one population's."""
    return {name: torch.cat([s[name] for s in states]) for name in states[0]}


def check_env(config: DQNConfig) -> None:
    """DQN picks among discrete actions; refuse anything else before any worker starts."""
    env = gym.make(config.env_id, **config.env_kwargs)
    env.close()
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise UserError(
            f"--algo dqn needs a discrete action space; {config.env_id} has {env.action_space}"
        )


def make_envs(config: DQNConfig, copies: int) -> gym.vector.VectorEnv:
    """``copies`` environments in one vector env, reset the step after an episode ends
    (Gymnasium's default, and the only mode its own vectorised environments have)."""
    own = config.vector_env == "auto" and gym.spec(config.env_id).vector_entry_point
    return gym.make_vec(
        config.env_id,
        num_envs=copies,
        vectorization_mode="vector_entry_point" if own else "sync",
        **config.env_kwargs,
    )


def reset_seeds(envs: gym.vector.VectorEnv, seeds: Sequence[int], step: int, n: int) -> Any:
    """Reset seeds of a segment starting at ``step``, fixed by the members' seeds: one per
    copy for synchronous envs (a member's copies follow its seed alone), one for the
    whole vectorised env (its copies share one random stream)."""
    if isinstance(envs, gym.vector.SyncVectorEnv):
        return [segment_seed(s, step, i) for s in seeds for i in range(n)]
    return int(np.random.SeedSequence([*seeds, step]).generate_state(1)[0])


def build_network(config: DQNConfig, env: gym.Env, seeds: Sequence[int]) -> QNetwork:
    obs_space = getattr(env, "single_observation_space", env.observation_space)
    act_space = getattr(env, "single_action_space", env.action_space)
    return QNetwork(obs_size(obs_space), int(act_space.n), config.hidden, config.dueling, seeds)


def make_buffer(config: DQNConfig, n_obs: int, seed: int) -> ReplayBuffer:
    extra = {"alpha": config.per_alpha} if config.prioritized else {}
    buffer_cls = PrioritizedReplayBuffer if config.prioritized else ReplayBuffer
    return buffer_cls(
        config.buffer_size, config.num_envs, (n_obs,), n_step=config.n_step,
        gamma=config.gamma, seed=seed, **extra,
    )  # fmt: skip


def train(
    config: DQNConfig,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    on_metrics: Metrics | None = None,
) -> RunResult:
    """One seed (``config.seed``): the population of one."""
    logs = [on_metrics] if on_metrics else None
    return train_population(config, [config.seed], [checkpoint_dir], resume, logs)[0]


def train_population(
    config: DQNConfig,
    seeds: Sequence[int],
    folders: Sequence[Path | None] | None = None,
    resume: bool = False,
    on_metrics: Sequence[Metrics] | None = None,
) -> list[RunResult]:
    """Train one member per seed (``config.seed`` is ignored); ``folders[k]`` receives
    member k's checkpoints and ``best.pt``, ``on_metrics[k]`` its metrics."""
    K, n = len(seeds), config.num_envs
    folders = list(folders or [None] * K)
    logs = list(on_metrics or [lambda metrics, step: None] * K)
    checkpoints = all(folders)
    configure_process(threads=config.threads)
    envs = make_envs(config, K * n)
    obs_space, n_actions = envs.single_observation_space, int(envs.single_action_space.n)
    n_obs = obs_size(obs_space)
    q = build_network(config, envs, seeds)
    target = build_network(config, envs, seeds)
    target.load_state_dict(q.state_dict())
    optimizer = torch.optim.Adam(q.parameters(), lr=config.learning_rate, fused=True)
    buffers = [make_buffer(config, n_obs, seed) for seed in seeds]
    rngs = [np.random.default_rng(seed) for seed in seeds]  # exploration, one per member
    trackers = [EvalTracker(config.env_id) for _ in seeds]
    best: list[dict[str, torch.Tensor] | None] = [None] * K  # best-evaluated weights so far
    step, gradient_steps, episodes = 0, 0, [0] * K

    def snapshot(k: int) -> dict[str, Any]:
        """Member k's part of the state (weights_only-loadable): what a resumed run needs."""
        return {
            "algo": "dqn", "config": asdict(replace(config, seed=seeds[k])), "seeds": list(seeds),
            "q": q.member(k), "target": target.member(k),
            "optimizer": member_optimizer_state(optimizer, k), "buffer": buffers[k].state_dict(),
            "rng": rngs[k].bit_generator.state, "step": step, "gradient_steps": gradient_steps,
            "episodes": episodes[k], "tracker": trackers[k].state_dict(), "best_q": best[k],
        }  # fmt: skip

    if resume and checkpoints and (at := common_checkpoint_step(folders)) is not None:
        states = [torch.load(checkpoint_path(f, at), weights_only=True) for f in folders]
        q.load_state_dict(stack_states([s["q"] for s in states]))
        target.load_state_dict(stack_states([s["target"] for s in states]))
        optimizer.load_state_dict(stack_optimizer_states([s["optimizer"] for s in states]))
        for k, s in enumerate(states):
            buffers[k].load_state_dict(s["buffer"])
            rngs[k].bit_generator.state = s["rng"]
            trackers[k].load_state_dict(s["tracker"])
            episodes[k], best[k] = s["episodes"], s["best_q"]
        step, gradient_steps = at, states[0]["gradient_steps"]

    episode_return = np.zeros(K * n)
    started, steps_at_start, eval_seconds = time.perf_counter(), step, 0.0
    act, target_stale = q.greedy_numpy(), True
    losses: list[torch.Tensor] = []
    segment_start = True  # the run (or the resumed run) starts a segment
    while step < config.total_steps:
        # A segment starts: checkpoint, then reset every env with a seed fixed by (seeds, step).
        if segment_start or (checkpoints and step % config.checkpoint_every < n):
            segment_start = False
            if checkpoints and step > 0:
                for k, folder in enumerate(folders):
                    save_checkpoint(folder, step, snapshot(k))
            for buffer in buffers:
                buffer.mark_segment_end()
            raw_obs, _ = envs.reset(seed=reset_seeds(envs, seeds, step, n))
            obs = encode_obs(obs_space, raw_obs)
            episode_return[:] = 0
            resetting = np.zeros(K * n, bool)  # copies whose episode ended last step

        # Act: epsilon-greedy on the online networks, each member on its own random stream.
        epsilon = linear_schedule(
            config.start_epsilon, config.end_epsilon,
            config.exploration_fraction * config.total_steps, step,
        )  # fmt: skip
        actions = act(obs.reshape(K, n, n_obs)).reshape(K * n)
        for k, rng in enumerate(rngs):
            explore = rng.random(n) < epsilon
            random_actions = rng.integers(n_actions, size=n)
            part = slice(k * n, (k + 1) * n)
            actions[part] = np.where(explore, random_actions, actions[part])
        raw_next, rewards, terminated, truncated, _ = envs.step(actions)
        next_obs = encode_obs(obs_space, raw_next)
        # A copy whose episode ended last step was reset by this one: not a transition.
        for k, buffer in enumerate(buffers):
            part = slice(k * n, (k + 1) * n)
            buffer.add(obs[part], next_obs[part], actions[part], rewards[part],
                       terminated[part], truncated[part], valid=~resetting[part])  # fmt: skip
        obs = next_obs
        step += n

        episode_return += rewards
        resetting = terminated | truncated
        for i in np.flatnonzero(resetting):
            episodes[i // n] += 1
            logs[i // n]({"episodic_return": float(episode_return[i]), "epsilon": epsilon}, step)
            episode_return[i] = 0

        # Learn: a phase of gradient steps every train_freq env steps, every member at once.
        if step >= config.learning_starts and step % config.train_freq < n:
            beta = config.per_beta + (1 - config.per_beta) * min(1.0, step / config.total_steps)
            for batch, next_target in phase(buffers, target, config, beta):
                loss, td_errors = gradient_step(
                    q, target, optimizer, batch, config, next_target=next_target
                )
                gradient_steps += 1
                if config.prioritized:
                    for k, buffer in enumerate(buffers):
                        buffer.update_priorities(batch.flat_index[k], td_errors[k])
                if config.tau < 1:
                    polyak(q, target, config.tau)
                losses.append(loss)
            act, target_stale = q.greedy_numpy(), True
            member_losses = torch.stack(losses).mean(0)
            sps = (step - steps_at_start) / (time.perf_counter() - started - eval_seconds)
            for k, log in enumerate(logs):
                log({"loss": float(member_losses[k]), "epsilon": epsilon, "sps": sps}, step)
            losses = []
        if config.tau >= 1 and step % config.target_update < n and target_stale:
            copy_weights(q, target)  # hard update; skipped while q has not changed since
            target_stale = False

        # Evaluate: each member's greedy episodes, every member's side by side.
        if step % config.eval_every < n or step >= config.total_steps:
            eval_started = time.perf_counter()
            scores = evaluate(q.greedy_numpy(), config.env_id, config.eval_episodes, seeds, step,
                              config.env_kwargs)  # fmt: skip
            for k, (seed, (mean, std)) in enumerate(zip(seeds, scores, strict=True)):
                if trackers[k].record(mean, std, step):
                    best[k] = q.member(k)
                    if folders[k]:
                        save_best(folders[k], policy_state(config, seed, best[k], step))
                logs[k]({"eval_return": mean, "eval_return_std": std}, step)
            eval_seconds += time.perf_counter() - eval_started

    if checkpoints:
        for k, folder in enumerate(folders):
            save_checkpoint(folder, step, snapshot(k))
    seconds = time.perf_counter() - started
    returned = build_network(config, envs, seeds)  # each member's best-evaluated weights
    returned.load_state_dict(stack_states([b or q.member(k) for k, b in enumerate(best)]))
    envs.close()
    fresh = evaluate(returned.greedy_numpy(), config.env_id, config.eval_episodes, seeds, 0,
                     config.env_kwargs, offset=FRESH_SEED_OFFSET)  # fmt: skip
    sps = (step - steps_at_start) / (seconds - eval_seconds)
    return [
        tracker.result(score, steps=step, episodes=n, seconds=seconds, steps_per_second=sps)
        for tracker, score, n in zip(trackers, fresh, episodes, strict=True)
    ]


def gradient_step(
    q: QNetwork,
    target: QNetwork,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    config: DQNConfig,
    next_mask: torch.Tensor | None = None,
    next_target: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Huber-loss step of every member towards its (double) DQN target; the batch is
    ``[K, batch, ...]``. The loss is the sum of the members' mean losses, so each member's
    gradient is its own. Returns the members' losses ``[K]`` and TD errors ``[K, batch]``
    (for priorities). ``next_mask`` ``[K, batch, actions]``: the actions valid in each next
    state, where some are not (the architecture environment's shorter decisions).
    ``next_target``: the target network's Q-values of the next observations, where the
    caller computed them for several steps at once (:func:`phase`)."""
    q_taken = q(batch.obs).gather(2, batch.actions[..., None]).squeeze(2)
    with torch.no_grad():  # double DQN: the online net picks, the target rates
        q_next_target = target(batch.next_obs) if next_target is None else next_target
        chooser = q(batch.next_obs) if config.double else q_next_target
        if next_mask is not None:
            chooser = chooser.masked_fill(~next_mask, float("-inf"))
        next_actions = chooser.argmax(2)
        next_value = q_next_target.gather(2, next_actions[..., None]).squeeze(2)
        td_target = batch.returns + batch.discounts * next_value
    elementwise = nn.functional.smooth_l1_loss(q_taken, td_target, reduction="none")
    if config.prioritized:  # importance weights; uniform replay's are all one
        elementwise = batch.weights * elementwise
    member_losses = elementwise.mean(dim=1)
    optimizer.zero_grad(set_to_none=True)
    member_losses.sum().backward()
    clip_per_member(list(q.parameters()), config.max_grad_norm)
    optimizer.step()
    return member_losses.detach(), q_taken.detach() - td_target


def clip_per_member(params: list[nn.Parameter], max_norm: float) -> None:
    """Each member's gradients scaled down to ``max_norm`` when its norm is above it (the
    norm over all of its parameters, as ``clip_grad_norm_`` computes for one network)."""
    grads = [p.grad for p in params]
    members = grads[0].shape[0]
    norms = [torch.linalg.vector_norm(g.view(members, -1), dim=1) for g in grads]
    total = torch.linalg.vector_norm(torch.stack(norms), dim=0)
    if bool((total > max_norm).any()):
        scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, [scale.view(-1, *[1] * (g.dim() - 1)) for g in grads])


def phase(
    buffers: Sequence[ReplayBuffer], target: QNetwork, config: DQNConfig, beta: float
) -> Iterator[tuple[Batch, torch.Tensor | None]]:
    """The stacked batches ``[K, batch, ...]`` of one training phase, each with the target
    network's Q-values of its next observations where they can be computed ahead.

    Uniform replay draws a member's whole phase in one gather, and the members' draws are
    stacked once, not once per step. With hard updates (``tau`` 1) the target network is
    frozen through a phase (it is copied between phases), so its Q-values are computed for
    ``TARGET_CHUNK`` steps in one product: a product of 512 rows runs nearer the machine's
    peak than eight of 64 (measured with K = 8 and 256 x 256 layers: 0.49 against 0.58 ms
    per 64 rows). Prioritized replay draws each batch after the previous step has updated
    the priorities, and Polyak averaging moves the target after every step: those steps
    are taken one at a time, and the gradient step rates its own next observations."""
    if config.prioritized:
        for _ in range(config.gradient_steps):
            yield stack([buffer.sample(config.batch_size, beta) for buffer in buffers]), None
        return
    drawn = stack([buffer.sample(config.gradient_steps * config.batch_size) for buffer in buffers])
    batches = drawn.split(config.batch_size, dim=1)
    if config.tau < 1:
        yield from ((batch, None) for batch in batches)
        return
    chunk = TARGET_CHUNK
    parts = [batches[first : first + chunk] for first in range(0, len(batches), chunk)]
    next_obs_parts = drawn.next_obs.split(chunk * config.batch_size, dim=1)
    for part, next_obs in zip(parts, next_obs_parts, strict=True):
        with torch.no_grad():
            next_targets = target(next_obs).split(config.batch_size, dim=1)
        yield from zip(part, next_targets, strict=True)


def stack(batches: Sequence[Batch]) -> Batch:
    """The members' batches as one ``[K, batch, ...]`` batch."""
    return Batch(*(torch.stack([getattr(b, f.name) for b in batches]) for f in fields(Batch)))


def copy_weights(q: nn.Module, target: nn.Module) -> None:
    with torch.no_grad():
        torch._foreach_copy_(list(target.parameters()), list(q.parameters()))


def polyak(q: nn.Module, target: nn.Module, tau: float) -> None:
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(q.parameters()), tau)


def member_optimizer_state(optimizer: torch.optim.Optimizer, k: int) -> dict[str, Any]:
    """Member k's slice of Adam's state: what a population of one's Adam would hold."""
    full = optimizer.state_dict()
    state = {
        index: {name: (t if t.dim() == 0 else t[k : k + 1]).clone() for name, t in s.items()}
        for index, s in full["state"].items()
    }
    return {"state": state, "param_groups": full["param_groups"]}


def stack_optimizer_states(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Members' Adam states as the population's (every member took the same steps)."""
    first = states[0]["state"]
    stacked = {
        index: {
            name: t if t.dim() == 0 else torch.cat([s["state"][index][name] for s in states])
            for name, t in first[index].items()
        }
        for index in first
    }
    return {"state": stacked, "param_groups": states[0]["param_groups"]}


def common_checkpoint_step(folders: Sequence[Path]) -> int | None:
    """The newest step every member has a checkpoint of (a run killed while writing them
    leaves some members one checkpoint ahead; the previous one is kept)."""
    steps = [{int(p.stem.split("-")[1]) for p in Path(f).glob("checkpoint-*.pt")} for f in folders]
    common = set.intersection(*steps) if steps else set()
    return max(common) if common else None


def policy_state(
    config: DQNConfig, seed: int, weights: dict[str, torch.Tensor], step: int
) -> dict[str, Any]:
    """What :func:`load_policy` needs: a member's ``best.pt`` (weights_only-loadable)."""
    return {"algo": "dqn", "config": asdict(replace(config, seed=seed)), "q": weights, "step": step}


def load_policy(state: dict[str, Any]) -> tuple[DQNConfig, Policies]:
    """The greedy policy of a checkpoint or a ``best.pt`` (for ``rl evaluate``): it acts as
    the member did in training, so evaluated again it scores what training recorded."""
    config = DQNConfig(**state["config"])
    env = gym.make(config.env_id, **config.env_kwargs)
    q = build_network(config, env, [config.seed])
    env.close()
    q.load_state_dict(state["q"])
    return config, q.greedy_numpy()
