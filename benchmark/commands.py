"""``regbench`` command lines as text: the reproduce commands that records, ``config.yaml`` files,
studies and boards show. Every one is built here, from options by destination name (``data_dir``
becomes ``--data-dir``, as the command-line parser declares them), so that the flags cannot drift
apart between the places that print them."""

from __future__ import annotations

import shlex
import sys
from typing import Any, Collection, Mapping

__all__ = ["flag", "regbench_command", "this_invocation"]


def flag(dest: str) -> str:
    """The command-line flag of an option's destination name."""
    return "--" + dest.replace("_", "-")


def regbench_command(subcommand: str, options: Mapping[str, Any], *, one_flag: Collection[str] = ()) -> str:
    """``regbench <subcommand>`` with ``options`` in order: a list repeats its flag (``--regularizer a
    --regularizer b``), or follows one flag for the options named in ``one_flag`` (``--cells lstm
    gru``, argparse's ``nargs="+"``); ``True`` is a bare flag; ``None``, ``False`` and empty lists are
    left out; values are shell-quoted."""
    parts = ["regbench", subcommand]
    for dest, value in options.items():
        if value is None or value is False or (isinstance(value, (list, tuple)) and not value):
            continue
        if value is True:
            parts.append(flag(dest))
        elif isinstance(value, (list, tuple)) and dest in one_flag:
            parts += [flag(dest), *map(str, value)]
        else:
            for item in value if isinstance(value, (list, tuple)) else [value]:
                parts += [flag(dest), str(item)]
    return shlex.join(parts)


def this_invocation(subcommand: str) -> str:
    """This process's own command line, as the ``regbench <subcommand>`` command that repeats it."""
    argv = sys.argv[1:]
    if argv[:1] == [subcommand]:
        argv = argv[1:]
    return shlex.join(["regbench", subcommand, *argv])
