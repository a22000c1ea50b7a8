"""What each trial asks Ray for: the same for every trial, or by what the trial is.

Both commands take these options (``automl search``'s children, ``rl train``'s seeds); a
job says what its trials' fields are (:meth:`TrialResources.facts`). For a search:

``--cpus-per-trial``, ``--gpus-per-trial`` and ``--trial-resource NAME=AMOUNT`` ask the
same of every child. ``--trial-resource 'NAME=AMOUNT if CONDITION'`` asks it only of the
children the condition holds for, so one search can send its large children to GPU
nodes and keep its small ones on CPUs, or the CNNs to the nodes started with a resource::

    --gpus-per-trial 0 --trial-resource 'GPU=0.5 if params >= 200000'
    --trial-resource 'a100=1 if family == cnn'

A condition compares ``params`` (the child's trainable parameters on this corpus) or a
field of its architecture, named as on its MLflow run (``layers.count``,
``layers.0.units``, ``hparams.batch_size``, ``cell``), with ``>= <= > < == !=``. Rules
apply in the order given; a later rule's amount replaces an earlier one's, so
``'GPU=0 if params < 50000'`` keeps small children off the GPUs ``--gpus-per-trial``
gives the rest. ``CPU`` and ``GPU`` (in any case) are Ray's own resources; any other
name is a node's ``ray start --resources`` (case-sensitive, as Ray's).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from runtime.cli import duration, option
from runtime.errors import UserError
from runtime.tracking import flatten

OPTION = "--trial-resource"
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
    "==": operator.eq, "!=": operator.ne,
}  # fmt: skip
_CONDITION = re.compile(r"^([A-Za-z_][\w.]*)\s*(>=|<=|==|!=|>|<)\s*(\S+)$")


@dataclass(frozen=True)
class Condition:
    """``field op value``; a field the child does not have (a fourth layer's units on a
    one-layer child) makes it false. Numbers compare as numbers, anything else as text
    (``==``/``!=`` only)."""

    field: str
    op: str
    value: str

    def holds(self, facts: dict[str, str]) -> bool:
        if self.field not in facts:
            return False
        have, want = _number(facts[self.field]), _number(self.value)
        if have is not None and want is not None:
            return _OPS[self.op](have, want)
        text = facts[self.field].lower(), self.value.lower()  # True == true
        return self.op in ("==", "!=") and _OPS[self.op](*text)


@dataclass(frozen=True)
class Rule:
    text: str  # as the user wrote it, for messages
    name: str
    amount: float
    when: Condition | None = None


@dataclass(frozen=True)
class TrialResources:
    """Resource amounts by Ray resource name, per trial. Called by Ray Tune with a trial's
    config when it places the trial (it is picklable, so Tune can keep it). A condition
    names a field of the trial's description (:meth:`facts`: its fields, flattened)."""

    trial = "trial"  # what the job's trials are called in messages
    cpus: float = 1.0
    gpus: float = 0.0
    rules: tuple[Rule, ...] = ()
    base: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        base = {"CPU": self.cpus, "GPU": self.gpus}
        base.update({r.name: r.amount for r in self.rules if r.when is None})
        object.__setattr__(self, "base", base)

    @property
    def asks_gpus(self) -> bool:
        return any(need.get("GPU", 0) > 0 for _, need in self.requests())

    @property
    def conditional(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.when is not None)

    def for_trial(self, description: dict[str, Any]) -> dict[str, float]:
        amounts = dict(self.base)
        if self.conditional:
            facts = self.facts(description)
            amounts.update({r.name: r.amount for r in self.conditional if r.when.holds(facts)})
        return _positive(amounts)

    def facts(self, description: dict[str, Any]) -> dict[str, str]:
        """What a condition can name: the fields of the trial's description."""
        return flatten("", description)

    def derived_fields(self) -> set[str]:
        """Fields :meth:`facts` adds beside the description's own (none here)."""
        return set()

    def requests(self) -> list[tuple[str, dict[str, float]]]:
        """Every request a child can make, each with the options that make it (for the
        check that some node can run it): every child's, then with each rule applied."""
        everyone = f"--cpus-per-trial {self.cpus:g} --gpus-per-trial {self.gpus:g}"
        everyone += "".join(f" {OPTION} {r.text}" for r in self.rules if r.when is None)
        out = [(everyone, _positive(self.base))]
        for rule in self.conditional:
            need = _positive({**self.base, rule.name: rule.amount})
            out.append((f"{OPTION} '{rule.text}'", need))
        return out

    def check_fields(self, known: Iterable[str]) -> None:
        """A condition on a field no trial of the job has is a typo: one line."""
        known = {*known, *self.derived_fields()}
        for rule in self.conditional:
            if rule.when.field not in known:
                fields = ", ".join(sorted(known, key=lambda k: (k.count("."), k))) or "none"
                raise UserError(
                    f"{OPTION} '{rule.text}': no {self.trial} has a field {rule.when.field!r} "
                    f"(fields: {fields})"
                )


def join_timeout_field() -> Any:
    """``--join-timeout``, as both commands declare it: how long joining ``--address`` may
    take before it ends in one line (Ray itself would retry for minutes, or for ever)."""
    from runtime.ray_cluster import JOIN_TIMEOUT

    return field(
        default=JOIN_TIMEOUT,
        metadata=option(
            "how long joining --address may take (90s, 2m) before the command ends saying "
            f"what failed (default: {JOIN_TIMEOUT:g}s)",
            type=duration,
        ),
    )


def max_wait_field(trials: str, job: str) -> Any:
    """``--max-wait``, as both commands declare it on their options dataclass."""
    return field(
        default=None,
        metadata=option(
            f"for a cluster that adds nodes on demand: {trials} may wait this long (90s, 15m) "
            f"for resources no node has now, while none runs. Without it, {trials} asking for "
            f"more than any node has are refused before the {job} starts",
            type=duration,
        ),
    )


def parse_rules(items: Iterable[str]) -> tuple[Rule, ...]:
    """``--trial-resource`` values -> rules; a malformed one is one line naming it."""
    return tuple(_parse(item) for item in items)


def _parse(item: str) -> Rule:
    asked, _, condition = (part.strip() for part in item.partition(" if "))
    name, sep, text = (part.strip() for part in asked.partition("="))
    amount = _number(text)
    if not sep or not name or " " in name:
        raise UserError(f"{OPTION} {item}: expected NAME=AMOUNT or 'NAME=AMOUNT if CONDITION'")
    when = _condition(item, condition) if condition else None
    if amount is None or amount < 0 or (when is None and amount == 0):
        least = "a number >= 0" if when else "a number > 0"
        raise UserError(f"{OPTION} {name}={text}: expected {least}")
    if name.upper() in ("CPU", "GPU"):
        if when is None:
            raise UserError(f"{OPTION} {name}: use --{name.lower()}s-per-trial")
        name = name.upper()  # Ray's own; any other name is a node's custom resource
    return Rule(item.strip(), name, amount, when)


def _condition(item: str, text: str) -> Condition:
    match = _CONDITION.match(text.strip())
    if match is None:
        raise UserError(
            f"{OPTION} '{item}': expected a condition FIELD OP VALUE, e.g. 'params >= 200000' "
            "or 'family == cnn' (OP: >= <= > < == !=)"
        )
    field_, op, value = match.groups()
    if op not in ("==", "!=") and _number(value) is None:
        raise UserError(f"{OPTION} '{item}': {op} compares numbers, got {value!r}")
    return Condition(field_, op, value)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _positive(amounts: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in amounts.items() if v > 0 or k == "CPU"}
