"""Architectures: plain JSON-serialisable dicts, checked and put into one canonical form.

The canonical form is what gets hashed to recognise identical children, logged to
MLflow and written to JSON summaries. Example (the short form is accepted as is)::

    {"family": "rnn", "cell": "gru", "layers": [{"units": 64, "activation": "tanh"}]}

Hyperparameters sit in the same object or under ``"hparams"``; missing ones get defaults.
A layer or conv block with 0 units/filters is absent, as in the reference study's space.
``"frontend"`` (optional, any family) names the features the child reads, when a search
space decides them; without it the child reads the command's ``--frontend``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from runtime.errors import UserError

ACTIVATIONS = ("tanh", "relu", "sigmoid")
CELLS = ("gru", "lstm")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
HPARAM_DEFAULTS: dict[str, Any] = {
    "lr": 1e-2,  # the peak of the one-cycle schedule
    "batch_size": 32,
    "dropout": 0.0,
    "weight_decay": 0.0,
    "epochs": 10,
    "optimizer": "adam",
    "class_weighted": False,
    "grad_clip": 5.0,
    "schedule": "onecycle",  # learning rate over training: constant, cosine, onecycle
    "patience": 5,  # constant rate: stop after this many epochs without a better dev UAR
}
SCHEDULES = ("constant", "cosine", "onecycle")
RNN_KEYS = {
    "family", "cell", "layers", "bidirectional", "pooling", "subsample", "layer_norm", "hparams"
}  # fmt: skip
MAX_SUBSAMPLE = 8
IN_CELL = "in-cell"  # layer_norm of the layers with an in-cell ReLU or sigmoid only
POOLINGS = ("last", "mean", "stats")
CNN_KEYS = {"family", "blocks", "dense", "hparams"}
MLP_KEYS = {"family", "layers", "hparams"}
FAMILY_KEYS = {"rnn": RNN_KEYS, "cnn": CNN_KEYS, "mlp": MLP_KEYS}
FRONTEND_KEY = "frontend"
MAX_RNN_LAYERS = 5
#: the widest layer, conv block or dense layer an architecture may ask for: 16x the seed
#: spaces' widest; a million units would allocate tens of GB before training began
MAX_WIDTH = 4096


def normalize(raw: Mapping[str, Any], where: str = "architecture") -> dict[str, Any]:
    """Check ``raw`` and return the canonical dict; errors name the offending field."""
    if not isinstance(raw, Mapping):
        raise UserError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    family = raw.get("family")
    hp_keys = set(HPARAM_DEFAULTS)
    arch_keys = FAMILY_KEYS.get(family) if isinstance(family, str) else None
    if arch_keys is None:
        raise UserError(f"{where}.family: expected 'rnn', 'cnn' or 'mlp', got {family!r}")
    unknown = set(raw) - arch_keys - hp_keys - {FRONTEND_KEY}
    if unknown:
        raise UserError(f"{where}: unknown field(s) {sorted(unknown)}")
    nested = raw.get("hparams", {})
    if not isinstance(nested, Mapping):
        raise UserError(f"{where}.hparams: expected an object, got {nested!r}")
    hparams = _hparams({**{k: raw[k] for k in hp_keys & set(raw)}, **nested}, where)
    frontend = _frontend(raw, where)
    if family == "rnn":
        body = _rnn(raw, where)
    elif family == "mlp":
        body = {"family": "mlp", "layers": _layers(raw, where, allow_none=True)}
    else:
        body = _cnn(raw, where)
    return {**body, **frontend, "hparams": hparams}


def _frontend(raw: Mapping[str, Any], where: str) -> dict[str, str]:
    """The features the child reads, kept only when named (so architectures written
    before the field existed keep their hash)."""
    from automl.data.frontends import FRONTENDS

    if FRONTEND_KEY not in raw:
        return {}
    name = raw[FRONTEND_KEY]
    if not isinstance(name, str) or name not in FRONTENDS:
        raise UserError(f"{where}.frontend: expected one of {sorted(FRONTENDS)}, got {name!r}")
    return {FRONTEND_KEY: name}


def arch_key(arch: Mapping[str, Any], *extra: Any) -> str:
    """Stable hash of a canonical architecture (plus data fingerprint, seed, ...)."""
    text = json.dumps([arch, *extra], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def describe(arch: Mapping[str, Any]) -> str:
    """A short human-readable form for progress displays and leaderboards (with the
    frontend when the architecture names one: ``mlp[128r] on egemaps``)."""
    frontend = f" on {arch[FRONTEND_KEY]}" if arch.get(FRONTEND_KEY) else ""
    return _describe_body(arch) + frontend


def _describe_body(arch: Mapping[str, Any]) -> str:
    if arch["family"] == "rnn":
        layers = " ".join(f"{x['units']}{x['activation'][0]}" for x in arch["layers"]) or "none"
        bi = "bi" if arch["bidirectional"] else ""
        stack = f"/{arch['subsample']}" if arch.get("subsample", 1) > 1 else ""
        return f"{bi}{arch['cell']}{stack}[{layers}]"
    if arch["family"] == "mlp":
        layers = " ".join(f"{x['units']}{x['activation'][0]}" for x in arch["layers"]) or "linear"
        return f"mlp[{layers}]"
    blocks = " ".join(f"{b['filters']}k{b['kernel']}" for b in arch["blocks"]) or "none"
    return f"cnn[{blocks}]"


def _rnn(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    cell = _choice(raw.get("cell", "gru"), CELLS, f"{where}.cell")
    layers = _layers(raw, where, allow_none=False)
    return {
        "family": "rnn",
        "cell": cell,
        "bidirectional": _bool(raw.get("bidirectional", False), f"{where}.bidirectional"),
        "pooling": _choice(raw.get("pooling", "stats"), POOLINGS, f"{where}.pooling"),
        # frames stacked k at a time before the first layer (k x fewer steps)
        "subsample": _int_range(raw.get("subsample", 1), f"{where}.subsample", 1, MAX_SUBSAMPLE),
        # each layer's outputs normalised (LayerNorm) before the next layer reads them:
        # every layer's (true), or only those of in-cell ReLU/sigmoid layers ("in-cell")
        "layer_norm": _layer_norm(raw.get("layer_norm", False), f"{where}.layer_norm"),
        "layers": layers,
    }


def _layers(raw: Mapping[str, Any], where: str, allow_none: bool) -> list[dict[str, Any]]:
    """``{units, activation}`` layers; 0 units: the layer is absent. An MLP may leave them
    out (a linear model); a recurrent stack lists them, and may have none left (``[]``, or
    every layer of 0 units: a model of the pooled features, which is what normalising
    such a stack writes, so its output normalises again)."""
    layers_raw = raw.get("layers", [] if allow_none else None)
    if not isinstance(layers_raw, list):
        raise UserError(f"{where}.layers: expected a list of {{units, activation}}")
    if len(layers_raw) > MAX_RNN_LAYERS:
        raise UserError(f"{where}.layers: at most {MAX_RNN_LAYERS} layers, got {len(layers_raw)}")
    layers = []
    for i, layer in enumerate(layers_raw):
        at = f"{where}.layers[{i}]"
        _only(layer, {"units", "activation"}, at)
        units = _int_range(layer.get("units"), f"{at}.units", 0, MAX_WIDTH)
        if units:
            activation = _choice(layer.get("activation", "tanh"), ACTIVATIONS, f"{at}.activation")
            layers.append({"units": units, "activation": activation})
    return layers


def _cnn(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    blocks_raw = raw.get("blocks")
    if not isinstance(blocks_raw, list):  # none left (every block of 0 filters): pooled features
        raise UserError(f"{where}.blocks: expected a list of conv blocks")
    blocks = []
    for i, block in enumerate(blocks_raw):
        at = f"{where}.blocks[{i}]"
        _only(block, {"filters", "kernel", "pool", "batch_norm", "activation"}, at)
        filters = _int_range(block.get("filters"), f"{at}.filters", 0, MAX_WIDTH)
        if filters:
            blocks.append(
                {
                    "filters": filters,
                    "kernel": _int_range(block.get("kernel", 3), f"{at}.kernel", 1, 64),
                    "pool": _int_range(block.get("pool", 2), f"{at}.pool", 1, 16),
                    "batch_norm": _bool(block.get("batch_norm", True), f"{at}.batch_norm"),
                    "activation": _choice(
                        block.get("activation", "relu"), ACTIVATIONS, f"{at}.activation"
                    ),
                }
            )
    dense = raw.get("dense", [])
    if isinstance(dense, int):
        dense = [dense]
    if not isinstance(dense, list):
        raise UserError(f"{where}.dense: expected a list of unit counts")
    dense = [
        d
        for d in (_int_range(d, f"{where}.dense[{i}]", 0, MAX_WIDTH) for i, d in enumerate(dense))
        if d
    ]
    return {"family": "cnn", "blocks": blocks, "dense": dense}


def _hparams(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    unknown = set(raw) - set(HPARAM_DEFAULTS)
    if unknown:
        raise UserError(f"{where}.hparams: unknown field(s) {sorted(unknown)}")
    hp = {**HPARAM_DEFAULTS, **raw}
    at = f"{where}.hparams"
    return {
        "lr": _float(hp["lr"], f"{at}.lr", low=0.0, low_open=True),
        "batch_size": _int_range(hp["batch_size"], f"{at}.batch_size", 1, 65536),
        "dropout": _float(hp["dropout"], f"{at}.dropout", low=0.0, high=0.95),
        "weight_decay": _float(hp["weight_decay"], f"{at}.weight_decay", low=0.0),
        "epochs": _int_range(hp["epochs"], f"{at}.epochs", 1, 100_000),
        "optimizer": _choice(hp["optimizer"], OPTIMIZERS, f"{at}.optimizer"),
        "class_weighted": _bool(hp["class_weighted"], f"{at}.class_weighted"),
        "grad_clip": _float(hp["grad_clip"], f"{at}.grad_clip", low=0.0),
        "schedule": _choice(hp["schedule"], SCHEDULES, f"{at}.schedule"),
        "patience": _int(hp["patience"], f"{at}.patience", minimum=0),
    }


def _only(obj: Any, allowed: set[str], where: str) -> None:
    if not isinstance(obj, Mapping):
        raise UserError(f"{where}: expected an object")
    unknown = set(obj) - allowed
    if unknown:
        raise UserError(f"{where}: unknown field(s) {sorted(unknown)}")


def _choice(value: Any, allowed: tuple[str, ...], where: str) -> str:
    if isinstance(value, str) and value.lower() in allowed:
        return value.lower()
    raise UserError(f"{where}: expected one of {list(allowed)}, got {value!r}")


def _int(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


def _int_range(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UserError(f"{where}: expected an integer from {low} to {high}, got {value!r}")
    return value


def _float(
    value: Any, where: str, low: float, high: float | None = None, low_open: bool = False
) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value)  # nan fails every comparison, inf passes a lower bound
        ok = ok and (value > low if low_open else value >= low) and (high is None or value <= high)
    if not ok:
        bound = f"> {low}" if low_open else f">= {low}"
        raise UserError(
            f"{where}: expected a number {bound}{f' and <= {high}' if high else ''}, got {value!r}"
        )
    return value


def _layer_norm(value: Any, where: str) -> bool | str:
    if value == IN_CELL:
        return IN_CELL
    if not isinstance(value, bool):
        raise UserError(f"{where}: expected true, false or {IN_CELL!r}, got {value!r}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{where}: expected true or false, got {value!r}")
    return value
