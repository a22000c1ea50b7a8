"""Many seeds of one DQN configuration trained as one population, in one process.

A DQN gradient step on CartPole-sized networks spends most of its time outside the matrix
products (dispatch, autograd and optimizer overhead per small step). Training K seeds as
one population pays that overhead once for all of them: the K Q-networks are stacked
(:class:`StackedQNetwork`, weights [K, in, out]) and run in batched matrix products, one
loss sums the K members' losses, and one Adam steps all of them (Adam is elementwise,
so that is K independent Adams). Everything a member does on its own stays its own:
environments (a slice of one vector environment, seeded by the member's seed), replay
buffer, exploration stream, gradient clipping (by the member's gradient norm),
evaluations, best policy (``best.pt`` in its folder), metrics callback and result.

A member computes what :func:`rl.dqn.train` computes for its seed, step for step: a
population of one returns the single-seed run's results (tested). Read :func:`train`
top to bottom beside :func:`rl.dqn.train`: the same algorithm, indexed by member.
Checkpoints and resume are the single-seed path's (``--population 1``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path

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
    linear_schedule,
    obs_size,
    save_best,
    segment_seed,
)
from rl.dqn import (
    DQNConfig,
    QNetwork,
    build_network,
    grad_norms,
    load_policy,
    numpy_policy,
    phase_batches,
    policy_state,
    set_up_torch,
)


class StackedQNetwork(nn.Module):
    """K :class:`~rl.dqn.QNetwork` of one shape as stacked parameters; ``forward`` maps
    observations [K, batch, obs] to Q-values [K, batch, actions]."""

    def __init__(self, networks: list[QNetwork]) -> None:
        super().__init__()
        self.dueling = networks[0].value is not None
        self.names = [name for name, _ in _linears(networks[0])]

        def stacked(get) -> nn.ParameterList:  # one [K, ...] parameter per layer
            layers = zip(*(dict(_linears(n)).values() for n in networks), strict=True)
            return nn.ParameterList(
                nn.Parameter(torch.stack([get(m) for m in ms])) for ms in layers
            )

        # [K, in, out]: batched products without a transposed operand (faster than nn.Linear's
        # [out, in] layout in baddbmm)
        self.weights = stacked(lambda m: m.weight.detach().T.contiguous())
        self.biases = stacked(lambda m: m.bias.detach()[None])  # [K, 1, out]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        layers = list(zip(self.weights, self.biases, strict=True))
        heads = 2 if self.dueling else 1
        h = obs
        for w, b in layers[:-heads]:
            h = torch.relu(torch.baddbmm(b, h, w))
        advantage = torch.baddbmm(layers[-heads][1], h, layers[-heads][0])
        if not self.dueling:
            return advantage
        value = torch.baddbmm(layers[-1][1], h, layers[-1][0])
        return value + advantage - advantage.mean(dim=2, keepdim=True)

    def grads_as_networks(self) -> list[torch.Tensor]:
        """The gradients as a :class:`~rl.dqn.QNetwork` lays them out (weight [K, out, in],
        bias per layer, in its order), so that their norms sum in the same order."""
        pairs = zip(self.weights, self.biases, strict=True)
        return [g for w, b in pairs for g in (w.grad.transpose(1, 2).contiguous(), b.grad)]

    def member(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k`` as a :class:`~rl.dqn.QNetwork` state dict (for ``best.pt``)."""
        state = {}
        for name, w, b in zip(self.names, self.weights, self.biases, strict=True):
            state[f"{name}.weight"] = w[k].detach().T.clone()
            state[f"{name}.bias"] = b[k, 0].detach().clone()
        return state


def _linears(network: QNetwork) -> list[tuple[str, nn.Linear]]:
    """Its linear layers in forward order, by state-dict name (value head last)."""
    found = [(n, m) for n, m in network.named_modules() if isinstance(m, nn.Linear)]
    return sorted(found, key=lambda item: item[0].startswith("value"))


