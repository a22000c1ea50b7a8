"""Train one child: fit on train, measure development-set UAR every epoch, keep one epoch.

Which epoch a child keeps depends on its learning-rate schedule. An annealed schedule
(``onecycle``, ``cosine``) trains to its end and keeps its last epoch: mid-schedule, at a
high rate, the weights swing and the dev UAR of one epoch with them, so the best epoch of a
small devel partition is a lucky swing, not a better model (measured on synth-cry: the
best epochs of finished children came at the rate's peak, 0.81 on average against 0.61
five epochs later; retrained on train + devel up to such an epoch, the search's best child
scored 0.716 on test over 10 seeds, and 0.755 trained to the schedule's end, the plain
GRU 0.756 and 0.777, with half the spread over seeds). A ``constant`` rate does not
anneal: the child keeps its best epoch, and ``patience`` stops one whose dev UAR no longer
improves.

This module knows nothing of Ray or MLflow; callers observe progress through the
``on_epoch`` callback. It is seeded and reproducible on the CPU; on a GPU it uses
mixed precision (bf16 where supported, fp16 with loss scaling otherwise).
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from automl.child import build_model, count_parameters, normalize
from automl.child.metrics import uar
from automl.child.recipe import (
    ANNEALED,
    Precision,
    class_weights,
    length_batches,
    make_optimizer,
    make_schedule,
    steps_per_epoch,
)
from automl.data.dataset import Dataset, Split
from runtime.cli import option, positive_int
from runtime.process import configure_process

EVAL_BATCH = 256
LATENCY_SAMPLES = 10
RETRY_LR_FACTOR = 0.1  # a diverged child's one retry runs at this share of its learning rate


def device_option(text: str) -> str:
    """``--device``: auto, cpu, cuda or cuda:N, and a CUDA device this torch can see."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    if text.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(text.partition(":")[2] or 0)
        if index >= count:
            raise argparse.ArgumentTypeError(
                f"{text}: this torch ({torch.__version__}) sees {count} CUDA devices"
            )
    return text


@dataclass
class TrainConfig:
    """How to train, as opposed to what (the architecture and its hyperparameters)."""

    epochs: int | None = field(
        default=None,
        metadata=option("override the architecture's epochs", type=positive_int),
    )
    seed: int = field(default=0, metadata=option("seed of the weights and shuffling", type=int))
    device: str = field(
        default="auto",
        metadata=option("auto (CUDA if visible), cpu, cuda, cuda:N", type=device_option),
    )
    threads: int | None = field(
        default=None, metadata=option("torch CPU threads (default: torch's)", type=positive_int)
    )
    # train under the schedule of all the epochs but stop after this one, keeping its weights:
    # how `automl evaluate` retrains the epoch a search kept with the search's own recipe
    stop_after: int | None = None
    # fault injection (the ``diverge`` fault): this epoch's loss is made NaN once, so the
    # retry after a divergence runs on a real trainer; None in every real run
    inject_nan_epoch: int | None = None


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    dev_uar: float
    seconds: float
    kept_dev_uar: float  # of the epoch the child keeps if it ends after this one
    n_params: int  # the costs an objective trades against, known from the first epoch on
    latency_ms: float


@dataclass
class ChildResult:
    """What a finished child reports: the dev UAR, number and weights of the epoch it kept
    (``best_epoch``: the best under a constant rate, the last under an annealed schedule)."""

    architecture: dict[str, Any]
    dev_uar: float
    best_epoch: int
    epochs: int
    n_params: int
    train_seconds: float
    latency_ms: float
    device: str
    history: list[EpochStats] = field(default_factory=list)
    # a divergence survived: {"epoch": where the loss became non-finite, "from_epoch": the
    # epoch whose weights training went on from (0: the initial ones), "lr": the new rate}
    retry: dict[str, Any] | None = None
    state_dict: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("state_dict", "history")}
        out["history"] = [asdict(h) for h in self.history]
        return out


