"""The ``regbench`` command (also ``python -m benchmark``).

How subcommands are added
-------------------------
Every subcommand lives in its own module, listed in ``SUBCOMMANDS`` as (name, module). The
module provides::

    HELP = "one line for `regbench --help`"          # optional; else the docstring's first line
    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...    # the exit code
    USER_ERRORS = (MyError,)                         # optional: exceptions that mean bad input

For bad input (a name that does not exist, a value out of range, missing data), raise
``benchmark.errors.UsageError`` (or one of the module's ``USER_ERRORS``) with a one-line message
*before* any long work starts: ``main`` prints ``regbench <cmd>: error: <message>`` and exits
with 2, without a traceback. ``DataNotFoundError``, ``DataFormatError`` and ``UnknownRegularizerError`` are
treated the same way everywhere. Modules are imported only when they are listed and present,
so keep their top-level imports light (import torch/Lightning inside ``run``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..errors import UsageError, error_line, one_line
from .config import add_config_option, expand_config

__all__ = ["SUBCOMMANDS", "UsageError", "build_parser", "main", "one_line"]

SUBCOMMANDS: list[tuple[str, str]] = [
    ("run", "benchmark.run_command"),
    ("list", "benchmark.list_command"),
    ("study", "benchmark.study"),
    ("leaderboard", "benchmark.leaderboard"),
    ("gradient-flow", "benchmark.gradient_flow"),
    ("perf", "benchmark.perf"),
]
CONFIG_FILE_COMMANDS = ("run", "study")  # those that take --config FILE


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (argparse prints the whole usage block by default); no abbreviations."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # --epoch must not silently mean --epochs
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _load_subcommands() -> list[tuple[str, object]]:
    """The listed modules that exist and implement the protocol above."""
    loaded = []
    for name, module_name in SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:  # not written yet
                continue
            raise
        if hasattr(module, "add_arguments") and hasattr(module, "run"):
            loaded.append((name, module))
    return loaded


def _help(module) -> str:
    text = getattr(module, "HELP", None) or (module.__doc__ or "").strip().split("\n")[0]
    return text.strip().rstrip(".")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = _Parser(prog="regbench", description="Benchmark regularizers of recurrent neural networks "
                                                 "(zoneout and friends) with PyTorch Lightning.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    modules = {}
    parser.subcommand_parsers = {}
    for name, module in _load_subcommands():
        sub = commands.add_parser(name, help=_help(module), description=_help(module))
        module.add_arguments(sub)
        if name in CONFIG_FILE_COMMANDS:
            add_config_option(sub)
        modules[name] = module
        parser.subcommand_parsers[name] = sub
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in CONFIG_FILE_COMMANDS and argv[0] in parser.subcommand_parsers:
        try:
            argv = [argv[0], *expand_config(parser.subcommand_parsers[argv[0]], argv[1:])]
        except UsageError as error:
            print(error_line(argv[0], error), file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    from ..logs import configure

    configure()  # the library's messages: plain lines on stderr
    if args.command is None:
        parser.print_help()
        return 2
    module = modules[args.command]
    from regularizers import UnknownRegularizerError

    from ..data import DataFormatError, DataNotFoundError, DataSourceError

    # Every module's user errors: a subcommand may raise another's (run --from-study: StudyError).
    user_errors = (UsageError, DataNotFoundError, DataFormatError, DataSourceError, UnknownRegularizerError,
                   *(error for loaded in modules.values() for error in getattr(loaded, "USER_ERRORS", ())))
    try:
        return int(module.run(args) or 0)
    except user_errors as error:
        if os.environ.get("REGBENCH_DEBUG"):
            raise
        print(error_line(args.command, error), file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `regbench list | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"\nregbench {args.command}: interrupted; run the same command again to resume "
              "from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
