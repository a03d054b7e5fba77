"""Boards as data: records grouped into boards, each regularizer's best configuration selected on
validation, its test summary, the comparisons with ``none`` and ``zoneout`` (Welch's t-test,
Holm-corrected over the board) and the ranks.

A *board* is one task at one setting (track, preset, scale, data checksum). Records with a
``trial`` number are tuning trials; the others are final runs. A regularizer's best configuration
is the one with the lowest mean validation metric over its finished final seeds (its tuning trials
when it has no final run: ``tuning only``). Rows are ranked by mean test metric (validation when a
board lacks test figures); lower is better.

A board's ``table`` is a DataFrame with one row per regularizer: the finished ones in rank order,
then those without a finished run. Its columns are flat (``COLUMNS``): every row has the
``ENTRY_COLUMNS``; the others (statistics, raw values and curves as lists, ``rank``) are missing
(NaN, <NA>) on an unfinished row. A comparison is four columns, ``vs_none_difference``,
``vs_none_p``, ``vs_none_p_holm`` and ``vs_none_significant`` (and the same for ``vs_zoneout``),
missing where the row has nothing to compare with. :func:`missing` tells a missing cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd

from .. import reference_numbers
from .significance import ALPHA, holm, interval, welch
from .load import first, text

__all__ = ["BASELINE", "REFERENCE", "OK", "COLUMNS", "ENTRY_COLUMNS", "COMPARISON_PARTS", "Board", "missing",
           "summarize", "configurations", "best_configuration", "build_boards", "slug"]

BASELINE = "none"
REFERENCE = "zoneout"  # the second comparison of every row: "does it beat zoneout?"
OK = "ok"
UNFINISHED = "no finished run"
COMPARISON_PARTS = ("difference", "p", "p_holm", "significant")

# Every row, finished or not, has these: what the regularizer ran and what became of it.
ENTRY_COLUMNS = ("regularizer", "shipped", "tuning_trials", "tuning_trials_ok", "studies", "source", "failures",
                 "spec", "seeds", "seeds_failed", "status", "reasons")

_SUMMARY = ("mean", "std", "ci_low", "ci_high")
# The columns of a board's table and their dtypes. Integers that can be missing are nullable
# ("Int64") so that a count stays a count; lists and dicts are objects.
COLUMNS: dict[str, object] = {
    "rank": "Int64",
    "regularizer": "str", "spec": "str", "source": "str", "status": "str", "shipped": "bool",
    "seeds": "int64", "seeds_failed": "int64", "tuning_trials": "int64", "tuning_trials_ok": "int64",
    **{f"valid_{part}": "float64" for part in _SUMMARY},
    "test_n": "Int64", **{f"test_{part}": "float64" for part in _SUMMARY},
    "valid_vs_none": "float64", "test_vs_none": "float64",
    **{f"vs_{other}_{part}": "boolean" if part == "significant" else "float64"
       for other in (BASELINE, REFERENCE) for part in COMPARISON_PARTS},
    "paper_valid": "float64", "paper_test": "float64",
    "wall_time_s": "float64", "throughput": "float64", "throughput_unit": "str",
    "epochs": "Int64", "hidden_size": "Int64", "cell": "str", "metric": "str",
    "hyperparameters": object, "studies": object, "failures": object, "reasons": object, "seed_list": object,
    "commits": object, "valid_values": object, "test_values": object, "best_epochs": object,
    "val_curves": object, "train_loss_curves": object, "val_nll_curves": object,
}


def missing(value) -> bool:
    """A cell with no value (None, NaN, <NA>); a list or a dict is a value, even an empty one."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def summarize(values: Iterable[float], metric: str = "") -> dict[str, float]:
    """n, mean, sample std (ddof=1) and the 95 % interval of the mean (within the metric's range)."""
    data = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(data)
    mean = float(np.mean(data)) if n else float("nan")
    std = float(np.std(data, ddof=1)) if n >= 2 else float("nan")
    low, high = interval(data, metric)
    return {"n": n, "mean": mean, "std": std, "ci_low": low, "ci_high": high}


