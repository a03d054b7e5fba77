"""``regbench study`` and ``regbench run --from-study``: the command line of Optuna studies.

    regbench study --task digits --regularizer zoneout --trials 20
    regbench study --task digits --all --trials 6 --seeds 3      # every regularizer, equal budget
    regbench run --from-study digits-zoneout-paper-tiny --seeds 3

Protocol and behaviour (the library is :mod:`benchmark.studies`, one module per concern)
---------------------------------------------------------------------------------------
* Search space: ``regularizers.get(R).search_space(trial)``. Every trial trains with the same
  seed (``--seed``, default 0) so that configurations are compared on equal terms; the sampler
  is a ``TPESampler`` seeded from ``--seed`` (and the worker), so a fresh study proposes the
  same sequence.
* Budget: ``--trials N`` is the number of trials the study must hold *with an outcome*
  (finished, diverged, pruned or failed with a recorded reason), counted by Optuna's
  ``MaxTrialsCallback``. Rerunning the same command resumes the study (``load_if_exists``) and
  runs only the trials still missing. A trial left RUNNING by a killed worker is failed by the
  storage's heartbeat (RDB storages; its configuration is enqueued again by
  ``RetryHeartbeatStaleTrialCallback``) or, when that worker ran on this machine, as soon as its process
  is gone; it has no outcome and is run again. An equal budget N for every regularizer of a
  task is the protocol (``run_task_suite``, ``--all``).
* Nothing to tune (``none``, ``recurrent_batchnorm``: an empty search space): the study's one
  configuration is an enqueued trial 0 and the budget is 1, whatever N is; spending N trials on
  one configuration would only pick a lucky run. On a track the paper's setting is enqueued as
  trial 0, so that tuning can only improve on it.
* Outcomes: a run that diverges (NaN) completes with the value ``+inf``; a run that raises is
  ``TrialState.FAIL`` with the reason in the trial's user attrs. Either way the study goes on,
  and the record (with ``study`` and ``trial``) lands in the results store; pruned trials are
  stored with status ``pruned`` and a reason that says after which epoch.
* Pruning: ``MedianPruner`` (waiting for half the epochs) on the validation metric, through
  :func:`pruning_callback`, optuna-integration's ``PyTorchLightningPruningCallback`` made to
  stop the trainer cleanly so that the partial run is recorded.
* Storage: Optuna's journal file ``regbench_runs/studies.journal`` by default (the old default
  ``regbench_runs/studies.sqlite`` is kept where it exists); any SQLAlchemy URL, e.g.
  ``postgresql://user@host/db`` for workers on several machines; an in-memory SQLite URL is
  refused. ``--workers K`` runs K processes sharing the storage on this machine, no more than
  there are trials to run; Ctrl-C stops them all with one line. The study's user attrs hold its
  task, regularizer, preset, scale and seed; reusing a study name for anything else is refused.
* Messages go to the ``benchmark.study`` logger; the command line prints them.
"""

from __future__ import annotations

import argparse
import sys

from .studies import (DEFAULT_STORAGE, LEGACY_STORAGE, STORAGE_ENV, Budget, StudyConfig, StudyError, StudySummary,
                      best_configuration, counted, default_study_name, load_study, open_storage, redact, rerun_best,
                      resolve_storage, run_study, run_task_suite)
from .commands import this_invocation
from .logs import configure as show_messages

__all__ = [
    "DEFAULT_STORAGE", "LEGACY_STORAGE", "STORAGE_ENV", "StudyError", "StudyConfig", "StudySummary", "Budget",
    "PruningCallback", "counted", "open_storage", "load_study", "redact", "resolve_storage", "default_study_name",
    "run_study", "run_task_suite", "best_configuration", "rerun_best", "pruning_callback", "add_arguments", "run",
    "add_from_study_arguments", "run_from_study",
]