@dataclass
class Padded:
    """A split as one zero-padded tensor, built once per child and sliced per batch."""

    x: torch.Tensor  # [n, max_len, features]
    lengths: torch.Tensor  # [n]
    labels: torch.Tensor  # [n]

    @classmethod
    def from_split(cls, split: Split) -> Padded:
        lengths = split.lengths
        x = np.zeros((len(split), int(lengths.max()), split.frames.shape[1]), np.float32)
        for i, n in enumerate(lengths):
            x[i, :n] = split.sequence(i)
        return cls(torch.from_numpy(x), torch.from_numpy(lengths), torch.from_numpy(split.labels))

    def batch(self, idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
        lengths = self.lengths[idx]
        x = self.x[idx, : int(lengths.max())]
        return (x.to(device, non_blocking=True), lengths.to(device), self.labels[idx].to(device))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train_child(
    architecture: dict[str, Any],
    data: Dataset,
    config: TrainConfig | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
    select_on_dev: bool = True,
) -> ChildResult:
    """Train ``architecture`` on ``data``'s train split and return the epoch it keeps: the
    last under an annealed schedule, the best on dev under a constant rate (module doc).

    ``select_on_dev`` False: the last epoch's model of a fixed number of epochs, with no
    devel split needed (the ComParE protocol's final training on train + devel).

    A loss that becomes NaN or infinite does not end the child at once: it goes back to
    its best epoch's weights (its initial ones before any) and trains the epochs left at
    ``RETRY_LR_FACTOR`` of its rate, which a child that a high rate threw off usually
    survives; ``result.retry`` says so. A second divergence raises ``FloatingPointError``."""
    config = config or TrainConfig()
    arch = normalize(architecture)
    hp = arch["hparams"]
    hp["epochs"] = epochs = config.epochs or hp["epochs"]  # the result records what ran
    configure_process(threads=config.threads)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    train = Padded.from_split(data.splits["train"])
    dev = Padded.from_split(data.splits["devel"]) if select_on_dev else None

    model = build_model(arch, data.n_features, data.n_classes).to(device)
    amp = Precision(device)
    # Costs do not depend on the weights: measured once, known from the first epoch on.
    n_params, latency_ms = (
        count_parameters(model),
        _latency_ms(model, train if dev is None else dev, device, amp),
    )
    steps = steps_per_epoch(len(train.labels), hp["batch_size"])
    optimizer, schedule = _optimizer(model, hp, hp["lr"], epochs * steps)
    weights = (
        class_weights(train.labels, data.n_classes).to(device) if hp["class_weighted"] else None
    )
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    shuffle = torch.Generator().manual_seed(config.seed)

    best_uar, best_epoch, best_state, history = -1.0, 0, _weights(model), []
    keep_last = dev is None or hp["schedule"] in ANNEALED
    retry, epoch = None, 0
    start = time.perf_counter()
    last = min(epochs, config.stop_after or epochs)
    while epoch < last:
        epoch += 1
        t0 = time.perf_counter()
        loss = _train_epoch(model, train, hp, optimizer, schedule, loss_fn, amp, device, shuffle)
        if config.inject_nan_epoch == epoch and retry is None:
            loss = float("nan")
        if not np.isfinite(loss):  # once: back to the best weights, on at a lower rate
            retry = _retry_after(loss, epoch, retry, best_epoch, hp["lr"])
            model.load_state_dict(best_state)
            optimizer, schedule = _optimizer(model, hp, retry["lr"], (epochs - epoch + 1) * steps)
            epoch -= 1
            continue
        dev_uar = (
            uar(dev.labels.numpy(), predict(model, dev, device, amp)) if dev is not None else np.nan
        )
        seconds = time.perf_counter() - t0
        if dev_uar > best_uar:  # also where a retry after a divergence goes back to
            best_uar, best_epoch, best_state = dev_uar, epoch, _weights(model)
        kept = dev_uar if keep_last else best_uar
        stats = EpochStats(epoch, loss, dev_uar, seconds, kept, n_params, latency_ms)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
        if not keep_last and _plateaued(epoch, best_epoch, epochs, hp["patience"]):
            break
    train_seconds = time.perf_counter() - start
    if keep_last:  # the model as training left it (nothing to select on without devel)
        best_uar = history[-1].dev_uar if dev is not None else np.nan
        best_epoch, best_state = epoch, _weights(model)

    model.load_state_dict(best_state)
    return ChildResult(
        architecture=arch,
        dev_uar=best_uar,
        best_epoch=best_epoch,
        epochs=epochs,
        n_params=n_params,
        train_seconds=train_seconds,
        latency_ms=latency_ms,
        device=str(device),
        history=history,
        retry=retry,
        state_dict=best_state,
    )


def _retry_after(
    loss: float, epoch: int, retry: dict[str, Any] | None, best_epoch: int, lr: float
) -> dict[str, Any]:
    """The retry of a child whose loss became ``loss``; its failure if it was retried."""
    if retry is not None:
        raise FloatingPointError(
            f"training loss became {loss} in epoch {epoch}, again after the retry from "
            f"{_retry_start(retry)} at lr {retry['lr']:g}"
        )
    return {"epoch": epoch, "from_epoch": best_epoch, "lr": lr * RETRY_LR_FACTOR}


def retry_note(retry: dict[str, Any]) -> str:
    """How a child that diverged once went on, in words (summaries, leaderboards)."""
    return (
        f"loss became non-finite in epoch {retry['epoch']}: retried from "
        f"{_retry_start(retry)} at lr {retry['lr']:g}"
    )


def _retry_start(retry: dict[str, Any]) -> str:
    return f"epoch {retry['from_epoch']}" if retry["from_epoch"] else "its initial weights"


def _optimizer(model: nn.Module, hp: dict[str, Any], lr: float, total_steps: int):
    """The optimizer and its schedule, peaking at ``lr`` over ``total_steps`` batches."""
    optimizer = make_optimizer(hp["optimizer"], model.parameters(), lr, hp["weight_decay"])
    return optimizer, make_schedule(hp["schedule"], optimizer, lr, total_steps)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _train_epoch(
    model, data: Padded, hp, optimizer, schedule, loss_fn, amp, device, generator
) -> float:
    """One pass over shuffled, length-bucketed mini-batches; returns the mean training loss."""
    model.train()
    total, seen = torch.zeros((), device=device), 0
    for idx in length_batches(data.lengths, hp["batch_size"], generator):
        x, lengths, y = data.batch(idx, device)
        with amp.autocast():
            loss = loss_fn(model(x, lengths).float(), y)
        optimizer.zero_grad(set_to_none=True)
        amp.backward(loss)
        if hp["grad_clip"] > 0:
            amp.unscale(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
        amp.step(optimizer)
        if schedule is not None:
            schedule.step()
        total += loss.detach() * len(idx)
        seen += len(idx)
    return float(total) / seen


def _plateaued(epoch: int, best_epoch: int, epochs: int, patience: int) -> bool:
    """Under a constant rate, stop when dev UAR has not improved for ``patience`` epochs (0:
    never), once past half of the epochs (the first give a child time to start learning)."""
    return patience > 0 and epoch > epochs // 2 and epoch - best_epoch >= patience


def split_uar(
    architecture: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    data: Dataset,
    part: str,
    device: str = "cpu",
) -> float:
    """UAR of trained weights on another partition of ``data`` (e.g. ``test``)."""
    model = build_model(normalize(architecture), data.n_features, data.n_classes)
    model.load_state_dict(state_dict)
    split = Padded.from_split(data.splits[part])
    target = torch.device(device)
    return uar(split.labels.numpy(), predict(model.to(target), split, target))


@torch.no_grad()
def predict(
    model: nn.Module, data: Padded, device: torch.device, amp: Precision | None = None
) -> np.ndarray:
    """Class indices for every utterance of ``data`` (evaluation mode, large batches)."""
    model.eval()
    amp = amp or Precision(device)
    order = torch.argsort(data.lengths)  # similar lengths together: little padding
    predicted = torch.empty(len(order), dtype=torch.int64)
    for idx in order.split(EVAL_BATCH):
        x, lengths, _ = data.batch(idx, device)
        with amp.autocast():
            predicted[idx] = model(x, lengths).argmax(-1).cpu()
    return predicted.numpy()


@torch.no_grad()
def probabilities(model: nn.Module, data: Padded, device: torch.device) -> np.ndarray:
    """Class probabilities [utterances, classes] for every utterance of ``data``, in full
    precision: what late fusion averages."""
    model.eval()
    order = torch.argsort(data.lengths)
    out = torch.empty(len(order), model(*data.batch(order[:1], device)[:2]).shape[-1])
    for idx in order.split(EVAL_BATCH):
        x, lengths, _ = data.batch(idx, device)
        out[idx] = torch.softmax(model(x, lengths).float(), dim=-1).cpu()
    return out.numpy()


@torch.no_grad()
def _latency_ms(model: nn.Module, data: Padded, device: torch.device, amp: Precision) -> float:
    """Median wall time of classifying one utterance (batch of one), as deployed."""
    model.eval()
    times = []
    for i in range(min(LATENCY_SAMPLES, len(data.labels))):
        x, lengths, _ = data.batch(torch.tensor([i]), device)
        t0 = time.perf_counter()
        with amp.autocast():
            model(x, lengths)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)
