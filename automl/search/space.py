"""Search spaces: a YAML file -> an ordered list of categorical decisions -> architectures.

A space file names a family, values every architecture shares (``fixed``), decisions
on the architecture or its hyperparameters (``choices``), and a repeated block
(``layers`` for RNNs, ``blocks`` for CNNs) whose fields are either a list (a decision
per block) or a single value. A block whose width (``units``/``filters``) is 0 is absent;
its other decisions are then inactive. The first ``min`` blocks never take width 0::

    family: rnn
    fixed: {cell: gru}
    layers: {count: 5, min: 1, units: [0, 40, 80, 120, 160, 200], activation: [tanh, relu, sigmoid]}
    choices: {lr: [0.001, 0.003]}
    start_with:                    # trained first: the model one would build by hand
      - {layers: [{units: 120, activation: tanh}, {units: 120, activation: tanh}], lr: 0.003}

``start_with`` lists children the search trains before its searcher proposes any (as
Optuna's ``enqueue_trial`` or Ray Tune's ``points_to_evaluate``): each gives a value to
every decision (blocks it leaves out are absent), so the search starts from the model a
researcher would train first and has to beat it; the searcher learns from them as from
its own proposals.

Searchers see only decisions (name, choices, when active); turning their values into
an architecture is this module's job, so every searcher serves every space.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from automl.child.arch import HPARAM_DEFAULTS, arch_key, normalize
from runtime.errors import UserError

SPACE_KEYS = {
    "name", "description", "family", "fixed", "choices", "layers", "blocks", "start_with",
}  # fmt: skip
BLOCK_KEY = {"rnn": "layers", "cnn": "blocks", "mlp": "layers"}
WIDTH_KEY = {"rnn": "units", "cnn": "filters", "mlp": "units"}
MAX_BLOCKS = 8
BUILTIN_DIR = Path(__file__).resolve().parents[2] / "search_spaces"

Scalar = str | int | float | bool


@dataclass(frozen=True)
class Decision:
    """One categorical choice; inactive when ``gate`` (another decision) has value ``gate_off``."""

    name: str
    choices: tuple[Any, ...]
    gate: str | None = None
    gate_off: Any = None


@dataclass(frozen=True)
class SearchSpace:
    name: str
    family: str
    fixed: dict[str, Any]
    decisions: tuple[Decision, ...]
    block_count: int
    block_fixed: dict[str, Any]
    start_with: tuple[dict[str, Any], ...] = ()  # values of children to train first

    @property
    def sizes(self) -> list[int]:
        return [len(d.choices) for d in self.decisions]

    def is_active(self, decision: Decision, values: dict[str, Any]) -> bool:
        return decision.gate is None or values[decision.gate] != decision.gate_off

    def active_mask(self, values: dict[str, Any]) -> list[bool]:
        return [self.is_active(d, values) for d in self.decisions]

    def values_from_indices(self, indices: list[int]) -> dict[str, Any]:
        return {d.name: d.choices[i] for d, i in zip(self.decisions, indices, strict=True)}

    def indices_from_values(self, values: dict[str, Any]) -> list[int]:
        return [d.choices.index(values[d.name]) for d in self.decisions]

    def to_architecture(self, values: dict[str, Any]) -> dict[str, Any]:
        """The canonical architecture for one assignment of every decision."""
        raw: dict[str, Any] = {"family": self.family, **self.fixed}
        hparams = {k: raw.pop(k) for k in list(raw) if k in HPARAM_DEFAULTS}
        for name, value in values.items():
            if "." in name:
                continue
            (hparams if name in HPARAM_DEFAULTS else raw)[name] = value
        blocks = []
        for i in range(self.block_count):
            block = dict(self.block_fixed)
            block.update(
                {n.split(".")[2]: v for n, v in values.items() if n.startswith(f"block.{i}.")}
            )
            blocks.append(block)
        raw[BLOCK_KEY[self.family]] = blocks
        raw["hparams"] = hparams
        return normalize(raw, where="architecture")

    def values_of(self, arch: dict[str, Any]) -> dict[str, Any] | None:
        """An assignment of this space's decisions that builds ``arch`` (None when none
        does: the architecture is not a child of this space), what a child recorded in
        MLflow is read back as for ``--warm-start``."""
        blocks = arch.get(BLOCK_KEY[self.family], [])
        values: dict[str, Any] = {}
        for d in self.decisions:
            if d.name.startswith("block."):
                _, index, field = d.name.split(".")
                i = int(index)
                value = blocks[i].get(field) if i < len(blocks) else 0 if d.gate is None else None
            elif d.name in HPARAM_DEFAULTS:
                value = arch.get("hparams", {}).get(d.name)
            else:
                value = arch.get(d.name)
            if isinstance(value, list) and len(value) <= 1:  # a width normalised to a list
                value = value[0] if value else 0
            if value not in d.choices:
                if self.is_active(d, values):
                    return None
                value = d.choices[0]
            values[d.name] = value
        try:
            built = self.to_architecture(values)
        except UserError:
            return None
        return values if arch_key(built) == arch_key(arch) else None

    def neighbours(self, values: dict[str, Any]) -> list[dict[str, Any]]:
        """Every assignment one active decision away from ``values`` (local search's moves)."""
        return [
            {**values, d.name: choice}
            for d in self.decisions
            if self.is_active(d, values)
            for choice in d.choices
            if choice != values[d.name]
        ]

    def mutate(self, values: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """``values`` with one active decision changed to another of its choices, at random
        (evolution's mutation); unchanged when no active decision has another choice."""
        mutable = [d for d in self.decisions if len(d.choices) > 1 and self.is_active(d, values)]
        if not mutable:
            return dict(values)
        decision = mutable[rng.integers(len(mutable))]
        others = [c for c in decision.choices if c != values[decision.name]]
        return {**values, decision.name: others[rng.integers(len(others))]}

    def decides(self, key: str) -> bool:
        """Whether the space itself sets ``key`` (as a fixed value or a decision)."""
        return key in self.fixed or any(d.name == key for d in self.decisions)

    def with_fixed(self, **values: Any) -> SearchSpace:
        """The space with more fixed values (``epochs`` given on the command line)."""
        return dataclasses.replace(self, fixed={**self.fixed, **values})

    def describe(self) -> dict[str, Any]:
        """Everything that decides which children this space gives, as plain data (what a
        searcher's saved state is fingerprinted with)."""
        return {
            "family": self.family,
            "fixed": dict(sorted(self.fixed.items())),
            "block_count": self.block_count,
            "block_fixed": dict(sorted(self.block_fixed.items())),
            "decisions": {
                d.name: {"choices": list(d.choices), "gate": d.gate} for d in self.decisions
            },
        }

    def size(self) -> int:
        """Number of distinct assignments (an upper bound on distinct architectures)."""
        total = 1
        for n in self.sizes:
            total *= n
        return total


def resolve_space_path(text: str) -> Path:
    """A path, or the stem of a built-in space (``seed_gru``)."""
    path = Path(text)
    if path.is_file():
        return path
    builtin = BUILTIN_DIR / f"{text}.yaml"
    if builtin.is_file():
        return builtin
    raise UserError(f"--space {text}: file not found (built-in spaces: {builtin_names()})")


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def load_space(text: str | Path) -> SearchSpace:
    """Read and validate a space file; every error names the file and the key."""
    path = resolve_space_path(str(text))
    try:
        source = path.read_text()
        _check_expanded_size(yaml.compose(source, Loader=yaml.SafeLoader), path)
        raw = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"search space {path}:{where} YAML syntax error") from None
    return parse_space(raw, str(path), default_name=path.stem)


#: values a space file may hold once its YAML aliases are expanded: a real space has a few
#: hundred; nested anchors ("billion laughs") reach billions from a few hundred bytes
MAX_YAML_VALUES = 100_000


def _check_expanded_size(root: yaml.Node | None, path: Path) -> None:
    """Count the values ``root`` expands to (an alias counts its anchor's whole subtree),
    each node once thanks to memoisation, so the count itself costs no expansion."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) not in sizes:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
            if isinstance(node, yaml.MappingNode):
                children = [part for pair in node.value for part in pair]
            sizes[id(node)] = 1 + sum(size(child) for child in children)
        return sizes[id(node)]

    if root is not None and size(root) > MAX_YAML_VALUES:
        raise UserError(
            f"search space {path}: expands to more than {MAX_YAML_VALUES} values (nested YAML "
            "anchors and aliases?); a space holds a few hundred"
        )


def parse_space(raw: Any, where: str, default_name: str = "space") -> SearchSpace:
    if not isinstance(raw, dict):
        raise UserError(f"search space {where}: expected a mapping at the top level")
    unknown = set(raw) - SPACE_KEYS
    if unknown:
        raise UserError(f"search space {where}: unknown key(s) {sorted(unknown)}")
    family = raw.get("family")
    if family not in BLOCK_KEY:
        raise UserError(
            f"search space {where}: family must be 'rnn', 'cnn' or 'mlp', got {family!r}"
        )
    for other in set(BLOCK_KEY.values()) - {BLOCK_KEY[family]}:
        if other in raw:
            raise UserError(f"search space {where}: '{other}' does not belong to family {family}")
    fixed = _mapping(raw.get("fixed", {}), f"{where}: fixed")
    decisions = [
        Decision(name, _choices(v, f"{where}: choices.{name}"))
        for name, v in _mapping(raw.get("choices", {}), f"{where}: choices").items()
    ]
    count, block_fixed, block_decisions = _blocks(raw, family, where)
    space = SearchSpace(
        str(raw.get("name", default_name)),
        family,
        fixed,
        tuple(decisions + block_decisions),
        count,
        block_fixed,
    )
    _check_architectures(space, where)
    starts = raw.get("start_with", [])
    if not isinstance(starts, list):
        raise UserError(f"search space {where}: start_with: expected a list of children")
    first = [_start_values(space, e, f"{where}: start_with[{i}]") for i, e in enumerate(starts)]
    return dataclasses.replace(space, start_with=tuple(first))


def _start_values(space: SearchSpace, entry: Any, where: str) -> dict[str, Any]:
    """The decisions' values of one ``start_with`` child, written as the space's own keys
    (a decision's name, and the block list with a mapping per block): every decision
    needs a value, except those of blocks left out (absent) and inactive ones."""
    entry = _mapping(entry, where)
    key, width = BLOCK_KEY[space.family], WIDTH_KEY[space.family]
    blocks = entry.pop(key, [])
    if not isinstance(blocks, list) or len(blocks) > space.block_count:
        raise UserError(f"search space {where}: {key}: a list of at most {space.block_count}")
    blocks = [_mapping(b, f"{where}: {key}[{i}]") for i, b in enumerate(blocks)]
    values: dict[str, Any] = {}
    for d in space.decisions:
        if d.name.startswith("block."):
            _, index, field = d.name.split(".")
            given = int(index) < len(blocks)
            block = blocks[int(index)] if given else {width: 0}
            value, name = block.pop(field, None), f"{key}[{index}].{field}"
        else:
            given, value, name = True, entry.pop(d.name, None), d.name
        if not space.is_active(d, values):
            value = d.choices[0]  # irrelevant: the decision is inactive
        elif value not in d.choices:
            found = "left out" if not given else "no value" if value is None else f"{value!r}"
            raise UserError(f"search space {where}.{name}: {found}; one of {list(d.choices)}")
        values[d.name] = value
    left = sorted(entry) + [f"{key}[{i}].{f}" for i, b in enumerate(blocks) for f in b]
    if left:
        raise UserError(f"search space {where}: {left} not decided by the space (fixed or unknown)")
    return values


def _blocks(raw: dict, family: str, where: str) -> tuple[int, dict[str, Any], list[Decision]]:
    key, width = BLOCK_KEY[family], WIDTH_KEY[family]
    spec = _mapping(raw.get(key), f"{where}: {key}")
    count = spec.pop("count", None)
    minimum = spec.pop("min", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_BLOCKS:
        raise UserError(f"search space {where}: {key}.count must be an integer 1..{MAX_BLOCKS}")
    if not isinstance(minimum, int) or isinstance(minimum, bool) or not 0 <= minimum <= count:
        raise UserError(f"search space {where}: {key}.min must be an integer 0..{key}.count")
    if width not in spec:
        raise UserError(f"search space {where}: {key}.{width} is required")
    fixed, decisions = {}, []
    for i in range(count):
        for field, value in spec.items():
            name = f"block.{i}.{field}"
            if not isinstance(value, list):
                fixed[field] = value
                continue
            choices = _choices(value, f"{where}: {key}.{field}")
            if field == width and i < minimum:
                choices = tuple(c for c in choices if c != 0)
                if not choices:
                    raise UserError(f"search space {where}: {key}.{width} needs a non-zero choice")
            gate = (
                None
                if field == width or not isinstance(spec[width], list)
                else f"block.{i}.{width}"
            )
            decisions.append(Decision(name, choices, gate, 0 if gate else None))
    return count, fixed, _width_first(decisions, width)


def _width_first(decisions: list[Decision], width: str) -> list[Decision]:
    """Within a block, the width decision comes first, so the others can depend on it."""
    return sorted(
        decisions, key=lambda d: (int(d.name.split(".")[1]), d.name.split(".")[2] != width)
    )


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        raise UserError(f"search space {where}: missing")
    if not isinstance(value, dict):
        raise UserError(f"search space {where}: expected a mapping, got {type(value).__name__}")
    return dict(value)


def _choices(value: Any, where: str) -> tuple[Scalar, ...]:
    if not isinstance(value, list):
        raise UserError(f"search space {where}: expected a list of choices, got {value!r}")
    if not value:
        raise UserError(f"search space {where}: empty choices")
    for v in value:
        if not isinstance(v, Scalar):
            raise UserError(f"search space {where}: choice {v!r} is not a number, string or bool")
        if isinstance(v, float) and not math.isfinite(v):  # YAML's .nan and .inf
            raise UserError(f"search space {where}: choice {v!r} is not a finite number")
    if len(set(map(repr, value))) != len(value):
        raise UserError(f"search space {where}: duplicate choices")
    return tuple(value)


def _check_architectures(space: SearchSpace, where: str) -> None:
    """Every choice must give a valid architecture: try each one beside the defaults."""
    base = {d.name: d.choices[-1] for d in space.decisions}
    candidates = itertools.chain(
        [base], ({**base, d.name: c} for d in space.decisions for c in d.choices)
    )
    for values in candidates:
        try:
            space.to_architecture(values)
        except UserError as exc:
            raise UserError(f"search space {where}: {exc}") from None
