"""Leaderboards from the results store, one concern per module.

* ``load``: records -> DataFrame, one column per field of ``RunRecord``;
* ``tables``: boards as data, a DataFrame per board (selection on validation, test summaries,
  comparisons, ranks);
* ``cross_task``: the mean rank of each regularizer across tasks;
* ``render``: the markdown of each board and of the index;
* ``plots``: the figures;
* ``write``: every file of a store's boards (``write_leaderboards``);
* ``shipped``: a track's board with the committed baselines (``write_track_board``);
* ``significance``: intervals, Welch's t-test, Holm's correction;
* ``findings``: which of the paper's claims a board supports;
* ``command``: ``regbench leaderboard``.
"""

from .command import HELP, add_arguments, run
from .cross_task import cross_task, ranking_boards
from .load import load_records
from .shipped import SHIPPED_STORE, track_records, write_track_board
from .tables import BASELINE, REFERENCE, Board, best_configuration, build_boards, configurations, summarize
from .write import DEFAULT_OUT, export_results, write_leaderboards

__all__ = ["BASELINE", "REFERENCE", "DEFAULT_OUT", "SHIPPED_STORE", "HELP", "Board", "load_records", "summarize",
           "configurations", "best_configuration", "build_boards", "ranking_boards", "cross_task",
           "write_leaderboards", "export_results", "track_records", "write_track_board", "add_arguments", "run"]
