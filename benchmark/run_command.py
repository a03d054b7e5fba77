"""``regbench run``: train regularizers on tasks, store the results, write the leaderboards.

With no arguments it runs the default track (``benchmark.tracks.DEFAULT_TRACK``, on the
embedded digits: no download): every registered regularizer at the paper's hyperparameters,
the track's seeds, in parallel worker processes, and prints whether each beat ``none``
significantly. ``--track T`` runs another track; ``--task`` with ``--preset``/``--scale`` runs
an ad-hoc setting instead (``--task char_ptb`` alone: every regularizer, 1 seed, ``small`` scale).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .records import RunRecord

log = logging.getLogger(__name__)

HELP = "train regularizers on tasks and store the results (no arguments: the default suite, a few minutes)"

TASK_SEEDS = 1  # with --task
TASK_SCALE = "small"
DEFAULT_LEADERBOARD_DIR = os.path.join("regbench_runs", "leaderboards")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .cli.options import add_option
    from .tasks import DEFAULT_PRESET

    from .tracks import DEFAULT_TRACK

    add_option(parser, "track", action="append", note=f"repeatable (default: {DEFAULT_TRACK})")
    add_option(parser, "task", action="append", note="repeatable")
    add_option(parser, "regularizer", action="append", metavar="NAME_OR_SPEC",
               note="or a spec like zoneout:z_cells=0.5, repeatable (default: every registered one that "
                    "supports the cell type)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                        help="hyperparameter of the (one) regularizer, repeatable: --set z_cells=0.5")
    add_option(parser, "seeds", default=None, note=f"default: the track's; {TASK_SEEDS} with --task")
    add_option(parser, "first_seed", default=0, note="default 0")
    add_option(parser, "data_dir", default=None)
    add_option(parser, "hub", default=None)
    add_option(parser, "preset", default=None, note=f"default: {DEFAULT_PRESET}")
    add_option(parser, "scale", default=None, note=f"default: {TASK_SCALE}")
    add_option(parser, "epochs", default=None)
    add_option(parser, "cell", default=None, note="default lstm")
    add_option(parser, "hidden_size", default=None)
    add_option(parser, "lr", default=None)
    add_option(parser, "dropout", default=None)
    add_option(parser, "store", default=None)
    add_option(parser, "out", default=None, note="run directories with logs and checkpoints (default: regbench_runs)")
    parser.add_argument("--leaderboards", default=None, metavar="DIR",
                        help=f"where to write the leaderboards (default: {DEFAULT_LEADERBOARD_DIR})")
    parser.add_argument("--no-leaderboard", action="store_true", help="do not write the leaderboards at the end")
    add_option(parser, "workers", default=None, note="default: 2 when there are several runs and at least 2 "
                                                     "cores, else 1")
    add_option(parser, "threads", default=1, note="default 1")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--resume", dest="resume", action="store_true", default=None,
                        help="resume interrupted runs from their last checkpoint; fail if none has one "
                             "(default: resume those that have one, start the others)")
    resume.add_argument("--no-resume", dest="resume", action="store_false",
                        help="start interrupted runs afresh instead of resuming them")
    parser.add_argument("--rerun", action="store_true",
                        help="run configurations again that already finished (default: skip them and "
                             "reuse their records, so that rerunning a command only completes it)")
    try:
        from . import study
    except ImportError:
        study = None
    if study is not None and hasattr(study, "add_from_study_arguments"):
        study.add_from_study_arguments(parser)


# ------------------------------------------------------------------------------ planning


def _parse_settings(pairs: list[str]) -> dict[str, str]:
    from .errors import UsageError

    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UsageError(f"--set expects KEY=VALUE, got {pair!r}")
        params[key.strip()] = value.strip()
    return params


def _regularizers_for(args, cell: str) -> list[str]:
    import regularizers

    if args.regularizer:
        return list(args.regularizer)
    return [name for name in regularizers.available() if cell in regularizers.get(name).cell_types]


def _settings(args) -> list[tuple[str | None, str | None, int]]:
    """(track, task, seeds) of every setting the command line asks for."""
    from .errors import UsageError
    from .tracks import DEFAULT_TRACK, get_track

    if args.track and args.task:
        raise UsageError("--track and --task exclude each other: a track fixes its task "
                         "(use --task with --preset/--scale for an ad-hoc setting)")
    if args.task:
        return [(None, task, args.seeds if args.seeds is not None else TASK_SEEDS) for task in args.task]
    if args.preset or args.scale:
        raise UsageError("--preset and --scale choose an ad-hoc setting of a --task; a track fixes its own")
    settings = []
    for name in args.track or [DEFAULT_TRACK]:
        try:
            track = get_track(name)
        except ValueError as error:
            raise UsageError(str(error)) from None
        settings.append((track.name, track.task, args.seeds if args.seeds is not None else track.seeds))
    return settings


def build_configs(args) -> list:
    """Every (setting, regularizer, seed) of the command line as a RunConfig; nothing validated yet."""
    from .errors import UsageError
    from .runner import DEFAULT_OUT_DIR, RunConfig
    from .tasks import DEFAULT_PRESET

    settings = _settings(args)
    if any(seeds < 1 for _, _, seeds in settings):
        raise UsageError(f"--seeds must be at least 1, got {args.seeds}")
    if args.first_seed < 0:
        raise UsageError(f"--first-seed must be 0 or more, got {args.first_seed}")
    if args.hub is not None and args.data_dir is not None:
        raise UsageError("--hub and --data-dir exclude each other: give the folder or the hub repository")
    scale = args.scale or TASK_SCALE
    preset = args.preset or DEFAULT_PRESET
    params = _parse_settings(args.settings)
    specs = _regularizers_for(args, args.cell or "lstm")
    if params and len(specs) != 1:
        raise UsageError("--set applies to one regularizer; give exactly one --regularizer "
                         "(or several specs like --regularizer zoneout:z_cells=0.3)")
    return [RunConfig(task=task, track=track, regularizer=spec, params=dict(params), seed=seed, cell=args.cell,
                      preset=preset, scale=scale, epochs=args.epochs, hidden_size=args.hidden_size,
                      lr=args.lr, dropout=args.dropout, data_dir=args.data_dir, hub=args.hub,
                      out_dir=args.out or DEFAULT_OUT_DIR,
                      store_path=args.store, resume=False if args.resume is False else None)
            for track, task, seeds in settings for spec in specs
            for seed in range(args.first_seed, args.first_seed + seeds)]


def validate(configs: list, require_checkpoint: bool = False) -> list:
    """Check every configuration and load each data set once, before any training starts.

    Returns the plans. ``require_checkpoint`` (``--resume``): some unfinished run must have one.
    """
    from .errors import UsageError
    from .runner import plan_run, prepare, resume_point

    plans = []
    for config in configs:
        try:
            plans.append(plan_run(config))
        except ValueError as error:  # includes UnknownRegularizerError
            raise UsageError(str(error)) from None
    if require_checkpoint and not any(resume_point(plan)[1] for plan in plans):
        raise UsageError("nothing to resume: none of these runs has an unfinished run directory with a "
                         "last.ckpt (leave out --resume to start them)")
    loaded = set()
    for plan in plans:
        key = (plan.task.dataset, plan.config.data_dir, plan.config.hub)
        if key not in loaded:
            loaded.add(key)
            prepare(plan)  # DataNotFoundError reaches the command line as a one-line error
    return plans


def check_outputs(args) -> None:
    """Every place the command writes must be usable before any run starts: the store (a damaged
    or foreign file, an unwritable place), ``--out`` and ``--leaderboards``; UsageError otherwise."""
    import tempfile

    from .errors import UsageError
    from .runner import DEFAULT_OUT_DIR
    from .store import ResultsStore

    ResultsStore(args.store).check_writable()  # StoreError (a UsageError) when it cannot be used
    folders = [("--out", args.out or DEFAULT_OUT_DIR)]
    if not args.no_leaderboard:
        folders.append(("--leaderboards", args.leaderboards or DEFAULT_LEADERBOARD_DIR))
    for option, folder in folders:
        try:
            os.makedirs(folder, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            raise UsageError(f"{option} {folder} cannot be written ({error.strerror or error}); "
                             "choose another folder") from None


def _finished(plans: list) -> dict[int, RunRecord]:
    """Index -> record of the configurations that already have a finished run."""
    from .runner import finished_record

    records = {index: finished_record(plan) for index, plan in enumerate(plans)}
    return {index: record for index, record in records.items() if record is not None}


# ------------------------------------------------------------------------------ reporting


def _progress_line(done: int, total: int, record: RunRecord) -> str:
    head = f"[{done}/{total}] {record.task} {record.spec or record.regularizer} seed {record.seed}"
    if record.status != "ok":
        return f"{head}: {record.status.upper()} ({record.reason})"
    test = f", test {record.test_metric:.4f}" if record.test_metric is not None else ""
    rate = f", {record.throughput:,.0f} {record.throughput_unit}" if record.throughput else ""
    return (f"{head}: {record.metric} {record.best_val_metric:.4f} (valid){test} "
            f"in {record.wall_time_s or 0:.1f} s{rate}")


def _print_summary(records: list[RunRecord]) -> None:
    """Per setting: each regularizer's test mean ± std over seeds and whether it beat ``none``
    significantly (Welch's t-test, Holm-corrected over the setting's comparisons; benchmark.boards.significance)."""
    from .boards.tables import missing
    from .leaderboard import BASELINE, build_boards, load_records
    from .store import records_frame

    if not any(r.status == "ok" for r in records):
        return
    print("\nSummary (mean ± std over seeds; lower is better; vs none: difference, Welch p Holm-adjusted):")
    for board in build_boards(load_records(records_frame(records))):
        metric = board.metric
        print(f"  {board.track or board.task} ({metric}, ranked on {board.rank_by})"
              + ("  [smoke scale: not a result]" if board.smoke else ""))
        split = board.rank_by
        for row in board.table.itertuples(index=False):
            if row.status != "ok":
                print(f"    {row.regularizer:<22} no finished run")
                continue
            std = getattr(row, f"{split}_std")
            spread = f" ± {std:.4f}" if std == std else ""
            significant = getattr(row, f"vs_{BASELINE}_significant")
            if missing(significant):  # no comparison on this row
                verdict = "(baseline)" if row.regularizer == BASELINE else "(no baseline to compare)"
            else:
                p = getattr(row, f"vs_{BASELINE}_p_holm")
                difference = getattr(row, f"vs_{BASELINE}_difference")
                p_text = "p –" if p != p else f"p {p:.3f}"
                outcome = ("beats none" if significant and difference < 0 else
                           "worse than none" if significant else "not significantly different from none")
                verdict = f"{difference:+.4f} ({p_text}): {outcome}"
            print(f"    {row.regularizer:<22} {split} {getattr(row, f'{split}_mean'):.4f}{spread}  "
                  f"({row.seeds} seeds)  {verdict}")


def _write_leaderboards(args) -> None:
    from .leaderboard import write_leaderboards
    from .store import default_store_path

    store = args.store or str(default_store_path())
    out_dir = args.leaderboards or DEFAULT_LEADERBOARD_DIR
    write_leaderboards(store, out_dir)
    print(f"Leaderboards written to {out_dir}/ (from the store {store})")


# ------------------------------------------------------------------------------ command


def run(args: argparse.Namespace) -> int:
    if getattr(args, "from_study", None):
        from .study import run_from_study

        return run_from_study(args)
    from .errors import UsageError
    from .suite import run_all

    configs = build_configs(args)
    cores = os.cpu_count() or 1
    workers = args.workers if args.workers is not None else (2 if len(configs) > 1 and cores >= 2 else 1)
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    plans = validate(configs, require_checkpoint=bool(args.resume))
    check_outputs(args)
    done = {} if args.rerun else _finished(plans)
    if done:
        print(f"regbench run: {len(done)} of {len(configs)} run(s) already finished, reusing their records "
              "(--rerun runs them again)", flush=True)
    to_run = [config for index, config in enumerate(configs) if index not in done]

    where = sorted({c.track or c.task for c in configs})
    setting = "" if configs[0].track else f", preset {configs[0].preset}, scale {configs[0].scale}"
    print(f"regbench run: {len(to_run)} run(s): {', '.join(where)} x {len({c.regularizer for c in configs})} "
          f"regularizer(s) x {len({c.seed for c in configs})} seed(s){setting}, {workers} worker(s)", flush=True)
    started = time.perf_counter()
    records = run_all(to_run, workers=workers, threads=args.threads, skip_finished=not args.rerun,
                      on_result=lambda n, total, record: print(_progress_line(n, total, record), flush=True))
    elapsed = time.perf_counter() - started
    _print_summary(list(done.values()) + records)
    print(f"\n{len(records)} run(s) in {elapsed:.0f} s", flush=True)
    if not args.no_leaderboard:
        _write_leaderboards(args)
    failed = [r for r in records if r.status == "failed"]
    if failed:
        log.error("%d run(s) failed; see the reasons above", len(failed))
    return 1 if failed else 0