@dataclass
class Board:
    """One board: its setting, its records and its table (one row per regularizer, ranked ones
    first in rank order)."""

    key: str  # file-name stem: "<track>" ("digits-cpu-v1"), "<task>" or "<task>-<preset>-<scale>-..."
    task: str
    track: str  # "" for runs outside every track (ad-hoc presets and scales)
    preset: str
    scale: str
    data_checksum: str
    records: pd.DataFrame
    table: pd.DataFrame
    rank_by: str  # "test" | "valid"

    @property
    def metric(self) -> str:
        metrics = sorted(set(self.records["metric"]) - {""})
        return ", ".join(metrics) if metrics else "metric"

    @property
    def smoke(self) -> bool:
        """Smoke scale (a smoke track, or the tiny scale outside tracks): for tests, never a result."""
        if self.track:
            from ..tracks import TRACKS

            known = TRACKS.get(self.track)
            return known.smoke if known is not None else self.track.endswith("/smoke")
        return self.scale == "tiny"

    @property
    def finished(self) -> pd.DataFrame:
        """The rows of the regularizers with a finished run, in rank order."""
        return self.table[self.table["status"] == OK]

    @property
    def ranked(self) -> pd.DataFrame:
        """The rows with a rank (none on a board of a single finished entrant)."""
        return self.table[self.table["rank"].notna()]


def slug(name: str) -> str:
    """A file-name stem: letters, digits, dots and underscores, other runs of characters as one dash."""
    keep = "".join(c if c.isalnum() or c in "._" else "-" for c in name)
    return "-".join(part for part in keep.split("-") if part) or "x"


def build_boards(frame: pd.DataFrame) -> list[Board]:
    """Group records into boards (task x setting) and compute their tables."""
    boards = []
    setting = ["track", "preset", "scale", "data_checksum"]
    for task, task_frame in frame.groupby("task", sort=True):
        by_setting = task_frame.groupby(setting, sort=True)
        settings = list(by_setting.groups)
        ad_hoc = [key for key in settings if not key[0]]
        for (track, preset, scale, checksum), records in by_setting:
            if track:
                same_track = [key for key in settings if key[0] == track]
                key = slug(track.replace("/", "-") + ("" if len(same_track) == 1 else f"-{checksum[:8]}"))
            elif len(ad_hoc) == 1:
                key = slug(task)
            else:
                key = slug("-".join([task, preset or "preset", f"scale{scale}" if scale else "scale", checksum[:8]]))
            table, rank_by = _board_table(task, records)
            boards.append(Board(key, task, track, preset, scale, checksum, records, table, rank_by))
    return boards


def configurations(records: pd.DataFrame) -> pd.DataFrame:
    """Selection on validation: one row per configuration (spec) of ``records``, with the n, mean,
    std and interval of its finished runs' best validation metric, sorted by spec."""
    metric = first(records["metric"]) or ""
    finished = records["best_val_metric"].where(records["status"] == OK)  # an unfinished run counts as no value
    rows = [{"spec": spec, **summarize(values, metric)} for spec, values in finished.groupby(records["spec"])]
    return pd.DataFrame(rows, columns=["spec", "n", "mean", "std", "ci_low", "ci_high"])


def best_configuration(records: pd.DataFrame) -> str | None:
    """The spec with the lowest mean validation metric among those with the most finished seeds:
    a one-seed configuration must not win on a lucky seed over a five-seed one."""
    found = configurations(records)
    found = found[found["n"] >= 1]
    if found.empty:
        return None
    found = found[found["n"] == found["n"].max()]
    return str(found.sort_values(["mean", "spec"], kind="stable")["spec"].iloc[0])


