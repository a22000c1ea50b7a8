"""The shared core: typed options, atomic files, and the one direction of imports."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from runtime import tracking
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
        ("rate=NaN", "--set rate=NaN: NaN is not a number an option can take"),
        ("rate=-Infinity", "-Infinity is not a number"),
        ("rate=1e999", "--set rate=1e999: 1e999 is not a number"),
        ("hidden=[1, NaN]", "NaN is not a number"),
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


#: the modules that may import MLflow: the run lifecycle, and the served model's code (a
#: subclass of ``mlflow.pyfunc.PythonModel``)
MLFLOW_MODULES = {"runtime/tracking.py", "automl/ship/serving.py"}


def _modules() -> dict[str, ast.Module]:
    """Every module of the three packages, parsed (nothing imported)."""
    paths = [p for package in ("automl", "rl", "runtime") for p in (ROOT / package).rglob("*.py")]
    return {str(p.relative_to(ROOT)): ast.parse(p.read_text()) for p in paths}


def _importers(prefix: str) -> set[str]:
    """The modules that import ``prefix`` (a package, or ``ray.tune``), anywhere in them."""
    importers = set()
    for name, tree in _modules().items():
        for node in ast.walk(tree):  # top level or inside functions alike
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                modules = [node.module or ""]
                modules += [f"{node.module}.{a.name}" for a in node.names]  # from ray import tune
            else:
                continue
            if any(m == prefix or m.startswith(prefix + ".") for m in modules):
                importers.add(name)
    return importers


def test_only_tracking_and_the_served_model_import_mlflow():
    assert _importers("mlflow") == MLFLOW_MODULES


#: Ray Tune's adapters: the trial's side, a fixed grid of trials, a searcher's trials
TUNE_MODULES = {"runtime/trial.py", "runtime/tune_grid.py", "automl/search/ray_tune.py"}


def test_only_the_adapters_import_ray_tune():
    assert _importers("ray.tune") == TUNE_MODULES


def test_no_module_changes_process_wide_state_when_imported():
    """Environment defaults, thread counts, log levels: in configure_process(), called by
    each entry point and each trial, never at a module's top level."""
    setters = {"setdefault", "set_num_threads", "set_flush_denormal", "setLevel", "putenv"}
    found = []
    for name, tree in _modules().items():
        for statement in tree.body:  # top level only: what runs at import
            for node in ast.walk(statement):
                if isinstance(statement, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
                    break
                if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in setters:
                    found.append(f"{name}:{node.lineno}")
                if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Subscript) and ast.unparse(t.value) == "os.environ"
                    for t in node.targets
                ):
                    found.append(f"{name}:{node.lineno}")
    assert found == []


def test_tag_names_of_runtime_live_in_runtime_tags():
    found = {
        name: node.value
        for name, tree in _modules().items()
        if name.startswith("runtime/") and name != "runtime/tags.py"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith("automl.")
    }
    assert found == {}


def test_class_labels_become_metric_keys_mlflow_takes():
    """A label with brackets, commas, tabs, emoji or path parts is still logged
    (``recall/<label>``): the characters MLflow refuses become ``_``; what it takes stays."""
    from mlflow.utils.validation import _validate_metric_name

    labels = ("calm (baseline)", "a,b", "tab\there", "cry 😢", "état-2.x/ok", "../up", "", ".")
    for label in labels:
        _validate_metric_name(tracking.metric_key("recall", label))  # raises if refused
    assert tracking.metric_key("recall", "a,b (c)") == "recall/a_b _c_"
    assert tracking.metric_key("recall", "état-2") == "recall/état-2"


def _subcommands(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def test_help_reads_whole_and_every_option_says_what_it_takes():
    """``--help`` of both commands: the description whole (no sentence cut off) and without
    reST markup; every option has help, a placeholder that is not just its own name in
    capitals where a better one is known, and search's options under headings."""
    from automl.cli import build_parser as automl_parser
    from rl.cli import build_parser as rl_parser

    for parser in (automl_parser(), rl_parser()):
        text = parser.format_help()
        assert "``" not in text and parser.description.endswith(".")
        for name, sub in _subcommands(parser):
            for action in sub._actions:
                if action.option_strings and action.dest != "help":
                    assert action.help, f"{name} {action.option_strings[0]}"
                    assert action.metavar != "TRACKING_URI", f"{name} {action.dest}"
    search = dict(_subcommands(automl_parser()))["search"].format_help()
    for heading in (
        "data:",
        "space and searcher:",
        "resources and cluster:",
        "tracking and output:",
        "budget, early stopping and objective:",
    ):
        assert f"\n{heading}\n" in search
    assert "--best EXPERIMENT" in dict(_subcommands(automl_parser()))["evaluate"].format_help()
    steps = dict(_subcommands(rl_parser()))["train"].format_help()
    assert "--steps N" in steps and "50000 for dqn" in steps
