"""A learned model of the reward: what the model-based RL searchers plan against.

A hundred noisy rewards are too few for a policy or a Q-function to learn from directly;
a regression model over the children told so far generalises from them at once (the
finding behind BANANAS, White et al. 2021, and Dyna, Sutton 1990). The model sees a
proposal through a fixed :class:`Encoding` (one-hot of every active decision; an
inactive decision is all zeros, so it cannot matter) and gives, for each candidate, the
prediction of each of its members: their mean is the estimate, their spread the
uncertainty, and one member alone is a Thompson draw.

Two kinds, picked with ``--searcher-opt model=...`` (``benchmarks/reward_model.py``
measures them side by side on the tabular benchmarks):

* ``ensemble``: five small MLPs trained at once as one batched network, each on its own
  Bayesian-bootstrap weighting of the data and its own initialisation;
* ``forest``: scikit-learn's extremely randomised trees; a member is a tree.

What the model is fitted on: finished children at their reward; children stopped early
as *lower bounds* (the ensemble penalises only a prediction below one; the GP and the
forest, which cannot, take the larger of the reward and what the finished children
alone predict there); failed children
are left out (a failure is not a number: the agents still learn their configured
``failure_reward`` from it, and the searchers never propose a failed child again).
Fitting is deterministic given the data and the seed, so a restored searcher refits the
model it had.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from automl.search.space import SearchSpace

MODELS = ("gp", "ensemble", "forest", "none")
T = TypeVar("T")


class Encoding:
    """Proposal values -> a fixed-length 0/1 vector: one-hot per active decision."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.offsets = np.cumsum([0, *space.sizes[:-1]])
        self.dim = int(sum(space.sizes))

    def __call__(self, proposals: list[dict[str, Any]]) -> np.ndarray:
        x = np.zeros((len(proposals), self.dim), dtype=np.float32)
        for row, values in enumerate(proposals):
            for offset, d in zip(self.offsets, self.space.decisions, strict=True):
                if self.space.is_active(d, values):
                    x[row, offset + d.choices.index(values[d.name])] = 1.0
        return x


class RewardModel(Protocol):
    def fit(self, x: np.ndarray, y: np.ndarray, lower: np.ndarray, seed: int) -> None:
        """Fit on rows ``x`` with rewards ``y``; where ``lower`` the reward is a lower bound."""

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The estimate of each row and its uncertainty (a standard deviation)."""

    def draw(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One Thompson draw: a reward function the data allows, evaluated at the rows."""


