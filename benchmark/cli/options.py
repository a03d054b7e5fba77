"""The options that several subcommands take, each declared once.

An option's flag, type, metavar and help are written here, once; a subcommand adds it with
:func:`add_option` (``add_option(parser, "data_dir")``), giving only what differs for it: whether
it repeats (``action="append"``), its default, and at most a ``note`` appended to the shared
help. The type of an option that sets a field of :class:`benchmark.runner.RunConfig` (or of
:class:`benchmark.study.StudyConfig`) comes from that field's annotation, so a field and its
option cannot disagree. ``tests/test_cli_options.py`` checks that every subcommand taking an
option shows the same declaration.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

__all__ = ["Option", "OPTIONS", "add_option", "option_type"]


@dataclass(frozen=True)
class Option:
    dest: str
    help: str
    field: str | None = None  # the RunConfig/StudyConfig field whose annotation gives the type
    metavar: str | None = None
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)  # choices, type (when no field)

    @property
    def flag(self) -> str:
        from ..commands import flag

        return flag(self.dest)


def _hub_type(value: str) -> str:
    from ..data import hub_argument

    return hub_argument(value)


_HUB_HELP = ("load the data with datasets.load_dataset(REPO, revision=REVISION) from the Hugging Face hub instead "
             "of --data-dir; the revision (commit, tag or branch) is required and is recorded as the data source")

OPTIONS: dict[str, Option] = {option.dest: option for option in [
    Option("track", "benchmark track: it fixes the task and every training setting (regbench list shows them)",
           metavar="TRACK"),
    Option("task", "task of an ad-hoc setting (--preset, --scale) instead of a track (regbench list shows them)",
           field="task", metavar="TASK"),
    Option("regularizer", "registered regularizer name (regbench list shows them)", metavar="NAME"),
    Option("preset", "task preset of an ad-hoc --task setting", field="preset"),
    Option("scale", "scale of an ad-hoc --task setting: tiny | small | paper | a number in (0, 1]", field="scale"),
    Option("epochs", "override the preset's number of epochs", field="epochs"),
    Option("cell", "recurrent cell", field="cell", kwargs={"choices": ("lstm", "gru", "rnn")}),
    Option("hidden_size", "override the scaled hidden size", field="hidden_size"),
    Option("lr", "override the preset's learning rate", field="lr"),
    Option("dropout", "non-recurrent dropout (Zaremba et al.) on embeddings, between layers and outputs",
           field="dropout"),
    Option("data_dir", "folder with the data files, or a parent with ptb/, ptb_char/, mnist/ (e.g. shared/data); "
                       "or a Hugging Face dataset folder (save_to_disk, or parquet files such as "
                       "data/train-*.parquet)", field="data_dir"),
    Option("hub", _HUB_HELP, metavar="REPO@REVISION", kwargs={"type": _hub_type}),
    Option("store", "results store: its SQLite file (default: $REGBENCH_STORE or regbench_runs/results.sqlite)",
           field="store_path"),
    Option("storage", "Optuna storage: a journal file or an SQLAlchemy URL (default: $REGBENCH_STUDY_STORAGE, "
                      "sqlite:///regbench_runs/studies.sqlite where it exists, else the journal file "
                      "regbench_runs/studies.journal); postgresql://user@host/db to share a study "
                      "between machines", field="storage"),
    Option("seeds", "number of seeds", kwargs={"type": int}),
    Option("seed", "training seed", field="seed"),
    Option("first_seed", "seeds are first-seed, first-seed+1, ...", kwargs={"type": int}),
    Option("out", "output folder", metavar="DIR", field="out_dir"),
    Option("workers", "parallel worker processes on this machine", field="workers"),
    Option("threads", "torch threads per run (1 is fastest for these small recurrent models when other "
                      "processes share the cores; raise it on an otherwise idle machine)", field="threads"),
]}


def option_type(option: Option):
    """The argparse ``type`` of ``option``: explicit, or from its config field's annotation."""
    if "type" in option.kwargs:
        return option.kwargs["type"]
    if option.field is None:
        return None
    from ..runner import RunConfig

    classes = [RunConfig]
    try:
        from ..studies.study import StudyConfig

        classes.append(StudyConfig)
    except ImportError:  # pragma: no cover
        pass
    for cls in classes:
        hints = typing.get_type_hints(cls)
        if option.field in hints:
            hint = hints[option.field]
            args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
                else (hint,)
            for candidate in (int, float):  # str | float (the scale) stays text: parse_scale reads it
                if candidate in args and str not in args:
                    return candidate
            return None
    raise LookupError(f"option {option.dest}: no field {option.field!r} in RunConfig or StudyConfig")


def add_option(parser, dest: str, *, note: str | None = None, **overrides) -> argparse.Action:
    """Add the shared option ``dest`` to ``parser`` (or an argument group); ``overrides`` are
    argparse keywords that differ for this subcommand (action, default, required, help=SUPPRESS)."""
    option = OPTIONS[dest]
    kwargs: dict[str, Any] = {"dest": dest, "help": option.help + (f"; {note}" if note else "")}
    if option.metavar:
        kwargs["metavar"] = option.metavar
    kwargs.update({k: v for k, v in option.kwargs.items() if k != "type"})
    value_type = option_type(option)
    if value_type is not None:
        kwargs["type"] = value_type
    kwargs.update(overrides)
    if kwargs.get("action") in ("store_true", "store_false"):
        kwargs.pop("type", None)
        kwargs.pop("metavar", None)
    return parser.add_argument(option.flag, **kwargs)
