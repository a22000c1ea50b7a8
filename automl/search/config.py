"""The options of ``automl search`` as one typed dataclass: each option and its default,
written once. Light to import (no Ray), since the command line is built from it before
Ray may be imported (:func:`runtime.ray_cluster.prepare`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from automl.data.prepare import DataOptions
from automl.search.placement import ChildResources, parse_rules
from automl.search.searchers import SEARCHERS
from runtime.cli import (
    duration,
    non_negative_float,
    non_negative_int,
    option,
    overrides_option,
    positive_float,
    positive_int,
    retry_count,
)
from runtime.resources import join_timeout_field, max_wait_field


def model_count(text: str) -> int | None:
    """``--log-models``: a count >= 0, or ``all`` (None: no limit)."""
    if text == "all":
        return None
    try:
        return non_negative_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a count >= 0 or 'all', got {text!r}") from None


@dataclass(kw_only=True)
class SearchConfig(DataOptions):
    """A search, as ``automl search`` takes it: every option and its one default."""

    OPTION_GROUPS: ClassVar[dict[str, tuple[str, ...]]] = {
        "data": ("data", "task", "frontend", "max_seconds"),
        "space and searcher": ("space", "searcher", "searcher_opt", "seed", "warm_start"),
        "budget, early stopping and objective": (
            "trials", "max_duplicates", "epochs", "time_budget", "early_stop", "grace_epochs",
            "objective", "target", "confirm",
        ),
        "resources and cluster": (
            "workers", "cpus_per_trial", "gpus_per_trial", "trial_resources", "max_wait",
            "address", "join_timeout", "retries",
        ),
        "tracking and output": (
            "experiment", "tracking_uri", "storage", "resume", "restart", "log_models", "json",
        ),
    }  # fmt: skip

    space: str = field(
        metadata=option("search-space YAML file, or a built-in name (seed_gru, cnn, gru_hparams)")
    )
    searcher: str = field(default="reinforce", metadata=option(f"one of {', '.join(SEARCHERS)}"))
    searcher_opt: list[str] = field(
        default_factory=list,
        metadata=overrides_option("set a field of the searcher's config, e.g. lr=0.02"),
    )
    trials: int = field(
        default=20,
        metadata=option(
            "children to train (duplicates a searcher proposes again do not count)",
            type=positive_int,
        ),
    )
    max_duplicates: int = field(
        default=50,
        metadata=option(
            "end the search when this many proposals in a row are children already trained "
            "(the searcher has converged)",
            type=positive_int,
        ),
    )
    epochs: int | None = field(
        default=None,
        metadata=option(
            "training epochs per child (default: the space's, else 10)", type=positive_int
        ),
    )
    early_stop: str = field(
        default="none",
        metadata=option(
            "stop hopeless children early: asha (successive halving), median, or none",
            choices=["none", "asha", "median"],
        ),
    )
    grace_epochs: int | None = field(
        default=None,
        metadata=option(
            "epochs every child trains before --early-stop may stop it "
            "(default: a quarter of the epochs, at least 1)",
            type=positive_int,
        ),
    )
    time_budget: float | None = field(
        default=None,
        metadata=option(
            "no child starts after this long (90s, 15m, 2h); children still running get 10%% "
            "more (at least 10 s), then stop. Whichever of --trials and this comes first",
            type=duration,
        ),
    )
    objective: str = field(
        default="uar",
        metadata=option(
            "the reward: dev UAR, or dev UAR traded against latency or parameters (MnasNet)",
            choices=["uar", "uar-latency", "uar-params"],
        ),
    )
    target: float | None = field(
        default=None,
        metadata=option(
            "the cost --objective trades against: milliseconds (uar-latency) or parameters",
            type=positive_float,
        ),
    )
    confirm: int = field(
        default=5,
        metadata=option(
            "before the best child is chosen, the K best are each trained once more on the "
            "next seed, and the best is the one with the highest mean over its seeds (one dev "
            "UAR favours lucky seeds); one whose reward is not above the best mean confirmed "
            "so far is skipped; at most a tenth of --trials, 0 for none. Within "
            "--time-budget: the searcher's children stop early enough to leave them time",
            type=non_negative_int,
            metavar="K",
        ),
    )
    workers: int = field(default=1, metadata=option("children trained at once", type=positive_int))
    cpus_per_trial: float = field(
        default=1.0, metadata=option("CPUs (torch threads) per child", type=non_negative_float)
    )
    gpus_per_trial: float = field(
        default=0.0,
        metadata=option(
            "GPUs per child; fractions share a GPU (0.5 = two children per GPU)",
            type=non_negative_float,
        ),
    )
    trial_resources: list[str] = field(
        default_factory=list,
        metadata=overrides_option(
            "a Ray resource every child needs, e.g. a100=1 for nodes started with "
            "`ray start --resources '{\"a100\": 1}'`, or only some: 'GPU=1 if params >= 2e5', "
            "'a100=1 if family == cnn' (a child's parameter count or architecture field; "
            "repeatable, later rules win)",
            "--trial-resource",
        ),
    )
    max_wait: float | None = max_wait_field("children", "search")
    address: str | None = field(
        default=None, metadata=option("join this Ray cluster (default: start Ray locally)")
    )
    join_timeout: float = join_timeout_field()
    seed: int = field(
        default=0,
        metadata=option(
            "seed of the searcher and of the children's weights and shuffling", type=int
        ),
    )
    experiment: str = field(default="automl", metadata=option("MLflow experiment name"))
    tracking_uri: str | None = field(
        default=None,
        metadata=option("MLflow URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)"),
    )
    retries: int = field(
        default=2,
        metadata=option(
            "times a child is restarted when its worker process dies (0-10)", type=retry_count
        ),
    )
    storage: str = field(
        default="automl-runs",
        metadata=option(
            "folder for the search's state and Ray's records (a folder, not Optuna's database URL)"
        ),
    )
    resume: bool = field(
        default=False,
        metadata=option(
            "continue the interrupted search of --experiment from its saved state",
            action="store_true",
        ),
    )
    restart: bool = field(
        default=False,
        metadata=option(
            "start over although --experiment holds an interrupted search (its state is "
            "kept beside, its MLflow run closed)",
            action="store_true",
        ),
    )
    warm_start: str | None = field(
        default=None,
        metadata=option(
            "before the first proposal, tell the searcher the finished children of the "
            "searches in this MLflow experiment over the same space and corpus",
            metavar="EXPERIMENT",
        ),
    )
    log_models: int | None = field(
        default=3,
        metadata=option(
            "log the best K finished children as MLflow models (loadable, registrable, "
            "exportable) when the search ends; 'all' for every one, 0 for none",
            type=model_count,
            metavar="K",
        ),
    )
    json: str | None = field(default=None, metadata=option("write the summary here"))

    @property
    def leaders_confirmed(self) -> int:
        """``--confirm``, at most a tenth of the children (a small search is not delayed)."""
        return min(self.confirm, self.trials // 10)

    @property
    def folder(self) -> Path:
        return Path(self.storage).resolve() / self.experiment

    def child_resources(self) -> ChildResources:
        """What each child asks Ray for (``--trial-resource`` parsed: a bad one is a user
        error); the corpus's sizes, for conditions on ``params``, come with the data."""
        rules = parse_rules(self.trial_resources)
        return ChildResources(self.cpus_per_trial, self.gpus_per_trial, rules)
