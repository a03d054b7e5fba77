"""Each shared option is declared once (benchmark.cli.options) and every subcommand that takes it
shows that declaration; errors are one line from the top-level handler."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark.cli import build_parser  # noqa: E402
from benchmark.cli.options import OPTIONS, option_type  # noqa: E402


def _subparsers():
    parser, _ = build_parser()
    return parser.subcommand_parsers


def test_a_shared_option_is_the_same_declaration_in_every_subcommand_that_takes_it():
    seen = {dest: [] for dest in OPTIONS}
    for name, sub in _subparsers().items():
        for action in sub._actions:
            option = OPTIONS.get(action.dest)
            if option is None or option.flag not in action.option_strings:
                continue
            seen[action.dest].append(name)
            assert action.option_strings == [option.flag], (name, action.dest)
            assert action.help.startswith(option.help), (name, action.dest)
            expected = option_type(option)
            if expected is not None and action.nargs != 0:
                assert action.type is expected, (name, action.dest)
    assert all(seen.values()), {dest: names for dest, names in seen.items() if not names}
    assert {"run", "study"} <= set(seen["data_dir"]) and {"run", "study", "leaderboard"} <= set(seen["store"])
    assert {"run", "study", "gradient-flow"} <= set(seen["epochs"])


def test_the_types_come_from_the_config_dataclasses():
    from benchmark.runner import RunConfig

    assert option_type(OPTIONS["epochs"]) is int and option_type(OPTIONS["lr"]) is float
    assert option_type(OPTIONS["scale"]) is None  # str | float: text, read by parse_scale
    assert {o.field for o in OPTIONS.values() if o.field} - set(RunConfig.__dataclass_fields__) <= {
        "storage", "workers", "threads"}  # StudyConfig's


def test_no_subcommand_declares_a_shared_option_by_hand():
    """No ``add_argument("--data-dir", ...)`` left outside benchmark/cli/options.py."""
    flags = {option.flag for option in OPTIONS.values()}
    for path in (ROOT / "benchmark").rglob("*.py"):
        if path.name == "options.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument" and node.args:
                first = node.args[0]
                assert not (isinstance(first, ast.Constant) and first.value in flags), (path, first.value)


def test_library_modules_do_not_import_the_command_line():
    for path in (ROOT / "benchmark").rglob("*.py"):
        if "cli" in path.parts or path.name == "__main__.py":
            continue
        text = path.read_text()
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith(("from .cli", "from benchmark.cli", "import benchmark.cli")):
                # only the subcommands' one-line glue (their arguments, `python -m` entry) may reach it
                assert any(glue in stripped for glue in ("arguments import", "options import",
                                                         "import main as regbench")), (path, stripped)


@pytest.mark.parametrize("argv, expected", [
    (["study", "--task", "digits", "--regularizer", "zoneout"], "--trials is needed with --task"),
    (["run", "--from-study", "x", "--task", "digits"], "--from-study takes the task"),
])
def test_errors_are_one_line_regbench_cmd_error(argv, expected, tmp_path, monkeypatch, capsys):
    from benchmark.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"regbench {argv[0]}: error: ") and expected in lines[0], lines
