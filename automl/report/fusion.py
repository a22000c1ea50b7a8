"""Late fusion of searched children, what paralinguistics papers report beside single
models: each member is retrained under the ComParE protocol exactly as one child is
(:mod:`automl.report.evaluate`), and their class probabilities are averaged.

The weights are equal: none is chosen, so nothing is fitted on devel, and test is seen
once. Devel figures come from the members as their searches kept them (trained on train:
the checkpoint of the epoch they kept), since the retrained members have learnt from devel;
test figures from the retrained members, seed by seed (fused seed s averages every
member's seed s), mean and spread over the seeds as for one child.

The members share their corpus, frontend and crop, so the fused model takes one
utterance's features as a single child's model does.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from automl.child import build_model, normalize
from automl.child.metrics import uar
from automl.child.trainer import Padded, probabilities, resolve_device
from automl.data.dataset import Dataset
from automl.report.evaluate import ChosenChild, Evaluation, evaluate, score_seed, seed_std
from automl.ship.bundle import FUSION, WEIGHTS_FILE, ModelMeta
from runtime import mlflow_ui, tracking
from runtime.errors import UserError
from runtime.tags import EVALUATES_TAG, EVALUATION_TAG, MODEL_URI_TAG, NOTE_TAG, ROLE_TAG

SHARED = ("data", "frontend", "task", "max_seconds")  # what every member must share


@dataclass
class Member:
    child: ChosenChild
    devel_probabilities: np.ndarray  # of the searched child (trained on train)
    evaluation: Evaluation  # of its retraining on train + devel


@dataclass
class Fusion:
    members: list[Member]
    devel_labels: np.ndarray
    fused: Evaluation  # the fused system's test figures, predictions and confusion

    def devel_uar(self, members: list[Member] | None = None) -> float:
        """Devel UAR of the mean of ``members``' probabilities (default: all)."""
        chosen = members or self.members
        mean = np.mean([m.devel_probabilities for m in chosen], axis=0)
        return uar(self.devel_labels, mean.argmax(axis=1))


def check_members(children: list[ChosenChild]) -> None:
    """Two or more different children of one corpus, frontend and crop."""
    if len({c.run_id for c in children}) != len(children):
        raise UserError("fusion: a child is named twice; give different children")
    if len(children) < 2:
        raise UserError("fusion needs at least two children (--fuse K with K >= 2)")
    first = children[0]
    for child in children[1:]:
        for key in SHARED:
            if getattr(child, key) != getattr(first, key):
                raise UserError(
                    f"fusion: {child.name} ({child.run_id}) has {key} {getattr(child, key)!r}, "
                    f"{first.name} has {getattr(first, key)!r}: members share their {key}"
                )


def fuse(
    uri: str,
    children: list[ChosenChild],
    data: Dataset,
    seeds: int,
    device: str = "auto",
    on_member: Callable[[ChosenChild], Callable[[int, float | None], None]] | None = None,
) -> Fusion:
    """Each member's devel probabilities (its searched weights) and its retraining on
    train + devel (``seeds`` seeds); then the fused test figures, seed by seed."""
    check_members(children)
    members = []
    for child in children:
        devel = _searched_probabilities(uri, child, data)
        on_seed = on_member(child) if on_member else None
        members.append(Member(child, devel, evaluate(child, data, seeds, device, on_seed)))
    fused = Evaluation(data.classes)
    first = members[0].evaluation
    fused.norm_mean, fused.norm_std, fused.example = first.norm_mean, first.norm_std, first.example
    labels = data.splits["test"].labels
    for seed in range(seeds):
        mean = np.mean([m.evaluation.test_probabilities[seed] for m in members], axis=0)
        fused.test_probabilities.append(mean)
        predicted = mean.argmax(axis=1)
        if seed == 0:
            names = [str(n) for n in data.splits["test"].names]
            fused.predictions = list(zip(names, (data.classes[p] for p in predicted), strict=True))
        if (labels >= 0).all():
            score_seed(fused, labels, predicted)
    return Fusion(members, data.splits["devel"].labels, fused)


