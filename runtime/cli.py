"""The command runner and option parsing shared by ``automl`` and ``rl``.

Options are declared once, on the typed config dataclass that uses them (like CleanRL's
``Args``): a field with ``metadata=option("help text")`` becomes ``--field-name`` with
the field's default, so a default is written in exactly one place. ``KEY=VALUE``
overrides (``rl train --set``, ``automl search --searcher-opt``) are parsed and
type-checked against a config dataclass by :func:`parse_overrides`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import signal
import sys
import threading
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from runtime import ray_cluster
from runtime.errors import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USER_ERROR,
    RESUME_HINT,
    UserError,
)
from runtime.files import out_of_space, out_of_space_line
from runtime.process import configure_process


class Parser(argparse.ArgumentParser):
    """argparse, except that a wrong option is one line (``automl search: error: ...``) like
    every other user error; ``--help`` still prints the full usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None, prog: str) -> int:
    """Parse and dispatch to ``args.func``; a user's mistake, or a write that found the disk
    full, becomes one line and exit 2, an interrupt (Ctrl-C, SIGTERM) one line and exit
    130 / 143."""
    args = parser.parse_args(argv)
    configure_process()
    ray_cluster.prepare(getattr(args, "address", None))  # before any command imports Ray
    with sigterm_as_interrupt() as terminated, warnings_shown(prog):
        try:
            return args.func(args)
        except UserError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt as exc:
            print(f"{prog}: interrupted" + (f"; {exc}" if str(exc) else ""), file=sys.stderr)
            return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
        except Exception as exc:
            if not out_of_space(exc):
                raise
            print(f"{prog}: error: {out_of_space_line(exc)}", file=sys.stderr)
            return EXIT_USER_ERROR


class _WarningLine(logging.Handler):
    """``automl: warning: ...``, one line on stderr. The stream is looked up at each
    warning, so a live progress display that captures stderr shows it above itself."""

    def __init__(self, prog: str) -> None:
        super().__init__(logging.WARNING)
        self.prog = prog

    def emit(self, record: logging.LogRecord) -> None:
        print(f"{self.prog}: warning: {record.getMessage()}", file=sys.stderr)


@contextmanager
def warnings_shown(package: str) -> Iterator[None]:
    """Warnings the command's own package logs (``logging.getLogger(__name__)``) reach the
    user while it runs; the command's name is its package's name."""
    logger, handler = logging.getLogger(package), _WarningLine(package)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


@contextmanager
def sigterm_as_interrupt() -> Iterator[list[int]]:
    """SIGTERM (``kill``, a batch scheduler's time limit, a container stop) ends a job the
    way Ctrl-C does: through the SIGINT handler in place (Ray Tune's graceful stop, or
    Python's KeyboardInterrupt), so the job's clean-up runs and its results are kept.
    Yields the SIGTERMs received (empty: none). Ray replaces a driver's SIGTERM handler
    when it starts; :func:`runtime.ray_cluster.ray_session` puts this one back."""
    received: list[int] = []

    def handler(signum: int, frame: types.FrameType | None) -> None:
        received.append(signum)
        on_interrupt = signal.getsignal(signal.SIGINT)
        if not callable(on_interrupt):  # SIGINT ignored or default: stop all the same
            raise KeyboardInterrupt
        on_interrupt(signal.SIGINT, frame)

    if threading.current_thread() is not threading.main_thread():  # only it gets signals
        yield received
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def resumable_interrupts() -> Iterator[None]:
    """Around the part of a job after its state is first saved: an interrupt there, wherever
    it lands (Tune's graceful stop, a second Ctrl-C forcing it, Ray's shutdown), tells the
    user the job can be continued."""
    try:
        yield
    except KeyboardInterrupt as exc:
        raise KeyboardInterrupt(RESUME_HINT) from exc


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM are ignored inside: for the moment a job records how it ended (its
    saved state, its MLflow runs), which a second Ctrl-C must not cut in half. It is short
    (local writes, or a bounded number of retries to the tracking server)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


# -- value types for argparse ------------------------------------------------------------


