"""``regbench leaderboard``: its options and what it does with them."""

from __future__ import annotations

from pathlib import Path

from .shipped import write_track_board
from .write import DEFAULT_OUT, export_results, write_leaderboards

__all__ = ["HELP", "add_arguments", "run"]

HELP = "write the leaderboards (markdown, JSON, plots) from the results store"


def add_arguments(parser) -> None:
    """Arguments of ``regbench leaderboard`` (declared in benchmark.cli.arguments)."""
    from ..cli.arguments import leaderboard_arguments

    leaderboard_arguments(parser, DEFAULT_OUT)


def run(args) -> int:
    import sys

    if args.store is None:
        from ..store import default_store_path

        store = str(default_store_path())
    else:
        store = args.store
    if not Path(store).exists():
        print(f"regbench leaderboard: error: results store {store} does not exist (run `regbench run` or "
              "`regbench study` first, or pass --store)", file=sys.stderr)
        return 2
    try:
        if args.export:
            print(export_results(store, args.export))
        if args.track:
            from ..tracks import get_track

            get_track(args.track)  # an unknown name lists the valid ones
            paths = [write_track_board(args.track, store, args.out, plots=not args.no_plots)]
        else:
            paths = write_leaderboards(store, args.out, plots=not args.no_plots)
    except (ValueError, OSError) as error:
        print(f"regbench leaderboard: error: {type(error).__name__}: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0
