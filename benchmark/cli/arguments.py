"""Command-line arguments of ``regbench study``, ``run --from-study``, ``leaderboard`` and
``gradient-flow``, from the shared declarations of :mod:`.options` (the modules of those
subcommands keep a one-line ``add_arguments`` that calls these)."""

from __future__ import annotations

import argparse

from .options import add_option

__all__ = ["study_arguments", "from_study_arguments", "leaderboard_arguments", "gradient_flow_arguments"]


def study_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``regbench study``."""
    setting = parser.add_mutually_exclusive_group(required=True)
    add_option(setting, "track", note="it also brings --trials and --seeds; with --seeds, the track's board "
                                      "is written with the shipped baselines")
    add_option(setting, "task")
    which = parser.add_mutually_exclusive_group(required=True)
    add_option(which, "regularizer", note="the one to tune")
    which.add_argument("--all", action="store_true",
                       help="a study for every registered regularizer with the same --trials (the protocol)")
    parser.add_argument("--trials", type=int, default=None,
                        help="trials the study must hold (default: the track's); rerunning resumes and runs only "
                             "the missing ones")
    add_option(parser, "storage", default=None)
    parser.add_argument("--study-name", default=None, help="default: <task>-<regularizer>[-<preset>][-<scale>]")
    add_option(parser, "workers", default=1, note="default 1")
    add_option(parser, "threads", default=1, note="default 1")
    add_option(parser, "seed", default=0, note="the same for every trial; it also seeds the sampler (default 0)")
    add_option(parser, "seeds", default=None,
               note="after the study, rerun its best configuration with this many fresh seeds "
                    "(default: the track's; 0 without a track)")
    add_option(parser, "preset", default=None, note="default: the runner's")
    add_option(parser, "scale", default=None)
    add_option(parser, "epochs", default=None)
    add_option(parser, "data_dir", default=None)
    add_option(parser, "hub", default=None)
    add_option(parser, "store", default=None)
    parser.add_argument("--no-prune", action="store_true", help="do not prune trials (MedianPruner otherwise)")
    parser.add_argument("--startup-trials", type=int, default=None,
                        help="random trials before TPE takes over (default min(10, max(2, trials // 3)))")
    parser.add_argument("--heartbeat", type=int, default=10,
                        help="seconds between trial heartbeats; a trial silent for 3 of them is failed as stale")
    parser.add_argument("--objective", default=None, help=argparse.SUPPRESS)  # "module:function", tests only


def from_study_arguments(parser: argparse.ArgumentParser) -> None:
    """``--from-study S [--storage URL] --seeds K`` for ``regbench run`` (when those flags are absent)."""
    existing = {option for action in parser._actions for option in action.option_strings}
    parser.add_argument("--from-study", default=None, metavar="STUDY",
                        help="rerun the best configuration of this Optuna study with --seeds fresh seeds")
    if "--storage" not in existing:
        add_option(parser, "storage", default=None, note="of --from-study")
    if "--seeds" not in existing:
        add_option(parser, "seeds", default=3, note="for --from-study (default 3)")


def leaderboard_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    """Arguments of ``regbench leaderboard``."""
    add_option(parser, "store", default=None, note="or a JSON export")
    add_option(parser, "out", default=default_out,
               note=f"of the boards (default {default_out}; the committed boards are leaderboards/)")
    add_option(parser, "track", default=None,
               note="only this track's board, with the shipped baselines (leaderboards/results.json) for "
                    "the regularizers the store has not run on it")
    parser.add_argument("--export", default=None, metavar="JSON",
                        help="also write every record of the store to this JSON file (sorted, stable)")
    parser.add_argument("--no-plots", action="store_true", help="markdown and JSON only")


def gradient_flow_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``regbench gradient-flow`` (the paper's figure: its own defaults)."""
    add_option(parser, "task", default="digits", choices=("digits", "pmnist"),
               note="digits: embedded 8x8 digits, 64 steps (default); pmnist: MNIST, 784 steps")
    add_option(parser, "data_dir", default=None, note="MNIST for pmnist")
    add_option(parser, "hidden_size", default=100, note="LSTM units (paper: 100)")
    add_option(parser, "epochs", default=1, note="training epochs before measuring (paper: 1)")
    parser.add_argument("--batch-size", type=int, default=32)
    add_option(parser, "lr", default=0.001, note="RMSprop (paper: 0.001)")
    add_option(parser, "seed", default=0)
    parser.add_argument("--limit-train-batches", type=int, default=None,
                        help="train on at most this many batches per epoch (for pmnist on a CPU)")
    parser.add_argument("--grad-batches", type=int, default=8, help="validation batches the gradient is averaged on")
    add_option(parser, "out", default="regbench_runs/gradient_flow",
               note="of the figure (default regbench_runs/gradient_flow; the committed figure: "
                    "leaderboards/gradient_flow)")