def __getattr__(name: str):
    """``pruning_callback`` and ``PruningCallback``, imported on first use (they import Lightning)."""
    if name in ("pruning_callback", "PruningCallback"):
        from .studies import pruning

        return getattr(pruning, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


HELP = "tune a regularizer with an Optuna study (equal budget per regularizer with --all)"
USER_ERRORS = (StudyError,)


# ----------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``regbench study`` (declared in benchmark.cli.arguments)."""
    from .cli.arguments import study_arguments

    study_arguments(parser)


def _apply_track(args) -> None:
    """Fill the task, --trials and --seeds of ``args`` from ``--track`` (in place)."""
    if not args.track:
        if args.trials is None:
            raise StudyError("--trials is needed with --task (a --track brings its own)")
        args.seeds = args.seeds or 0
        return
    from .tracks import get_track

    try:
        track = get_track(args.track)
    except ValueError as error:
        raise StudyError(str(error)) from None
    fixed = [flag for flag, value in (("--preset", args.preset), ("--scale", args.scale), ("--epochs", args.epochs))
             if value is not None]
    if fixed:
        raise StudyError(f"a track fixes its settings: drop {', '.join(fixed)} (or use --task for an ad-hoc setting)")
    if not track.trials and args.trials is None:
        raise StudyError(f"track {track.name} has no tuning budget (its regularizers run at the paper's "
                         f"hyperparameters): use `regbench run --track {track.name}`")
    args.task = track.task
    args.trials = track.trials if args.trials is None else args.trials
    args.seeds = track.seeds if args.seeds is None else args.seeds


def _config_from_args(args, regularizer: str) -> StudyConfig:
    options = {}
    if args.track:
        options["track"] = args.track
    if args.epochs is not None:
        options["epochs"] = args.epochs
    if args.data_dir is not None:
        options["data_dir"] = args.data_dir
    if args.hub is not None:
        options["hub"] = args.hub
    return StudyConfig(task=args.task, regularizer=regularizer, trials=args.trials, storage=args.storage,
                       study_name=args.study_name, seed=args.seed, preset=args.preset, scale=args.scale,
                       run_options=options, store=args.store, workers=args.workers, threads=args.threads,
                       prune=not args.no_prune,
                       startup_trials=args.startup_trials, heartbeat=args.heartbeat, run_fn=args.objective,
                       command=this_invocation("study"))


def run(args) -> int:
    """``regbench study``: one line per trial, a summary line per study; errors as one line. Exits 1
    when a study has no trial with a finite value (all failed, pruned or diverged) or a rerun failed."""
    show_messages()
    import logging

    log = logging.getLogger(__name__)  # shown on stderr by the command line's handler
    try:
        if args.threads < 1:
            raise StudyError(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)  # the reruns of the best configurations run in this process
        _apply_track(args)
        if args.all:
            if args.study_name:
                raise StudyError("--study-name names one study; with --all every regularizer gets its default name")
            import regularizers

            configs = [_config_from_args(args, name) for name in regularizers.available()]
        else:
            configs = [_config_from_args(args, args.regularizer)]
        status = 0
        for config in configs:
            summary = run_study(config)
            print(summary.line(), flush=True)
            if summary.best_value is None:
                outcomes = ", ".join(f"{v} {k}" for k, v in sorted(summary.outcomes.items()) if v) or "none"
                log.error("regbench study: no trial of study %s finished with a finite value (%s); see the "
                          "reasons above", summary.study_name, outcomes)
                status = 1
                continue
            if args.seeds:
                try:
                    rerun_best(config.resolved_name(), config.resolved_storage(), seeds=args.seeds,
                               store=config.store, run_fn=config.run_fn, command=config.command)
                except StudyError as error:  # e.g. every trial diverged: say so, go on with the others
                    log.error("regbench study: %s: no rerun: %s", config.regularizer, error)
                    status = 1
        if args.track and args.seeds:
            _write_track_board(args)
    except KeyboardInterrupt:  # errors are formatted by the command line's handler (benchmark.cli.main)
        print("regbench study: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return status


def _write_track_board(args) -> None:
    """The track's board from this store, with the shipped baselines for the regularizers it lacks."""
    from .leaderboard import DEFAULT_OUT, SHIPPED_STORE, write_track_board
    from .store import default_store_path

    store = args.store or str(default_store_path())
    path = write_track_board(args.track, store, DEFAULT_OUT, shipped=SHIPPED_STORE)
    print(f"Board of {args.track} with the shipped baselines: {path}", flush=True)


def add_from_study_arguments(parser: argparse.ArgumentParser) -> None:
    """``--from-study S [--storage URL] --seeds K`` for ``regbench run`` (benchmark.cli.arguments)."""
    from .cli.arguments import from_study_arguments

    from_study_arguments(parser)


def run_from_study(args) -> int:
    """``regbench run --from-study S``: the task, regularizer and settings come from the study."""
    clashing = [flag for flag, attr in (("--task", "task"), ("--regularizer", "regularizer"))
                if getattr(args, attr, None)]
    from .errors import error_line

    if clashing:
        print(error_line("run", f"--from-study takes the task and regularizer from the study; "
                                f"drop {' and '.join(clashing)}"), file=sys.stderr)
        return 2
    show_messages()
    seeds = getattr(args, "seeds", None) or 3
    if isinstance(seeds, (list, tuple)):
        seeds = len(seeds)
    # --out is the one output folder the reruns write into (the study's own options are kept).
    options = {"out_dir": args.out} if getattr(args, "out", None) else None
    try:
        records = rerun_best(args.from_study, getattr(args, "storage", None), seeds=int(seeds),
                             store=getattr(args, "store", None), run_fn=getattr(args, "objective", None),
                             command=this_invocation("run"), run_options=options)
    except StudyError as error:  # called directly too: the one error form, exit 2
        print(error_line("run", error), file=sys.stderr)
        return 2
    return 0 if all(r.status == "ok" for r in records) else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmark.study ARGS`` is ``regbench study ARGS`` (same parser, same error lines)."""
    from .cli import main as regbench

    return regbench(["study", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
