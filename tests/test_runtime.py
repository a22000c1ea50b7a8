"""The shared core: typed options, atomic files, and the one direction of imports."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from runtime.cli import Parser, add_options, from_args, option, parse_overrides, positive_int
from runtime.errors import UserError
from runtime.files import atomic_write, write_json

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class Example:
    rate: float = 0.1
    steps: int = 5
    hidden: list[int] = dataclasses.field(default_factory=lambda: [8])
    mode: str = "fast"
    flag: bool = False
    limit: int | None = None


@pytest.mark.parametrize(
    "item,value",
    [
        ("rate=1", 1.0),  # an integer is a valid float, stored as one
        ("rate=2.5e-3", 2.5e-3),
        ("steps=7", 7),
        ("hidden=[16, 32]", [16, 32]),
        ("mode=slow", "slow"),  # not JSON: a plain string
        ("flag=true", True),
        ("limit=null", None),
        ("limit=3", 3),
    ],
)
def test_overrides_are_parsed_as_json_and_typed(item, value):
    parsed = parse_overrides(Example, [item], "--set")
    assert list(parsed.values()) == [value]
    assert type(next(iter(parsed.values()))) is type(value)


@pytest.mark.parametrize(
    "item,message",
    [
        ("rate=abc", "--set rate=abc: expected a number, got 'abc'"),
        ("steps=1.5", "expected an integer"),
        ("hidden=[1, 'x']", "expected a JSON list of an integer"),
        ("flag=1", "expected true or false"),
        ("limit=many", "expected an integer or null"),
        ("colour=red", "--set colour=red: expected KEY=VALUE with KEY one of flag, hidden"),
        ("rate", "expected KEY=VALUE"),
    ],
)
def test_override_mistakes_name_the_option_and_the_expected_type(item, message):
    with pytest.raises(UserError) as info:
        parse_overrides(Example, [item], "--set")
    assert message in str(info.value)


@dataclasses.dataclass(kw_only=True)
class Options:
    name: str = dataclasses.field(metadata=option("required: no default"))
    count: int = dataclasses.field(default=3, metadata=option("how many", type=positive_int))
    tags: list[str] = dataclasses.field(
        default_factory=list, metadata=option("repeatable", action="append", flag="--tag")
    )
    quiet: bool = dataclasses.field(default=False, metadata=option("less", action="store_true"))
    internal: float = 1.0  # no option: not on the command line


def test_options_come_from_the_dataclass_with_its_defaults():
    parser = Parser(prog="example")
    add_options(parser, Options)
    built = from_args(Options, parser.parse_args(["--name", "x", "--tag", "a", "--tag", "b"]))
    assert built == Options(name="x", tags=["a", "b"])
    assert "(default: 3)" in parser.format_help() and "--internal" not in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--count", "3"])  # --name is required


def test_atomic_write_leaves_the_old_file_and_no_temporary_when_writing_fails(tmp_path):
    path = write_json(tmp_path / "out.json", {"a": 1})

    def broken(handle):
        handle.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def _imports(package: str) -> dict[str, set[str]]:
    """module -> top-level project packages it imports (read with ast, nothing imported)."""
    found = {}
    for path in (ROOT / package).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names & {"automl", "rl", "runtime"}
    return found


def test_imports_run_one_way_automl_to_rl_to_runtime():
    assert {m: i for m, i in _imports("runtime").items() if i - {"runtime"}} == {}
    assert {m: i for m, i in _imports("rl").items() if "automl" in i} == {}