def train(
    config: DQNConfig,
    seeds: list[int],
    folders: list[Path | None] | None = None,
    on_metrics: list[Metrics] | None = None,
) -> list[RunResult]:
    """Train one member per seed (``config.seed`` is ignored); ``folders[k]`` receives
    member k's ``best.pt``, ``on_metrics[k]`` its metrics."""
    K, n = len(seeds), config.num_envs
    folders = folders or [None] * K
    logs = on_metrics or [lambda metrics, step: None] * K
    configs = [replace(config, seed=s) for s in seeds]
    set_up_torch(config.threads)
    envs = gym.make_vec(
        config.env_id, num_envs=K * n, vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}, **config.env_kwargs,
    )  # fmt: skip
    obs_space, n_actions = envs.single_observation_space, int(envs.single_action_space.n)
    members = []
    for seed in seeds:  # each member's initial weights as its single-seed run draws them
        torch.manual_seed(seed)
        members.append(build_network(config, envs))
        build_network(config, envs)  # (that run's target network, a copy, draws too)
    q = StackedQNetwork(members)
    target = StackedQNetwork(members)
    optimizer = torch.optim.Adam(q.parameters(), lr=config.learning_rate, fused=True)
    buffer_cls = PrioritizedReplayBuffer if config.prioritized else ReplayBuffer
    extra = {"alpha": config.per_alpha} if config.prioritized else {}
    buffers = [
        buffer_cls(config.buffer_size, n, (obs_size(obs_space),), n_step=config.n_step,
                   gamma=config.gamma, seed=seed, **extra)
        for seed in seeds
    ]  # fmt: skip
    rngs = [np.random.default_rng(seed) for seed in seeds]  # exploration, one per member
    trackers = [EvalTracker(config.env_id) for _ in seeds]
    best: list[dict[str, torch.Tensor] | None] = [None] * K
    step, episodes = 0, [0] * K
    episode_return = np.zeros(K * n)
    started, eval_seconds = time.perf_counter(), 0.0
    acts, target_stale = _greedy(q), True
    losses: list[torch.Tensor] = []

    raw_obs, _ = envs.reset(seed=[segment_seed(s, 0, i) for s in seeds for i in range(n)])
    obs = encode_obs(obs_space, raw_obs)
    while step < config.total_steps:
        # Act: epsilon-greedy per member, on its own random stream.
        epsilon = linear_schedule(
            config.start_epsilon, config.end_epsilon,
            config.exploration_fraction * config.total_steps, step,
        )  # fmt: skip
        actions = np.empty(K * n, np.int64)
        for k, rng in enumerate(rngs):
            part = slice(k * n, (k + 1) * n)
            explore = rng.random(n) < epsilon
            greedy = acts[k](obs[part])
            actions[part] = np.where(explore, rng.integers(n_actions, size=n), greedy)
        raw_next, rewards, terminated, truncated, infos = envs.step(actions)
        next_obs = encode_obs(obs_space, raw_next)
        real_next = next_obs.copy()
        if "final_obs" in infos:  # the true last observation of episodes that just ended
            for i in np.flatnonzero(infos["_final_obs"]):
                real_next[i] = encode_obs(obs_space, infos["final_obs"][i])
        for k, buffer in enumerate(buffers):
            part = slice(k * n, (k + 1) * n)
            buffer.add(obs[part], real_next[part], actions[part], rewards[part],
                       terminated[part], truncated[part])  # fmt: skip
        obs = next_obs
        step += n

        episode_return += rewards
        for i in np.flatnonzero(terminated | truncated):
            episodes[i // n] += 1
            logs[i // n]({"episodic_return": float(episode_return[i]), "epsilon": epsilon}, step)
            episode_return[i] = 0

        # Learn: a phase of gradient steps, every member at once.
        if step >= config.learning_starts and step % config.train_freq < n:
            beta = config.per_beta + (1 - config.per_beta) * min(1.0, step / config.total_steps)
            phases = [phase_batches(b, config, beta) for b in buffers]
            for batches in zip(*phases, strict=True):
                loss, td_errors = gradient_step(q, target, optimizer, _stack(batches), config)
                if config.prioritized:
                    for buffer, batch, td in zip(buffers, batches, td_errors, strict=True):
                        buffer.update_priorities(batch.flat_index, td)
                if config.tau < 1:
                    with torch.no_grad():
                        for p, t in zip(q.parameters(), target.parameters(), strict=True):
                            t.lerp_(p, config.tau)
                losses.append(loss)
            acts, target_stale = _greedy(q), True
            member_losses = torch.stack(losses).mean(0)
            seconds = time.perf_counter() - started - eval_seconds
            for k, log in enumerate(logs):
                log({"loss": float(member_losses[k]), "epsilon": epsilon,
                     "sps": step / seconds}, step)  # fmt: skip
            losses = []
        if config.tau >= 1 and step % config.target_update < n and target_stale:
            target.load_state_dict(q.state_dict())
            target_stale = False

        # Evaluate: each member's greedy episodes on its own evaluation environment.
        if step % config.eval_every < n or step >= config.total_steps:
            eval_started = time.perf_counter()
            for k, member in enumerate(configs):
                mean, std = evaluate(acts[k], config.env_id, config.eval_episodes, member.seed,
                                     step, config.env_kwargs)  # fmt: skip
                if trackers[k].record(mean, std, step):
                    best[k] = q.member(k)
                    if folders[k]:
                        save_best(folders[k], policy_state(member, best[k], step))
                logs[k]({"eval_return": mean, "eval_return_std": std}, step)
            eval_seconds += time.perf_counter() - eval_started

    envs.close()
    seconds = time.perf_counter() - started
    results = []
    for k, member in enumerate(configs):
        weights = best[k] or q.member(k)
        _, returned = load_policy(policy_state(member, weights, step))
        fresh = evaluate(returned, config.env_id, config.eval_episodes, member.seed, 0,
                         config.env_kwargs, offset=FRESH_SEED_OFFSET)  # fmt: skip
        results.append(trackers[k].result(
            fresh=fresh, steps=step, episodes=episodes[k], seconds=seconds,
            steps_per_second=step / (seconds - eval_seconds),
        ))  # fmt: skip
    return results


def gradient_step(
    q: StackedQNetwork,
    target: StackedQNetwork,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    config: DQNConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rl.dqn.gradient_step` for every member at once: the batch is [K, batch, ...];
    the loss is the sum of the members' mean losses, so each member's gradient is its own.
    Returns the members' losses [K] and TD errors [K, batch]."""
    q_taken = q(batch.obs).gather(2, batch.actions[..., None]).squeeze(2)
    with torch.no_grad():  # double DQN: the online net picks, the target rates
        q_next_target = target(batch.next_obs)
        chooser = q(batch.next_obs) if config.double else q_next_target
        next_actions = chooser.argmax(2)
        next_value = q_next_target.gather(2, next_actions[..., None]).squeeze(2)
        td_target = batch.returns + batch.discounts * next_value
    elementwise = nn.functional.smooth_l1_loss(q_taken, td_target, reduction="none")
    if config.prioritized:
        elementwise = batch.weights * elementwise
    member_losses = elementwise.mean(dim=1)
    optimizer.zero_grad(set_to_none=True)
    member_losses.sum().backward()
    _clip_per_member(q, config.max_grad_norm)
    optimizer.step()
    return member_losses.detach(), q_taken.detach() - td_target


def _clip_per_member(q: StackedQNetwork, max_norm: float) -> None:
    """Each member's gradients scaled down to ``max_norm`` when its norm is above it, as
    :func:`rl.dqn._clip_gradients` does for one network (scale 1 leaves them as they are)."""
    total = grad_norms(q.grads_as_networks(), members=q.weights[0].shape[0])
    scale = torch.where(total > max_norm, max_norm / (total + 1e-6), torch.ones_like(total))
    for p in q.parameters():
        p.grad.mul_(scale.view(-1, *[1] * (p.grad.dim() - 1)))


def _stack(batches: tuple[Batch, ...]) -> Batch:
    return Batch(*(torch.stack([getattr(b, f.name) for b in batches]) for f in fields(Batch)))


def _greedy(q: StackedQNetwork) -> list[Callable[[np.ndarray], np.ndarray]]:
    """Each member's numpy greedy policy, as :meth:`rl.dqn.QNetwork.greedy_numpy` makes
    it (the value head is not needed for the argmax)."""
    heads = 2 if q.dueling else 1
    layers = list(zip(q.weights, q.biases, strict=True))[: len(q.weights) - heads + 1]
    return [
        numpy_policy(
            [(w[k].detach().numpy().copy(), b[k, 0].detach().numpy().copy()) for w, b in layers]
        )
        for k in range(q.weights[0].shape[0])
    ]