def _searched_probabilities(uri: str, child: ChosenChild, data: Dataset) -> np.ndarray:
    """Devel probabilities of the child as its search kept it (``checkpoint/weights.pt``)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tracking.CHECKPOINT_DIR}/{WEIGHTS_FILE}"
        try:
            weights = torch.load(
                tracking.download_artifact(uri, child.run_id, path, Path(tmp)),
                weights_only=True, map_location="cpu",
            )  # fmt: skip
        except (tracking.TrackingError, OSError) as exc:
            where = f"{child.name} ({child.run_id})"
            raise UserError(f"fusion: {where} has no weights: {exc}") from None
    model = build_model(normalize(child.architecture), data.n_features, data.n_classes)
    model.load_state_dict(weights)
    target = resolve_device("cpu")
    return probabilities(model.to(target), Padded.from_split(data.splits["devel"]), target)


def bundle_of(fusion: Fusion) -> tuple[ModelMeta, dict[str, torch.Tensor]]:
    """The fused model as one bundle: every member's seed-0 retraining, averaged in
    probability (:func:`automl.ship.bundle.build_scorer` reads the ``fusion`` family)."""
    first = fusion.members[0].child
    architecture = {"family": FUSION, "members": [m.child.architecture for m in fusion.members]}
    weights = {
        f"{k}.{name}": tensor
        for k, member in enumerate(fusion.members)
        for name, tensor in member.evaluation.state_dict.items()
    }
    meta = ModelMeta(
        architecture, fusion.fused.classes, fusion.fused.norm_mean, fusion.fused.norm_std,
        first.frontend, first.max_seconds, first.data,
    )  # fmt: skip
    return meta, weights


def open_run(uri: str, children: list[ChosenChild]) -> str:
    """The fusion's evaluation run, opened before the retraining, at the experiment's top
    level (its members may come from several searches), its description linking to each."""
    first = children[0]
    links = ", ".join(
        f"[{c.name}]({mlflow_ui.run_page(c.experiment_id, c.run_id)})" for c in children
    )
    tags = {
        EVALUATES_TAG: ",".join(c.run_id for c in children),
        ROLE_TAG: "evaluation",
        NOTE_TAG: f"Late fusion (mean class probabilities) of {links}, evaluated on test",
    }
    name = f"fuse-{len(children)}-{first.name}"
    return tracking.start_run(uri, first.experiment_id, name, tags)


def log_run(uri: str, run_id: str, fusion: Fusion, seeds: int, files: dict[str, Path]) -> None:
    """The fused figures (as one child's are logged), each member's under ``member<k>/``."""
    fused = fusion.fused
    metrics = {"devel_uar": fusion.devel_uar()}
    if fused.labelled:
        metrics["test_uar_mean"] = statistics.fmean(fused.test_uars)
        metrics["test_uar_std"] = seed_std(fused.test_uars)
        for label, recall in fused.per_class_recall.items():
            metrics[tracking.metric_key("recall", label)] = recall
    params: dict[str, Any] = {"seeds": seeds, "members": len(fusion.members)}
    for k, member in enumerate(fusion.members):
        params[f"member{k}"] = member.child.run_id
        metrics[f"member{k}/devel_uar"] = fusion.devel_uar([member])
        if member.evaluation.labelled:
            metrics[f"member{k}/test_uar_mean"] = statistics.fmean(member.evaluation.test_uars)
    tracking.log_values(uri, run_id, params, metrics)
    for path in files.values():
        tracking.log_artifact(uri, run_id, path)
    for member in fusion.members:
        tracking.set_tag(uri, member.child.run_id, EVALUATION_TAG, run_id)


def log_model(uri: str, run_id: str, fusion: Fusion) -> str:
    """The fused model (every member's seed 0) as one MLflow model; returns its URI."""
    from automl.ship import bundle

    meta, weights = bundle_of(fusion)
    name = f"fusion-{len(fusion.members)}-{fusion.members[0].child.name}"
    model_uri = bundle.log_model(uri, run_id, name, meta, weights, fusion.fused.example)
    tracking.set_tag(uri, run_id, MODEL_URI_TAG, model_uri)
    return model_uri


def summary(
    fusion: Fusion, eval_run: str, files: dict[str, Path], model_uri: str
) -> dict[str, Any]:
    """What ``automl evaluate --fuse --json`` writes: the fused figures at the top (as one
    child's, so the registry tags them alike), each member's beside them."""
    members = [
        {
            "child_run_id": member.child.run_id,
            "name": member.child.name,
            "epochs": member.child.epochs,
            "devel_uar": fusion.devel_uar([member]),
            **member.evaluation.figures(),
        }
        for member in fusion.members
    ]
    return {
        "fusion": "mean of the members' class probabilities (equal weights)",
        "members": members,
        "child_run_id": ",".join(m["child_run_id"] for m in members),
        "evaluation_run_id": eval_run,
        "devel_uar": fusion.devel_uar(),
        **fusion.fused.figures(),
        "predictions": str(files["predictions"]),
        "model_uri": model_uri,
    }
