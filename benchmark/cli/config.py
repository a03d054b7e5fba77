"""Config files: ``regbench run --config run.yaml`` and ``regbench study --config study.yaml``.

A config file is a YAML mapping from option names (``data_dir`` or ``data-dir``) to values, the
same options the command line takes; what the command line gives besides wins. The file is
turned into the command-line arguments it stands for, ahead of the user's own, so that it is
checked exactly like the command line (types, choices, exclusive options) with the same
one-line errors. A run's ``config.yaml`` (written by the runner into its run folder) is such a
file: ``regbench run --config <run_dir>/config.yaml`` repeats the run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import UsageError

__all__ = ["CONFIG_HELP", "add_config_option", "expand_config", "config_path"]

CONFIG_HELP = ("YAML file of options (keys as the option names: task, seeds, data_dir, ...); options "
               "given on the command line win. A run's config.yaml in its run folder repeats that run")


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, metavar="FILE", help=CONFIG_HELP)


def config_path(argv: list[str]) -> str | None:
    """The value of ``--config`` in ``argv`` (the last one), if any."""
    path = None
    for index, token in enumerate(argv):
        if token == "--config" and index + 1 < len(argv):
            path = argv[index + 1]
        elif token.startswith("--config="):
            path = token.partition("=")[2]
    return path


def _given(action: argparse.Action, argv: list[str]) -> bool:
    return any(token == flag or token.startswith(flag + "=") for flag in action.option_strings for token in argv)


def _load(path: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise UsageError(f"--config {path} cannot be read ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        raise UsageError(f"--config {path} is not YAML ({str(error).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"--config {path} must be a mapping of option names to values, not {type(data).__name__}")
    return data


def _tokens(actions: list[argparse.Action], key: str, value: Any) -> list[str]:
    """The command-line arguments that give option ``key`` the value ``value``."""
    if value is None:
        return []
    flagged = [a for a in actions if a.nargs == 0]  # store_true / store_false / store_const
    if flagged:
        for action in flagged:
            if action.const == value:
                return [action.option_strings[0]]
        if all(value == a.default for a in flagged) or value is False:
            return []
        raise UsageError(f"--config: {key} takes true or false, got {value!r}")
    action = actions[0]
    flag = action.option_strings[0]
    values = value if isinstance(value, (list, tuple)) else [value]
    if isinstance(action, argparse._AppendAction):
        return [token for item in values for token in (flag, _text(item))]
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        return [flag, *map(_text, values)]
    if isinstance(value, (list, tuple)):
        raise UsageError(f"--config: {key} takes one value, got a list")
    return [flag, _text(value)]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def expand_config(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``argv`` with the options of its ``--config`` file put in front (those not in ``argv``)."""
    path = config_path(argv)
    if path is None:
        return argv
    by_dest: dict[str, list[argparse.Action]] = {}
    for action in parser._actions:
        if action.option_strings:
            by_dest.setdefault(action.dest, []).append(action)
    tokens: list[str] = []
    for raw_key, value in _load(path).items():
        key = str(raw_key).lstrip("-").replace("-", "_")
        key = "settings" if key == "set" else key  # --set's destination
        actions = by_dest.get(key)
        if not actions or key in ("config", "help"):
            known = ", ".join(sorted(d for d in by_dest if d not in ("config", "help")))
            raise UsageError(f"--config {path}: unknown option {raw_key!r}; valid: {known}")
        if any(_given(action, argv) for action in actions):
            continue  # the command line wins
        tokens += _tokens(actions, key, value)
    return tokens + argv
