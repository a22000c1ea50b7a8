"""Replay buffers in preallocated numpy arrays: uniform and prioritized, both with n-step returns.

Transitions are stored per step and per environment ([capacity, num_envs, ...]) exactly
as the vector environment produced them; n-step targets are assembled when sampling,
stopping at the end of an episode. A transition is sampleable once its n-step window is
complete. Storing ``next_obs`` beside ``obs`` doubles observation memory but makes
truncated episodes bootstrap from their true final observation.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch


@dataclass
class Batch:
    obs: torch.Tensor
    actions: torch.Tensor
    returns: torch.Tensor  # discounted sum of up to n rewards
    next_obs: torch.Tensor  # observation after the last of those rewards
    discounts: torch.Tensor  # gamma**k, or 0 where the episode terminated inside the window
    flat_index: torch.Tensor  # for priority updates
    weights: torch.Tensor  # importance-sampling weights (ones for uniform sampling)

    def split(self, size: int, dim: int = 0) -> list[Batch]:
        """Consecutive batches of ``size`` rows along ``dim`` (views, no copies)."""
        columns = [getattr(self, f.name).split(size, dim) for f in fields(self)]
        return [Batch(*parts) for parts in zip(*columns, strict=True)]


class ReplayBuffer:
    ARRAYS = ("obs", "next_obs", "actions", "rewards", "terminated", "done", "valid")

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        obs_shape: tuple[int, ...],
        n_step: int = 1,
        gamma: float = 0.99,
        seed: int = 0,
    ) -> None:
        self.capacity = max(capacity // num_envs, n_step + 1)  # rows; each row is one vector step
        self.num_envs, self.n_step, self.gamma = num_envs, n_step, gamma
        shape = (self.capacity, num_envs)
        self.obs = np.zeros((*shape, *obs_shape), np.float32)
        self.next_obs = np.zeros((*shape, *obs_shape), np.float32)
        self.actions = np.zeros(shape, np.int64)
        self.rewards = np.zeros(shape, np.float32)
        self.terminated = np.zeros(shape, bool)
        self.done = np.zeros(shape, bool)  # terminated or truncated
        self.valid = np.ones(shape, bool)  # False: an environment's reset step, never sampled
        self.pos, self.full = 0, False
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return (self.capacity if self.full else self.pos) * self.num_envs

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        valid: np.ndarray | bool = True,
    ) -> None:
        """One vector step. ``valid`` False marks the copies that this step only reset
        (the step after an episode ended, in Gymnasium's next-step autoreset): their row
        is kept, so rows stay vector steps, but never sampled."""
        p = self.pos
        self.obs[p], self.next_obs[p], self.actions[p] = obs, next_obs, actions
        self.rewards[p], self.terminated[p] = rewards, terminated
        self.done[p] = np.logical_or(terminated, truncated)
        self.valid[p] = valid
        self.pos = (p + 1) % self.capacity
        self.full = self.full or self.pos == 0

    def mark_segment_end(self) -> None:
        """Environments are about to be reset: the newest row ends its episodes (truncated)."""
        if self.pos or self.full:
            self.done[(self.pos - 1) % self.capacity] = True

    def ready_rows(self) -> int:
        """Rows whose n-step window is complete (the newest n-1 rows are not, yet)."""
        return (self.capacity if self.full else self.pos) - (self.n_step - 1)

    def _row_ids(self, offsets: np.ndarray) -> np.ndarray:
        """Map 0..ready_rows-1 to row indices, oldest first."""
        start = self.pos if self.full else 0
        return (start + offsets) % self.capacity

    def sample_many(self, count: int, batch_size: int) -> list[Batch]:
        """``count`` independent uniform batches in one gather: a training phase needs many,
        and the buffer does not change between them (one numpy gather instead of
        ``count`` saves about 0.1 ms per gradient step)."""
        return self.sample(count * batch_size).split(batch_size)

    def sample(self, batch_size: int) -> Batch:
        rows = self._row_ids(self.rng.integers(self.ready_rows(), size=batch_size))
        envs = self.rng.integers(self.num_envs, size=batch_size)
        while (bad := ~self.valid[rows, envs]).any():  # reset steps (about 1 in an episode)
            rows[bad] = self._row_ids(self.rng.integers(self.ready_rows(), size=bad.sum()))
            envs[bad] = self.rng.integers(self.num_envs, size=bad.sum())
        return self._gather(rows, envs, np.ones(batch_size, np.float32))

    def _gather(self, rows: np.ndarray, envs: np.ndarray, weights: np.ndarray) -> Batch:
        if self.n_step == 1:  # the common case, without the window loop
            returns, last = self.rewards[rows, envs], rows
            discount = np.full(len(rows), self.gamma, np.float32)
        else:
            returns, discount, last = self._n_step(rows, envs)
        discount = np.where(self.terminated[last, envs], 0.0, discount).astype(np.float32)
        return Batch(
            torch.from_numpy(self.obs[rows, envs]),
            torch.from_numpy(self.actions[rows, envs]),
            torch.from_numpy(returns),
            torch.from_numpy(self.next_obs[last, envs]),
            torch.from_numpy(discount),
            torch.from_numpy(rows * self.num_envs + envs),
            torch.from_numpy(weights),
        )

    def _n_step(self, rows: np.ndarray, envs: np.ndarray) -> tuple[np.ndarray, ...]:
        """Discounted rewards over up to n steps, cut where an episode ends inside the window."""
        returns = np.zeros(len(rows), np.float32)
        discount = np.ones(len(rows), np.float32)
        alive = np.ones(len(rows), bool)
        last = rows.copy()
        for k in range(self.n_step):
            idx = (rows + k) % self.capacity
            returns += alive * discount * self.rewards[idx, envs]
            last = np.where(alive, idx, last)
            discount = np.where(alive, discount * self.gamma, discount)
            alive &= ~self.done[idx, envs]
        return returns, discount, last

    def state_dict(self) -> dict:
        arrays = {name: torch.from_numpy(getattr(self, name).copy()) for name in self.ARRAYS}
        return {**arrays, "pos": self.pos, "full": self.full, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        for name in self.ARRAYS:
            getattr(self, name)[:] = state[name].numpy()
        self.pos, self.full = state["pos"], state["full"]
        self.rng.bit_generator.state = state["rng"]


class SumTree:
    """Binary tree of priorities over a flat array, batched updates and prefix-sum lookups."""

    def __init__(self, size: int) -> None:
        self.size = 1 << int(np.ceil(np.log2(max(size, 2))))
        self.tree = np.zeros(2 * self.size)

    def update(self, index: np.ndarray, priority: np.ndarray) -> None:
        node = index + self.size
        self.tree[node] = priority
        node = np.unique(node // 2)
        while node[0] >= 1:
            self.tree[node] = self.tree[2 * node] + self.tree[2 * node + 1]
            if node[0] == 1:
                break
            node = np.unique(node // 2)

    def total(self) -> float:
        return float(self.tree[1])

    def find(self, prefix: np.ndarray) -> np.ndarray:
        node = np.ones(len(prefix), dtype=np.int64)
        prefix = prefix.copy()
        while node[0] < self.size:
            left = 2 * node
            go_right = prefix > self.tree[left]
            prefix = np.where(go_right, prefix - self.tree[left], prefix)
            node = np.where(go_right, left + 1, left)
        return node - self.size


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized replay (Schaul et al. 2016) over the same storage."""

    def __init__(self, *args, alpha: float = 0.6, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.alpha = alpha
        self.tree = SumTree(self.capacity * self.num_envs)
        self.max_priority = 1.0

    def add(self, *args, **kwargs) -> None:
        row = self.pos
        super().add(*args, **kwargs)
        flat = row * self.num_envs + np.arange(self.num_envs)
        self.tree.update(flat, np.where(self.valid[row], self.max_priority**self.alpha, 0.0))

    def sample(self, batch_size: int, beta: float = 0.4) -> Batch:
        incomplete = self._row_ids(
            np.arange(self.ready_rows(), self.ready_rows() + self.n_step - 1)
        )
        saved = self._mask_rows(incomplete)
        total = self.tree.total()
        segment = total / batch_size
        prefix = (np.arange(batch_size) + self.rng.random(batch_size)) * segment
        flat = np.minimum(self.tree.find(prefix), len(self) - 1)
        probs = self.tree.tree[flat + self.tree.size] / total
        self._restore_rows(saved)
        weights = (len(self) * np.maximum(probs, 1e-12)) ** (-beta)
        weights = (weights / weights.max()).astype(np.float32)
        return self._gather(flat // self.num_envs, flat % self.num_envs, weights)

    def _mask_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows whose n-step window is incomplete get priority 0 while sampling."""
        flat = (rows[:, None] * self.num_envs + np.arange(self.num_envs)).ravel()
        saved = self.tree.tree[flat + self.tree.size].copy()
        if len(flat):
            self.tree.update(flat, np.zeros(len(flat)))
        return flat, saved

    def _restore_rows(self, saved: tuple[np.ndarray, np.ndarray]) -> None:
        flat, priorities = saved
        if len(flat):
            self.tree.update(flat, priorities)

    def update_priorities(self, flat_index: torch.Tensor, td_error: torch.Tensor) -> None:
        priority = td_error.abs().detach().cpu().numpy() + 1e-6
        self.max_priority = max(self.max_priority, float(priority.max()))
        self.tree.update(flat_index.cpu().numpy(), priority**self.alpha)

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "tree": torch.from_numpy(self.tree.tree.copy()),
            "max_priority": self.max_priority,
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.tree.tree[:] = state["tree"].numpy()
        self.max_priority = state["max_priority"]
