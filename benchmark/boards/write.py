"""Writing a store's boards: one markdown file per board, the index, ``leaderboard.json`` and the plots.

The same store always gives byte-identical files: everything is sorted and no timestamps are written.
In ``leaderboard.json`` a board's table is a list of rows, each comparison one nested object
(``vs_none``: difference, p, p_holm, significant; null where there is none), an unfinished row
with only the entry columns, and no validation curves (the plots show them).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from .cross_task import cross_task
from .load import load_records
from .plots import plot_curves, plot_zoneout_grid
from .render import board_markdown, index_markdown, reproduce_commands
from .tables import BASELINE, COMPARISON_PARTS, ENTRY_COLUMNS, OK, REFERENCE, Board, build_boards, missing

__all__ = ["DEFAULT_OUT", "write_leaderboards", "export_results"]

DEFAULT_OUT = os.path.join("regbench_runs", "leaderboards")  # never the committed leaderboards/ unless asked


def _jsonable(value):
    """JSON-ready copy: numpy scalars as Python ones, NaN and infinities as None, floats to 10 decimals."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value) or math.isinf(value):
            return None
        return round(value, 10)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def _json_rows(board: Board) -> list[dict]:
    """The board's table as the rows of ``leaderboard.json`` (see the module docstring)."""
    rows = []
    for row in board.table.to_dict("records"):
        if row["status"] != OK:
            rows.append({name: row[name] for name in ENTRY_COLUMNS})
            continue
        for other in (BASELINE, REFERENCE):
            comparison = {part: row.pop(f"vs_{other}_{part}") for part in COMPARISON_PARTS}
            row[f"vs_{other}"] = None if missing(comparison["significant"]) else comparison
        del row["val_curves"]
        rows.append(row)
    return rows


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", newline="\n")


def export_results(store, path: str | os.PathLike) -> Path:
    """Write every record of ``store`` (a ``ResultsStore`` or the path of a store or export) to a
    JSON file, sorted and stable: the form committed with the leaderboards."""
    from ..store import export_json, read_records

    return export_json(store.records() if hasattr(store, "records") else read_records(store), path)


def write_leaderboards(store, out_dir: str | os.PathLike = "leaderboards", *, store_label: str | None = None,
                       out_label: str | None = None, plots: bool = True) -> list[Path]:
    """Write the leaderboard files for every task in ``store`` into ``out_dir``; return their paths (sorted).

    ``store`` is a ``ResultsStore``, its path, or a JSON export. ``store_label`` is how the store is
    named in the reproduce commands (default: the path given, or ``regbench_runs/results.sqlite``),
    ``out_label`` how ``out_dir`` is (default: ``out_dir`` as given).
    Files of boards no longer in the store are left alone; files are rewritten only in full.
    """
    frame = load_records(store)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if store_label is None:
        store_label = str(store) if isinstance(store, (str, os.PathLike)) else "regbench_runs/results.sqlite"
    out_label = str(out_dir) if out_label is None else out_label
    boards = build_boards(frame) if len(frame) else []
    written: list[Path] = []
    json_boards = []
    for board in boards:
        plot_names = []
        if plots:
            curves = out / f"{board.key}_curves.png"
            if plot_curves(board, curves):
                plot_names.append(curves.name)
                written.append(curves)
            grid = out / f"{board.key}_zoneout_grid.png"
            if plot_zoneout_grid(board, grid):
                plot_names.append(grid.name)
                written.append(grid)
        path = out / f"{board.key}.md"
        _write(path, board_markdown(board, store_label, out_label, plot_names))
        written.append(path)
        json_boards.append({
            "board": board.key, "task": board.task, "preset": board.preset, "scale": board.scale,
            "data_checksum": board.data_checksum, "metric": board.metric, "rank_by": board.rank_by,
            "datasets": sorted(set(d for d in board.records["dataset"] if d)),
            "data_sources": sorted(set(d for d in board.records["data_source"] if d)),
            "records": int(len(board.records)),
            "rows": _json_rows(board),
            "reproduce": reproduce_commands(board, store_label, out_label),
        })
    summary = cross_task(boards)
    index = out / "README.md"
    _write(index, index_markdown(boards, summary, store_label, out_label))
    written.append(index)
    data = out / "leaderboard.json"
    _write(data, json.dumps(_jsonable({"boards": json_boards, "cross_task": summary}), indent=1,
                            sort_keys=True, ensure_ascii=False) + "\n")
    written.append(data)
    return sorted(written)
