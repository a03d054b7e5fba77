"""The shipped baselines of a track: a new regularizer's board beside the built-ins, without rerunning them."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .load import load_records
from .tables import slug
from .write import DEFAULT_OUT, write_leaderboards

__all__ = ["SHIPPED_STORE", "track_records", "write_track_board"]

# The committed store of the CPU tracks' runs: the baselines a new regularizer is compared with.
SHIPPED_STORE = Path(__file__).resolve().parents[2] / "leaderboards" / "results.json"


def track_records(track: str, store, shipped=None) -> pd.DataFrame:
    """The records of ``track`` in ``store``, plus, for every regularizer the store has none of on
    that track, the shipped ones (``shipped``: a store or JSON export, e.g. ``SHIPPED_STORE``),
    marked ``shipped``: a new regularizer's board beside the built-ins without rerunning them."""
    mine = load_records(store)
    mine = mine[mine["track"] == track].assign(shipped=False)
    if shipped is None or not Path(shipped).exists():
        return mine.reset_index(drop=True)
    theirs = load_records(shipped)
    theirs = theirs[(theirs["track"] == track) & ~theirs["regularizer"].isin(set(mine["regularizer"]))]
    return pd.concat([mine, theirs.assign(shipped=True)], ignore_index=True)


def write_track_board(track: str, store, out_dir=DEFAULT_OUT, shipped=SHIPPED_STORE, plots: bool = True) -> Path:
    """Write the board of ``track`` (with the shipped baselines) into ``out_dir``; return its markdown's path."""
    frame = track_records(track, store, shipped)
    if frame.empty:
        raise ValueError(f"no records of track {track} in {store}" + (f" or {shipped}" if shipped else ""))
    label = os.path.relpath(store) if not os.path.relpath(store).startswith("..") else os.path.basename(store)
    write_leaderboards(frame, out_dir, store_label=label, plots=plots)  # no folder of this machine on the board
    return Path(out_dir) / f"{slug(track.replace('/', '-'))}.md"
