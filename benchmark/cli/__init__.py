"""The ``regbench`` command line: the parser and top-level handler (:mod:`.main`), the options
shared by the subcommands, each declared once (:mod:`.options`), and config files (:mod:`.config`).
Library modules never import from here; their user errors live in :mod:`benchmark.errors`."""

from ..errors import UsageError, one_line
from .main import SUBCOMMANDS, build_parser, main

__all__ = ["SUBCOMMANDS", "UsageError", "build_parser", "main", "one_line"]