def _board_table(task: str, records: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The table of one board (see the module docstring) and the split it ranks by."""
    entrants = _entrants(records)
    choices = _choices(records)
    chosen = choices[choices["spec"].notna()].reset_index()[["regularizer", "spec", "tuning"]]
    results = _results(task, records.merge(chosen, on=["regularizer", "spec", "tuning"]))
    rank_by = "test" if len(results) and bool((results["test_n"] > 0).all()) else "valid"
    for split in ("valid", "test"):
        baseline = results[f"{split}_mean"].get(BASELINE, math.nan)
        results[f"{split}_vs_none"] = results[f"{split}_mean"] - baseline
    results = _ranked(results.join(_comparisons(results, rank_by)), rank_by)
    finished = results.join(entrants).join(choices[["spec", "source"]]).assign(status=OK)
    unfinished = entrants.loc[~entrants.index.isin(results.index)].join(choices[["source"]])
    unfinished = unfinished.assign(spec="", seeds=0, seeds_failed=unfinished["runs"],
                                   reasons=unfinished["reasons_of_all_runs"], status=UNFINISHED)
    table = pd.concat([finished, unfinished]).reset_index()
    return table.astype(COLUMNS)[list(COLUMNS)], rank_by


def _distinct_text(values: pd.Series) -> list[str]:
    return sorted(set(values.dropna()) - {""})


def _entrants(records: pd.DataFrame) -> pd.DataFrame:
    """Per regularizer (the index), what it ran: whether it is a shipped baseline, its tuning trials
    (all and finished), studies and failed or diverged runs; its count of runs and their reasons
    (what an unfinished row shows)."""
    tuning = records["tuning"]
    failed = records["status"].isin(["failed", "diverged"])
    failures = [f"{status} ({'tuning trial' if trial else 'run'}): {reason or 'no reason given'}" if bad else None
                for status, reason, trial, bad in zip(records["status"], records["reason"], tuning, failed)]
    described = records.assign(
        shipped=records["shipped"] if "shipped" in records else False,
        tuning_ok=tuning & (records["status"] == OK),
        tuning_study=records["study"].where(tuning),
        failure=pd.Series(failures, index=records.index, dtype=object))
    return described.groupby("regularizer").agg(
        shipped=("shipped", "all"), tuning_trials=("tuning", "sum"), tuning_trials_ok=("tuning_ok", "sum"),
        studies=("tuning_study", _distinct_text), failures=("failure", lambda s: sorted(s.dropna())),
        runs=("status", "size"), reasons_of_all_runs=("reason", _distinct_text))


def _choices(records: pd.DataFrame) -> pd.DataFrame:
    """Per regularizer (the index), its best configuration (``spec``, None where nothing finished),
    whether it comes from the tuning trials (no final run finished) and the ``source`` so named."""
    rows = []
    for regularizer, mine in records.groupby("regularizer"):
        best, tuning = best_configuration(mine[~mine["tuning"]]), False
        if best is None:
            best, tuning = best_configuration(mine[mine["tuning"]]), True
        rows.append({"regularizer": regularizer, "spec": best, "tuning": tuning,
                     "source": "tuning only" if tuning else "final"})
    return pd.DataFrame(rows).set_index("regularizer")


def _summaries(runs: pd.DataFrame, column: str, prefix: str) -> pd.DataFrame:
    """``summarize`` of ``column`` per regularizer (the index), its columns named ``<prefix>_n``, ..."""
    rows = {regularizer: summarize(group[column], first(group["metric"]) or "")
            for regularizer, group in runs.groupby("regularizer")}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["n", *_SUMMARY]).add_prefix(f"{prefix}_")


def _results(task: str, runs: pd.DataFrame) -> pd.DataFrame:
    """Per regularizer with a finished run (the index), the statistics of its best configuration
    (``runs``: every run of it): the summaries on valid and test, the values and curves of its
    finished seeds (in seed order), costs, settings and the paper's figures."""
    ok = runs[runs["status"] == OK]
    by_seed = ok.assign(_seed=ok["seed"].fillna(-1)).sort_values("_seed", kind="stable")
    results = runs.groupby("regularizer").agg(
        hyperparameters=("hyperparameters", lambda h: h.iloc[0]),
        seeds_failed=("status", lambda s: int((s != OK).sum())),
        reasons=("reason", _distinct_text))
    values = by_seed.groupby("regularizer").agg(
        seed_list=("seed", lambda s: sorted(s.dropna())),
        wall_time_s=("wall_time_s", _mean), throughput=("throughput", _mean),
        throughput_unit=("throughput_unit", first), epochs=("epochs", first),
        hidden_size=("settings", lambda s: first(v.get("hidden_size") for v in s if isinstance(v, dict))),
        cell=("cell", first), metric=("metric", first),
        commits=("git_commit", lambda c: sorted({str(v)[:12] for v in c if text(v)})),
        val_curves=("val_curve", list),
        valid_values=("best_val_metric", lambda v: [float(x) for x in v]),
        test_values=("test_metric", lambda v: [float(x) for x in v]),
        best_epochs=("best_epoch", list), train_loss_curves=("train_loss_curve", list),
        val_nll_curves=("val_nll_curve", list))
    # Validation in the store's order and test in seed order, as they were always summed.
    valid = _summaries(ok, "best_val_metric", "valid").rename(columns={"valid_n": "seeds"})
    test = _summaries(by_seed, "test_metric", "test")
    results = results.join([valid, test, values], how="inner")
    published = [reference_numbers.published(task, regularizer) for regularizer in results.index]
    results["paper_valid"] = [None if figures is None else figures[0] for figures in published]
    results["paper_test"] = [None if figures is None else figures[1] for figures in published]
    return results.rename_axis("regularizer")


def _ranked(results: pd.DataFrame, split: str) -> pd.DataFrame:
    """``results`` in rank order (mean on ``split``, then mean validation metric, then name) with
    their ``rank``; equal means to 12 decimals share the better rank."""
    order = results.sort_values([f"{split}_mean", "valid_mean", "regularizer"])
    scores = order[f"{split}_mean"].map(lambda score: round(score, 12))
    # A board with one entrant ranks nothing: first of one is no result.
    ranks = scores.rank(method="min") if len(order) > 1 else pd.Series(math.nan, index=order.index)
    return order.assign(rank=ranks)


def _comparisons(results: pd.DataFrame, split: str) -> pd.DataFrame:
    """Each row against the baseline and against zoneout on ``split``: the difference of means,
    Welch's p and Holm's adjustment over every distinct comparison of the board, as the
    ``vs_<other>_<part>`` columns. ``none`` vs ``zoneout`` appears on both rows but is one test
    of the family."""
    values = results[f"{split}_values"]
    tests: dict[frozenset, tuple[str, float, float]] = {}  # pair -> (the row that ran it, difference, p)
    rows = []
    for regularizer in results.index:
        for other in (BASELINE, REFERENCE):
            if other == regularizer or other not in values.index:
                continue
            pair = frozenset((regularizer, other))
            if pair not in tests:
                tests[pair] = (regularizer, *welch(values[regularizer], values[other]))
            side, difference, p = tests[pair]
            rows.append({"regularizer": regularizer, "other": other, "pair": pair,
                         "difference": difference if side == regularizer else -difference, "p": p})
    adjusted = dict(zip(tests, holm([p for _, _, p in tests.values()])))
    names = [f"vs_{other}_{part}" for other in (BASELINE, REFERENCE) for part in COMPARISON_PARTS]
    if not rows:
        return pd.DataFrame(index=results.index, columns=names)
    long = pd.DataFrame(rows)
    long["p_holm"] = [adjusted[pair] for pair in long["pair"]]
    long["significant"] = long["p_holm"] < ALPHA  # a NaN p is never significant
    wide = long.pivot(index="regularizer", columns="other", values=list(COMPARISON_PARTS))
    wide.columns = [f"vs_{other}_{part}" for part, other in wide.columns]
    return wide.reindex(index=results.index, columns=names)


def _mean(series) -> float:
    values = [float(v) for v in series if v is not None and not math.isnan(float(v))]
    return float(np.mean(values)) if values else float("nan")
