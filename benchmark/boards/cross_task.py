"""The cross-task ranking: the mean rank of each regularizer over one ranking board per task."""

from __future__ import annotations

import numpy as np

from .tables import OK, Board

__all__ = ["ranking_boards", "cross_task"]


def ranking_boards(boards: list[Board]) -> list[Board]:
    """The boards of the cross-task ranking: one per task, a track's, never a smoke one, with at
    least two ranked rows. Where a task has several such tracks, the one with the most ranked rows."""
    chosen: dict[str, Board] = {}
    for board in boards:
        if not board.track or board.smoke or len(board.ranked) < 2:
            continue
        current = chosen.get(board.task)
        if current is None or (len(board.ranked), board.key) > (len(current.ranked), current.key):
            chosen[board.task] = board
    return [chosen[task] for task in sorted(chosen)]


def cross_task(boards: list[Board]) -> list[dict]:
    """Mean rank per regularizer over the ranking boards (``ranking_boards``) where it was run; a
    regularizer with no finished run on a board (every run failed or diverged) counts as last there
    (finished rows + 1)."""
    ranks: dict[str, list[tuple[str, int, bool]]] = {}
    for board in ranking_boards(boards):
        finished = board.finished
        last = len(finished) + 1
        for regularizer, rank in zip(finished["regularizer"], finished["rank"]):
            ranks.setdefault(regularizer, []).append((board.key, int(rank), True))
        for regularizer in board.table.loc[board.table["status"] != OK, "regularizer"]:
            ranks.setdefault(regularizer, []).append((board.key, last, False))
    out = []
    for regularizer, items in ranks.items():
        values = [rank for _, rank, _ in items]
        out.append({"regularizer": regularizer, "mean_rank": float(np.mean(values)), "boards": len(values),
                    "ranks": {key: rank for key, rank, _ in sorted(items)},
                    "unfinished": sorted(key for key, _, ok in items if not ok)})
    out.sort(key=lambda r: (r["mean_rank"], -r["boards"], r["regularizer"]))
    return out
