"""Planning against a reward model: what the RL searchers share (Dyna, Sutton 1990).

Each RL searcher keeps its own agent (REINFORCE's policy network, MetaQNN's Q-table, the
DQN's Q-network); the :class:`Planner` gives it a model of the reward
(:mod:`~automl.search.searchers.model`), refitted after every told child, and two uses
of it once ``warmup`` children have been told:

* **proposing**: the agent samples ``candidates`` children of its own, the planner adds
  ``mutations`` of the best children so far (one or two active decisions changed, as
  evolution and BANANAS mutate), and the proposal is the candidate of highest
  acquisition, ``mean + optimism * std`` (optimism in the face of uncertainty), never a
  child already trained or in flight unless every candidate is one; children in flight
  count as told at the model's estimate (``in_flight=believer``), so parallel workers'
  proposals spread out;
* **learning from imagined children** (``dream`` per real one): the agent samples
  children as it would, one Thompson draw of the model scores them all, and the agent
  learns from them as from real ones. What is imagined never reaches the ledger, the
  results or MLflow: only ``ask`` hands out children.

What the model fits is not the rewards but their **normal scores** (``warp=copula``, the
default; ``none`` fits the rewards themselves): reward ``i`` of ``n``, ranked ``r``,
becomes the standard normal quantile at ``(r - 1/2) / n``. A search's rewards are
skewed: a few children near the top, a long tail of failures and children at chance far
below. A stationary model fitted on them spends itself on that gap and sees the
differences among the best as noise; on ranks, the top is as wide as the rest (the
output warping of HEBO, Cowen-Rivers et al. 2022; a Gaussian copula, Salinas et al.
2020). Imagined scores map back to rewards through the told rewards' quantiles, so the
agents learn on the reward's own scale. ``benchmarks/searcher_efficiency.py`` measured
it on the three tables: at one in flight the children to random search's best@100 fell
from 34-39 to 20-24 on digits_wide and from 24-28 to 18-19 on digits_gru, level on
synth_cnn.

``model=none`` switches both off (the model-free agents, for comparison). The planner's
data (the told children's values and rewards) is its whole state: restoring refits the
same model, since fitting is deterministic given the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm, rankdata

from automl.child import arch_key
from automl.search.searchers.base import Status
from automl.search.searchers.model import MODELS, Encoding, RewardModel, make_model
from automl.search.space import SearchSpace

PARENTS = 5  # the best children so far that mutations start from
WARPS = ("copula", "none")  # what the model fits: the rewards' normal scores, or them
IN_FLIGHT = ("believer", "ignore")  # children in flight: told at the model's estimate, or not


@dataclass
class PlanningOptions:
    """The model-based options every RL searcher's ``Config`` starts with."""

    model: str = "gp"  # the reward model: gp, ensemble, forest, or none (model-free)
    warmup: int = 8  # children told before the model is used
    candidates: int = 128  # the agent's own samples per proposal...
    mutations: int = 128  # ...and mutations of the best children so far
    optimism: float = 1.0  # acquisition: mean + optimism * std
    warp: str = "copula"  # the model fits the rewards' normal scores (copula) or them (none)
    in_flight: str = "believer"  # proposing beside running children: see Planner.pick
    dream: int = 32  # imagined children learnt from per real one

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {list(MODELS)}, got {self.model!r}")
        if min(self.warmup, self.candidates) < 1 or min(self.mutations, self.dream) < 0:
            raise ValueError("warmup and candidates must be >= 1, mutations and dream >= 0")
        if self.warp not in WARPS:
            raise ValueError(f"warp must be one of {list(WARPS)}, got {self.warp!r}")
        if self.in_flight not in IN_FLIGHT:
            raise ValueError(f"in_flight must be one of {list(IN_FLIGHT)}, got {self.in_flight!r}")
        if self.optimism < 0:
            raise ValueError(f"optimism must be >= 0, got {self.optimism}")


