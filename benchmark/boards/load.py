"""Records -> DataFrame: the store's runs under the fields of :class:`benchmark.records.RunRecord`.

One column per field, as :func:`benchmark.store.load_results` gives them, with missing values
made uniform (``""`` for absent text, ``None`` for absent integers, ``[]`` for absent curves),
a ``tuning`` column (the record is a study's tuning trial) and a fixed row order.
"""

from __future__ import annotations

import json
import math
from typing import Iterable

import numpy as np
import pandas as pd

from ..records import FIELDS, RunRecord

__all__ = ["load_records", "text", "first", "int_or_none", "curve"]

_TEXT = ("task", "regularizer", "spec", "preset", "dataset", "data_source", "data_checksum", "metric",
         "status", "reason", "throughput_unit", "cell", "track", "command", "git_commit", "run_dir", "created_at")
_NUMBERS = ("best_val_metric", "test_metric", "wall_time_s", "throughput")
_CURVES = ("val_curve", "train_loss_curve", "val_nll_curve")
_KEPT = ("shipped",)  # track_records: the row is one of the committed baselines
_DERIVED = ("tuning", *_KEPT)
# The row order: whatever order the store or export holds the runs in, sums and means then give
# the same floats to the last bit.
_ORDER = ("task", "regularizer", "spec", "study", "trial", "seed", "created_at", "run_dir", "status", "best_val_metric")


def load_records(store) -> pd.DataFrame:
    """All records of ``store`` as a DataFrame, one column per field of RunRecord.

    ``store`` is a ``ResultsStore`` (anything with ``.records()``), the path of a store's SQLite
    file or JSON export, or a DataFrame of records (columns named as the fields, missing ones
    unknown; any other column is a ValueError, except ``tuning``, recomputed, and ``shipped``, kept).
    """
    from ..store import load_results, records_frame

    if isinstance(store, pd.DataFrame):
        kept = [c for c in _KEPT if c in store.columns]
        records = [RunRecord.from_dict({k: _none_if_missing(v) for k, v in row.items() if k not in _DERIVED})
                   for row in store.to_dict("records")]
        others = store[kept].reset_index(drop=True)
        frame = pd.concat([records_frame(records), others], axis=1)
    elif hasattr(store, "records"):
        frame = records_frame(store.records())
    else:
        frame = load_results(store)
    for column in _NUMBERS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    for column in _TEXT:
        frame[column] = frame[column].map(text)
    frame["scale"] = frame["scale"].map(_scale_text)
    frame["hyperparameters"] = [dict(sorted(h.items())) if isinstance(h, dict) else {}
                                for h in frame["hyperparameters"]]
    frame["study"] = pd.Series([text(v) or None for v in frame["study"]], index=frame.index, dtype=object)
    for column in ("trial", "seed", "best_epoch", "epochs"):
        frame[column] = pd.Series([int_or_none(v) for v in frame[column]], index=frame.index, dtype=object)
    for column in _CURVES:
        frame[column] = frame[column].map(curve)
    frame["tuning"] = [v is not None for v in frame["trial"]]
    keys = [json.dumps([text(row[k]) for k in _ORDER]) for row in frame.to_dict("records")]
    frame = frame.assign(_order=keys).sort_values("_order", kind="stable").drop(columns="_order")
    return frame.reset_index(drop=True)


def _none_if_missing(value):
    return None if value is pd.NA or (isinstance(value, float) and math.isnan(value)) else value


def text(value) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _scale_text(value) -> str:
    if isinstance(value, float) and not math.isnan(value):
        return f"{value:g}"
    return text(value)


def int_or_none(value):
    try:
        return None if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)) \
            else int(value)
    except (TypeError, ValueError):
        return None


def curve(value) -> list[float]:
    """A stored curve as floats (``[]`` for none; an unreadable point is NaN)."""
    out = []
    for item in value if isinstance(value, (list, tuple)) else []:
        try:
            out.append(float(item))
        except (TypeError, ValueError):
            out.append(float("nan"))
    return out


def first(values: Iterable):
    """The smallest (as text) of the non-empty ``values``, as a plain Python value; None if none."""
    found = sorted({v for v in values if v is not None and text(v) != ""}, key=str)
    if not found:
        return None
    value = found[0]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value