class _Members:
    """Models made of members (networks, trees): the spread over members is the
    uncertainty, and a draw is one member."""

    def members(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        members = self.members(x)
        return members.mean(0), members.std(0)

    def draw(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        members = self.members(x)
        return members[rng.integers(len(members))]


class EnsembleModel(_Members):
    """``k`` MLPs (``dim -> hidden -> hidden -> 1``) trained as one batched network."""

    def __init__(self, k: int = 5, hidden: int = 32, steps: int = 60, lr: float = 0.02) -> None:
        self.k, self.hidden, self.steps, self.lr = k, hidden, steps, lr
        self.weights: list[torch.Tensor] = []
        self.scale = (0.0, 1.0)

    def fit(self, x: np.ndarray, y: np.ndarray, lower: np.ndarray, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        mean, std = float(y.mean()), float(y.std()) + 1e-6
        self.scale = (mean, std)
        xt = torch.from_numpy(x)
        yt = torch.from_numpy(((y - mean) / std).astype(np.float32))
        bound = torch.from_numpy(lower)
        # Bayesian bootstrap: each member weighs the data by its own Exp(1) draws
        w = -torch.log(torch.rand(self.k, len(y), generator=g)).clamp_min(1e-6)
        w = w / w.mean(1, keepdim=True)
        self.weights = self._init(x.shape[1], g)
        optimizer = torch.optim.Adam(self.weights, lr=self.lr, weight_decay=1e-4)
        for _ in range(self.steps):
            error = self._forward(xt) - yt
            error = torch.where(bound, error.clamp(max=0.0), error)  # only below a lower bound
            loss = (w * error**2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def _init(self, dim: int, g: torch.Generator) -> list[torch.Tensor]:
        def layer(fan_in: int, fan_out: int) -> list[torch.Tensor]:
            bound = fan_in**-0.5
            weight = (torch.rand(self.k, fan_in, fan_out, generator=g) * 2 - 1) * bound
            bias = (torch.rand(self.k, 1, fan_out, generator=g) * 2 - 1) * bound
            return [weight.requires_grad_(), bias.requires_grad_()]

        h = self.hidden
        return [*layer(dim, h), *layer(h, h), *layer(h, 1)]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        w1, b1, w2, b2, w3, b3 = self.weights
        h = torch.relu(torch.matmul(x, w1) + b1)  # [k, rows, hidden]
        h = torch.relu(torch.bmm(h, w2) + b2)
        return (torch.bmm(h, w3) + b3).squeeze(-1)

    @torch.no_grad()
    def members(self, x: np.ndarray) -> np.ndarray:
        mean, std = self.scale
        return self._forward(torch.from_numpy(x)).numpy() * std + mean


class ForestModel(_Members):
    """Extremely randomised trees (scikit-learn); a member is one tree."""

    def __init__(self, trees: int = 50) -> None:
        self.trees = trees
        self.forest: Any = None

    def fit(self, x: np.ndarray, y: np.ndarray, lower: np.ndarray, seed: int) -> None:
        _fit_raising_bounds(self, self._fit, x, y, lower, seed)

    def _fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> None:
        from sklearn.ensemble import ExtraTreesRegressor

        self.forest = ExtraTreesRegressor(
            n_estimators=self.trees, min_samples_leaf=2, max_features=0.5, random_state=seed
        ).fit(x, y)

    def members(self, x: np.ndarray) -> np.ndarray:
        return np.stack([tree.predict(x) for tree in self.forest.estimators_])


@functools.cache
def _blas() -> Any:
    from threadpoolctl import ThreadpoolController  # scikit-learn's, to limit BLAS threads

    return ThreadpoolController()


def _one_blas_thread(method: Callable[..., T]) -> Callable[..., T]:
    """Run on one BLAS thread: the GP's matrices have a few hundred rows, where BLAS threads
    cost more than they give (measured: 0.56 s a child at 300 children with two searches
    side by side, 0.1 s on one thread) and would compete with the children training."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        with _blas().limit(limits=1, user_api="blas"):
            return method(*args, **kwargs)

    return wrapper


class GPModel:
    """A Gaussian process with a squared-exponential kernel on the encoding (a function of
    how many decisions two proposals differ in); its length scale and noise are the grid
    point of highest marginal likelihood. Exact, and a few milliseconds at 300 children."""

    LENGTHS = (1.0, 2.0, 4.0)
    NOISES = (0.01, 0.1, 0.3)

    @_one_blas_thread
    def fit(self, x: np.ndarray, y: np.ndarray, lower: np.ndarray, seed: int) -> None:
        _fit_raising_bounds(self, self._fit, x, y, lower, seed)

    def _fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> None:
        self.x = x.astype(np.float64)
        self.mean, self.std = float(y.mean()), float(y.std()) + 1e-6
        target = (y - self.mean) / self.std
        d2 = _sqdist(self.x, self.x)
        best = -np.inf
        for length, noise in itertools.product(self.LENGTHS, self.NOISES):
            k = np.exp(-d2 / (2 * length**2)) + noise * np.eye(len(y))
            chol = np.linalg.cholesky(k)
            alpha = _solve(chol, target)
            evidence = -0.5 * target @ alpha - np.log(np.diag(chol)).sum()
            if evidence > best:
                best, self.length, self.chol, self.alpha = evidence, length, chol, alpha

    def _cross(self, x: np.ndarray) -> np.ndarray:
        return np.exp(-_sqdist(x.astype(np.float64), self.x) / (2 * self.length**2))

    @_one_blas_thread
    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cross = self._cross(x)
        v = np.linalg.solve(self.chol, cross.T)
        var = np.clip(1.0 - (v**2).sum(0), 1e-12, None)
        return cross @ self.alpha * self.std + self.mean, np.sqrt(var) * self.std

    @_one_blas_thread
    def draw(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cross = self._cross(x)
        v = np.linalg.solve(self.chol, cross.T)
        cov = np.exp(-_sqdist(x.astype(np.float64), x.astype(np.float64)) / (2 * self.length**2))
        cov = cov - v.T @ v + 1e-6 * np.eye(len(x))
        sample = np.linalg.cholesky(cov) @ rng.standard_normal(len(x))
        return (cross @ self.alpha + sample) * self.std + self.mean


def _fit_raising_bounds(
    model: RewardModel,
    fit: Callable[[np.ndarray, np.ndarray, int], None],
    x: np.ndarray,
    y: np.ndarray,
    lower: np.ndarray,
    seed: int,
) -> None:
    """Fit on values only: a lower bound becomes the larger of itself and what the
    finished children alone predict at its row."""
    if lower.any() and not lower.all():
        fit(x[~lower], y[~lower], seed)
        y = np.where(lower, np.maximum(y, model.predict(x)[0]), y)
    fit(x, y, seed)


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.clip((a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T, 0.0, None)


def _solve(chol: np.ndarray, target: np.ndarray) -> np.ndarray:
    return np.linalg.solve(chol.T, np.linalg.solve(chol, target))


def make_model(kind: str) -> RewardModel:
    if kind == "gp":
        return GPModel()
    if kind == "ensemble":
        return EnsembleModel()
    if kind == "forest":
        return ForestModel()
    raise ValueError(f"model must be one of {MODELS}, got {kind!r}")