class Planner:
    """The reward model of one searcher, the children it was fitted on, and their uses."""

    def __init__(self, space: SearchSpace, options: PlanningOptions, seed: int) -> None:
        self.space, self.options, self.seed = space, options, seed
        self.encode = Encoding(space)
        self.model = None if options.model == "none" else make_model(options.model)
        self.told: list[tuple[dict[str, Any], float, bool]] = []  # values, reward, lower bound
        self.failed: list[dict[str, Any]] = []
        self.taken: set[str] = set()  # children told or in flight
        self._keys: dict[tuple[Any, ...], str] = {}  # active values -> the child's key

    @property
    def active(self) -> bool:
        return self.model is not None and len(self.told) >= self.options.warmup

    def key(self, values: dict[str, Any]) -> str:
        """The child ``values`` builds (assignments that build the same network share it),
        cached by the active decisions' values: candidates recur from ask to ask."""
        active = tuple(
            values[d.name] if self.space.is_active(d, values) else None
            for d in self.space.decisions
        )
        if active not in self._keys:
            self._keys[active] = arch_key(self.space.to_architecture(values))
        return self._keys[active]

    def claim(self, values: dict[str, Any]) -> None:
        """``values`` was handed out: it is not a fresh candidate any more."""
        self.taken.add(self.key(values))

    def observe(
        self, values: dict[str, Any], reward: float | None, status: Status, repeated: bool
    ) -> None:
        """A real child's result (a repeated one was told already); refits the model."""
        if repeated:
            return
        if status is Status.FAILED:
            self.failed.append(values)
        else:
            self.told.append((values, float(reward), status is Status.PARTIAL))
        self._fit()

    def _fit(self) -> None:
        if not self.active:
            return
        self.data = self._data()  # kept: the believer refits on it at every parallel ask
        self.sorted_rewards = np.sort([r for _, r, _ in self.told])
        self.model.fit(*self.data, seed=self._fit_seed())

    def _fit_seed(self) -> int:
        return self.seed * 100_003 + len(self.told)

    def _data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The told children as the model sees them: encodings, targets (the rewards or
        their normal scores), and which targets are lower bounds."""
        x = self.encode([v for v, _, _ in self.told])
        y = np.array([r for _, r, _ in self.told])
        lower = np.array([b for _, _, b in self.told])
        return x, normal_scores(y) if self.options.warp == "copula" else y, lower

    def mutations(self, rng: np.random.Generator) -> list[dict[str, Any]]:
        """``mutations`` children one or two decisions away from the best told so far."""
        ranked = sorted(self.told, key=lambda t: t[1], reverse=True)[:PARENTS]
        out = []
        for _ in range(self.options.mutations if ranked else 0):
            child = self.space.mutate(ranked[rng.integers(len(ranked))][0], rng)
            out.append(self.space.mutate(child, rng) if rng.random() < 0.5 else child)
        return out

    def pick(
        self, candidates: list[dict[str, Any]], in_flight: Sequence[dict[str, Any]] = ()
    ) -> int | None:
        """The index of the fresh candidate of highest acquisition (None: none is fresh).

        Children ``in_flight`` count as told at the model's own prediction (the kriging
        believer, Ginsbourger et al. 2010): the model is as sure there as where it has a
        reward, so parallel proposals spread out instead of piling onto one optimistic
        region before any of them reports (``in_flight="ignore"``: they are not seen)."""
        fresh = [i for i, c in enumerate(candidates) if self.key(c) not in self.taken]
        if not fresh:
            return None
        believe = in_flight and self.options.in_flight == "believer"
        model = self._believer(in_flight) if believe else self.model
        mean, std = model.predict(self.encode([candidates[i] for i in fresh]))
        return fresh[int(np.argmax(mean + self.options.optimism * std))]

    def _believer(self, in_flight: Sequence[dict[str, Any]]) -> RewardModel:
        """A model fitted as :meth:`_fit` fits, plus ``in_flight`` at its predictions."""
        x_flight = self.encode(list(in_flight))
        x, y, lower = self.data
        believer = make_model(self.options.model)
        believer.fit(
            np.concatenate([x, x_flight]),
            np.concatenate([y, self.model.predict(x_flight)[0]]),
            np.concatenate([lower, np.zeros(len(x_flight), bool)]),
            seed=self._fit_seed(),
        )
        return believer

    def imagine(self, proposals: list[dict[str, Any]], rng: np.random.Generator) -> np.ndarray:
        """Rewards for imagined children: one Thompson draw of the model, shared by all."""
        draw = self.model.draw(self.encode(proposals), rng)
        if self.options.warp == "copula":
            return from_normal_scores(draw, self.sorted_rewards)
        return draw

    def state_dict(self) -> dict[str, Any]:
        return {"told": [[v, r, b] for v, r, b in self.told], "failed": list(self.failed)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.told = [(dict(v), r, b) for v, r, b in state["told"]]
        self.failed = [dict(v) for v in state["failed"]]
        self.taken = {self.key(v) for v, _, _ in self.told} | {self.key(v) for v in self.failed}
        self._fit()


def normal_scores(y: np.ndarray) -> np.ndarray:
    """Each value's rank as a standard normal quantile (ties share their mean rank)."""
    return norm.ppf((rankdata(y) - 0.5) / len(y))


def from_normal_scores(z: np.ndarray, sorted_rewards: np.ndarray) -> np.ndarray:
    """Scores back to rewards: the told rewards' quantile at each score's normal
    probability, interpolated (within the told range: a draw above every told reward is
    the best told)."""
    n = len(sorted_rewards)
    return np.interp(norm.cdf(z), (np.arange(n) + 0.5) / n, sorted_rewards)