def positive_int(text: str) -> int:
    return _number(text, int, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _number(text, int, 0, "an integer >= 0")


def retry_count(text: str) -> int:
    """Restarts of a dead worker: a child that kills its worker every time should fail
    soon, not be retried without end."""
    value = _number(text, int, 0, "an integer from 0 to 10")
    if value > 10:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 10, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    return _number(text, float, 0.0, "a number >= 0")


def positive_float(text: str) -> float:
    value = _number(text, float, 0.0, "a number > 0")
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def duration(text: str) -> float:
    """``90s``, ``15m``, ``2h`` (or plain seconds) -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < math.inf:
        raise argparse.ArgumentTypeError(f"expected a duration like 90s, 15m or 2h, got {text!r}")
    return seconds


def _number(text: str, kind: type, minimum: float, what: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value) or value < minimum:  # nan passes every comparison
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


# -- options declared on dataclasses -----------------------------------------------------


def option(
    help: str, *, flag: str | None = None, type: Callable[[str], Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """Field metadata that makes a config field a command-line option."""
    return {"help": help, "flag": flag, "type": type, **extra}


#: what an option of each checked type takes, as ``--help`` names it
METAVARS = {
    "positive_int": "N", "non_negative_int": "N", "retry_count": "N",
    "positive_float": "X", "non_negative_float": "X", "duration": "DURATION",
}  # fmt: skip
#: ... and an option of each common name, the same in every command
NAMED_METAVARS = {
    "tracking_uri": "URI", "address": "HOST:PORT", "storage": "DIR", "out": "DIR",
    "plots": "DIR", "checkpoint_dir": "DIR", "json": "FILE", "best": "EXPERIMENT",
    "experiment": "NAME", "register": "MODEL_NAME", "run_id": "RUN_ID", "data": "CORPUS",
    "space": "FILE_OR_NAME", "searcher": "NAME", "frontend": "NAME", "model": "MODEL",
    "seed": "N", "device": "DEVICE", "env": "ENV_ID", "algo": "NAME",
}  # fmt: skip


def help_text(doc: str) -> str:
    """A module docstring's first paragraph as ``--help`` shows it: whole, without the
    reST markup (````train```` reads ``train``)."""
    first = doc.strip().split("\n\n")[0]
    return " ".join(first.split()).replace("``", "")


def overrides_option(help: str, flag: str | None = None) -> dict[str, Any]:
    """Metadata of a repeatable ``KEY=VALUE`` option (a list field), for :func:`parse_overrides`."""
    return option(help, flag=flag, action="append", metavar="KEY=VALUE")


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--option`` per field of ``cls`` declared with :func:`option`; default: the
    field's. ``cls.OPTION_GROUPS`` (heading -> field names), where a config has one, puts
    ``--help``'s options under those headings, in that order."""
    headings = getattr(cls, "OPTION_GROUPS", {})
    groups = {heading: parser.add_argument_group(heading) for heading in headings}
    group_of = {name: groups[heading] for heading, names in headings.items() for name in names}
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata:
            continue
        meta = dict(f.metadata)
        flag = meta.pop("flag") or "--" + f.name.replace("_", "-")
        target = group_of.get(f.name, parser)
        kwargs = {k: v for k, v in meta.items() if v is not None}
        kwargs["dest"] = f.name
        if "metavar" not in kwargs and "choices" not in kwargs and kwargs.get("action") is None:
            by_type = METAVARS.get(getattr(kwargs.get("type"), "__name__", ""))
            if by_type or f.name in NAMED_METAVARS:
                kwargs["metavar"] = by_type or NAMED_METAVARS[f.name]
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs["required"] = True
        elif kwargs.get("action") in ("store_true", "append"):
            kwargs["default"] = _default(f)
        else:
            kwargs["default"] = _default(f)
            if kwargs["default"] not in (None, [], "") and "default:" not in kwargs["help"]:
                kwargs["help"] += f" (default: {kwargs['default']})"
        target.add_argument(flag, **kwargs)


def from_args(cls: type, args: argparse.Namespace, **values: Any) -> Any:
    """Build ``cls`` from parsed options (fields without an option keep their defaults)."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    given = {k: v for k, v in vars(args).items() if k in names}
    return cls(**{**given, **values})


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


# -- KEY=VALUE overrides, type-checked against a config dataclass ------------------------


def parse_overrides(cls: type, items: Sequence[str], option_name: str) -> dict[str, Any]:
    """``["lr=0.01", "hidden=[64,64]"]`` -> ``{"lr": 0.01, "hidden": [64, 64]}``.

    Each value is read as JSON (else as a plain string) and must match the field's type;
    a mistake is a :class:`UserError` naming the option, the key and what was expected."""
    hints = typing.get_type_hints(cls)
    names = sorted(f.name for f in dataclasses.fields(cls) if f.init)
    choices = ", ".join(names) if names else "none: this config has no options"
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in names:
            raise UserError(f"{option_name} {item}: expected KEY=VALUE with KEY one of {choices}")
        out[key] = coerce(text, hints[key], f"{option_name} {item}")
    return out


def parse_key_values(items: Sequence[str], option_name: str) -> dict[str, Any]:
    """``["table=t.json", "size=3"]`` -> ``{"table": "t.json", "size": 3}`` (values read as
    JSON, else kept as strings), for options whose keys no dataclass declares."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"{option_name} {item}: expected KEY=VALUE")
        out[key] = coerce(text, Any, f"{option_name} {item}")
    return out


def build_config(cls: type, overrides: dict[str, Any], option_name: str, **fixed: Any) -> Any:
    """``cls(**fixed, **overrides)``; a value its ``__post_init__`` refuses is a user error."""
    try:
        return cls(**{**fixed, **overrides})
    except (TypeError, ValueError) as exc:
        raise UserError(f"{option_name}: {exc}") from None


def coerce(text: str, hint: Any, where: str) -> Any:
    try:
        value = json.loads(text, parse_constant=_not_a_number, parse_float=_finite)
    except json.JSONDecodeError:
        value = text
    except ValueError as exc:  # NaN, Infinity: JSON's reader takes them, no option should
        raise UserError(f"{where}: {exc}") from None
    if not _matches(value, hint):
        raise UserError(f"{where}: expected {_describe(hint)}, got {text!r}")
    return float(value) if hint is float else value


def _not_a_number(name: str) -> float:
    raise ValueError(f"{name} is not a number an option can take")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 reads as inf
        _not_a_number(text)
    return value


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, hint) if isinstance(hint, type) else False


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is list:
        return f"a JSON list of {_describe(args[0])}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, "null" if hint is type(None) else getattr(hint, "__name__", str(hint)))


def read_json_file(path: Path, option_name: str) -> Any:
    if not path.is_file():
        raise UserError(f"{option_name} {path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{option_name} {path}: not valid JSON ({exc})") from None
    except RecursionError:  # thousands of nested brackets: no file of ours looks like that
        raise UserError(f"{option_name} {path}: nested too deeply to be an architecture") from None
