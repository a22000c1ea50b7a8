"""Optuna's TPE sampler behind the ask/tell protocol.

Decisions are asked define-by-run in space order, so a decision that is inactive
(the activation of an absent layer) is simply never suggested and TPE models only
what matters. The state is the list of finished trials; restoring replays them into a
fresh study, which is how Optuna itself moves trials between studies.
"""

from __future__ import annotations

from typing import Any

import optuna

from automl.searchers.base import Searcher
from automl.space import SearchSpace


class TPESearcher(Searcher):
    name = "tpe"

    def __init__(self, space: SearchSpace, seed: int = 0, startup: int = 8) -> None:
        super().__init__(space, seed)
        self.startup = startup
        self.study = self._new_study(seed)
        self.trials: dict[int, optuna.trial.Trial] = {}

    def _new_study(self, seed: int) -> optuna.Study:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.startup)
        return optuna.create_study(direction="maximize", sampler=sampler)

    def _propose(self) -> dict[str, Any]:
        trial = self.study.ask()
        values: dict[str, Any] = {}
        for d in self.space.decisions:
            if self.space.is_active(d, values):
                values[d.name] = trial.suggest_categorical(d.name, list(d.choices))
            else:
                values[d.name] = d.choices[0]  # irrelevant: the decision is inactive
        self.trials[self.next_id] = trial  # the id the base class gives this proposal
        return values

    def tell(self, proposal_id: int, reward: float) -> dict[str, float]:
        self.study.tell(self.trials.pop(proposal_id), reward)
        return super().tell(proposal_id, reward)

    def _observe(self, values: dict[str, Any], reward: float) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        finished = [t for t in self.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        return {
            **super().state_dict(),
            "trials": [[dict(t.params), float(t.value)] for t in finished],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.study = self._new_study(self.seed + self.next_id)  # a fresh stream after restore
        self.trials = {}
        for params, value in state["trials"]:
            dists = {
                name: optuna.distributions.CategoricalDistribution(
                    list(self._decision(name).choices)
                )
                for name in params
            }
            self.study.add_trial(
                optuna.trial.create_trial(params=params, distributions=dists, value=value)
            )

    def _decision(self, name: str):
        return next(d for d in self.space.decisions if d.name == name)
