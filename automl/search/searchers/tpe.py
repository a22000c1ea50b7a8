"""Optuna's TPE sampler behind the ask/tell protocol.

Decisions are asked define-by-run in space order, so a decision that is inactive
(the activation of an absent layer) is simply never suggested and TPE models only
what matters. A failed child is told to Optuna as a FAIL trial, so TPE never takes it
for a result. The state is the list of told trials; restoring replays them into a fresh
study, which is how Optuna itself moves trials between studies. A child stopped early is
a PRUNED trial with its partial reward as an intermediate value, as Optuna's own pruners
leave one; TPE ranks such trials below the completed ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from automl.search.searchers.base import Proposal, Searcher, Status
from automl.search.space import SearchSpace


@dataclass
class TPEConfig:
    startup: int = 8  # random proposals before TPE models the results

    def __post_init__(self) -> None:
        if self.startup < 0:
            raise ValueError(f"startup must be >= 0, got {self.startup}")


class TPESearcher(Searcher):
    name = "tpe"
    Config = TPEConfig

    def __init__(self, space: SearchSpace, seed: int = 0, config: TPEConfig | None = None) -> None:
        super().__init__(space, seed, config)
        self.study = self._new_study(seed)
        self.trials: dict[int, optuna.trial.Trial] = {}

    def _new_study(self, seed: int) -> optuna.Study:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.config.startup)
        return optuna.create_study(direction="maximize", sampler=sampler)

    def _propose(self, proposal_id: int) -> dict[str, Any]:
        trial = self.study.ask()
        self.trials[proposal_id] = trial
        return self._suggest(trial)

    def _adopt(self, proposal_id: int, values: dict[str, Any]) -> None:
        """As Optuna takes a known point: enqueued, then asked (its suggestions are the
        enqueued values)."""
        active = {
            d.name: values[d.name] for d in self.space.decisions if self.space.is_active(d, values)
        }
        self.study.enqueue_trial(active)
        self.trials[proposal_id] = trial = self.study.ask()
        self._suggest(trial)

    def _suggest(self, trial: optuna.trial.Trial) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for d in self.space.decisions:
            if self.space.is_active(d, values):
                values[d.name] = trial.suggest_categorical(d.name, list(d.choices))
            else:
                values[d.name] = d.choices[0]  # irrelevant: the decision is inactive
        return values

    def _observe(
        self, proposal: Proposal, reward: float | None, status: Status, repeated: bool
    ) -> dict[str, float]:
        trial = self.trials.pop(proposal.id)
        if status is Status.FAILED:
            self.study.tell(trial, state=TrialState.FAIL)
        elif status is Status.PARTIAL:  # as Optuna's pruners leave a trial: its value so far
            trial.report(reward, step=0)
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, reward)
        return {}

    def state_dict(self) -> dict[str, Any]:
        told = [t for t in self.study.trials if t.state != TrialState.RUNNING]
        return {
            **super().state_dict(),
            "trials": [
                [dict(t.params), t.value, t.state.name, t.intermediate_values.get(0)] for t in told
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.study = self._new_study(self.seed + state["next_id"])  # a fresh stream after restore
        self.trials = {}
        choices = {d.name: list(d.choices) for d in self.space.decisions}
        for params, value, trial_state, partial in state["trials"]:
            dists = {
                name: optuna.distributions.CategoricalDistribution(choices[name]) for name in params
            }
            self.study.add_trial(
                optuna.trial.create_trial(
                    params=params,
                    distributions=dists,
                    value=value,
                    state=TrialState[trial_state],
                    intermediate_values={} if partial is None else {0: partial},
                )
            )
