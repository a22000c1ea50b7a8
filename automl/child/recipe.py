"""How a child is trained, as opposed to what it is: optimizer, learning-rate schedule,
length-bucketed mini-batches, mixed precision. :mod:`automl.child.trainer` runs the loop.

Every choice a search may want to vary is a hyperparameter of the architecture
(``optimizer``, ``lr``, ``schedule``, ``batch_size``, ...; see
:data:`automl.child.arch.HPARAM_DEFAULTS`), so a search space can search over it.
"""

from __future__ import annotations

import math

import torch

POOL_BATCHES = 16  # batches sorted by length together: similar lengths, still shuffled


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=weight_decay)


#: schedules that end at a low rate: a child under one keeps its last epoch (the trainer)
ANNEALED = ("onecycle", "cosine")


def make_schedule(
    name: str, optimizer: torch.optim.Optimizer, lr: float, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Stepped once per batch. ``onecycle``: up to ``lr`` over the first 30% of the steps,
    then annealed, momentum (Adam's beta1) cycled against it (Smith's one-cycle, which
    converges in few epochs; RMSprop keeps its own momentum of 0); ``cosine``: a linear
    warm-up over 5% of the steps, then a cosine decay to 0; ``constant``: ``lr`` throughout."""
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=lr,
            total_steps=total_steps,
            pct_start=0.3,
            cycle_momentum=not isinstance(optimizer, torch.optim.RMSprop),
        )
    if name == "cosine":
        warmup = max(1, round(0.05 * total_steps))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (
                1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup)))
            )

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return None


def class_weights(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights (mean 1 over present classes), for imbalanced corpora."""
    counts = torch.bincount(labels, minlength=n_classes).float()
    return torch.where(counts > 0, counts.sum() / (n_classes * counts.clamp(min=1)), 0.0)


def length_batches(
    lengths: torch.Tensor, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Shuffled mini-batches of utterances of similar length, so a recurrent layer does not
    step through padding: the shuffled indices are cut into pools of ``POOL_BATCHES``
    batches, each pool is sorted by length and cut into batches, and the batches are
    shuffled. A new order every epoch; always ``ceil(n / batch_size)`` batches."""
    order = torch.randperm(len(lengths), generator=generator)
    batches: list[torch.Tensor] = []
    for pool in order.split(batch_size * POOL_BATCHES):
        pool = pool[torch.argsort(lengths[pool], stable=True)]
        batches += list(pool.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator)]


def steps_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


class Precision:
    """Mixed precision on CUDA (bf16, or fp16 with a gradient scaler), plain fp32 elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.enabled = device.type == "cuda"
        self.dtype = (
            torch.bfloat16 if self.enabled and torch.cuda.is_bf16_supported() else torch.float16
        )
        self.scaler = (
            torch.amp.GradScaler("cuda") if self.enabled and self.dtype == torch.float16 else None
        )

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.enabled)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
