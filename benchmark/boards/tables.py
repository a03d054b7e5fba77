"""Boards as data: records grouped into boards, each regularizer's best configuration selected on
validation, its test summary, the comparisons with ``none`` and ``zoneout`` (Welch's t-test,
Holm-corrected over the board) and the ranks.

A *board* is one task at one setting (track, preset, scale, data checksum). Records with a
``trial`` number are tuning trials; the others are final runs. A regularizer's best configuration
is the one with the lowest mean validation metric over its finished final seeds (its tuning trials
when it has no final run: ``tuning only``). Rows are ranked by mean test metric (validation when a
board lacks test figures); lower is better. :func:`table` gives a board's rows as a DataFrame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

from .. import reference_numbers
from .significance import ALPHA, holm, interval, welch
from .load import first, text

__all__ = ["BASELINE", "REFERENCE", "OK", "Board", "summarize", "configurations", "best_configuration",
           "build_boards", "table", "slug"]

BASELINE = "none"
REFERENCE = "zoneout"  # the second comparison of every row: "does it beat zoneout?"
OK = "ok"


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
    """One board: its setting, its records and its rows (one dict per regularizer, ranked ones first
    in rank order; :func:`table` gives them as a DataFrame)."""

    key: str  # file-name stem: "<track>" ("digits-cpu-v1"), "<task>" or "<task>-<preset>-<scale>-..."
    task: str
    track: str  # "" for runs outside every track (ad-hoc presets and scales)
    preset: str
    scale: str
    data_checksum: str
    records: pd.DataFrame
    rows: list[dict]
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
    def ranked_rows(self) -> list[dict]:
        return [row for row in self.rows if row.get("rank") is not None]


def _setting_key(row) -> tuple[str, str, str, str]:
    return (row["track"], row["preset"], row["scale"], row["data_checksum"])


def slug(name: str) -> str:
    """A file-name stem: letters, digits, dots and underscores, other runs of characters as one dash."""
    keep = "".join(c if c.isalnum() or c in "._" else "-" for c in name)
    return "-".join(part for part in keep.split("-") if part) or "x"


def build_boards(frame: pd.DataFrame) -> list[Board]:
    """Group records into boards (task x setting) and compute their rows."""
    boards = []
    for task in sorted(set(frame["task"])):
        task_frame = frame[frame["task"] == task]
        settings = sorted({_setting_key(r) for _, r in task_frame.iterrows()})
        ad_hoc = [key for key in settings if not key[0]]
        for track, preset, scale, checksum in settings:
            mask = ((task_frame["track"] == track) & (task_frame["preset"] == preset)
                    & (task_frame["scale"] == scale) & (task_frame["data_checksum"] == checksum))
            records = task_frame[mask]
            if track:
                same_track = [key for key in settings if key[0] == track]
                key = slug(track.replace("/", "-") + ("" if len(same_track) == 1 else f"-{checksum[:8]}"))
            elif len(ad_hoc) == 1:
                key = slug(task)
            else:
                key = slug("-".join([task, preset or "preset", f"scale{scale}" if scale else "scale", checksum[:8]]))
            rows, rank_by = _board_rows(task, records)
            boards.append(Board(key, task, track, preset, scale, checksum, records, rows, rank_by))
    return boards


def configurations(records: pd.DataFrame) -> pd.DataFrame:
    """Selection on validation: one row per configuration (spec) of ``records``, with the n, mean,
    std and interval of its finished runs' best validation metric, sorted by spec."""
    metric = first(records["metric"]) or ""
    rows = [{"spec": spec, **summarize(records.loc[(records["spec"] == spec) & (records["status"] == OK),
                                                    "best_val_metric"], metric)}
            for spec in sorted(set(records["spec"]))]
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


def _board_rows(task: str, records: pd.DataFrame) -> tuple[list[dict], str]:
    """A row per regularizer of one board (its best configuration's statistics, comparisons and
    rank), and the split the board ranks by."""
    rows = []
    for regularizer in sorted(set(records["regularizer"])):
        mine = records[records["regularizer"] == regularizer]
        tuning = mine[mine["tuning"]]
        final = mine[~mine["tuning"]]
        source = "final"
        best = best_configuration(final)
        if best is None:
            best = best_configuration(tuning)
            source = "tuning only"
        row: dict[str, Any] = {
            "regularizer": regularizer,
            "shipped": bool(len(mine)) and bool(mine["shipped"].all()) if "shipped" in mine else False,
            "tuning_trials": int(len(tuning)),
            "tuning_trials_ok": int((tuning["status"] == OK).sum()),
            "studies": sorted(set(s for s in tuning["study"] if s)),
            "source": source,
        }
        problems = mine[mine["status"].isin(["failed", "diverged"])]
        row["failures"] = sorted(f"{status} ({'tuning trial' if tuning_ else 'run'}): {reason or 'no reason given'}"
                                 for status, reason, tuning_ in zip(problems["status"], problems["reason"],
                                                                    problems["tuning"]))
        if best is None:
            failures = sorted(set(r for r in mine["reason"] if r))
            row.update({"spec": "", "seeds": 0, "seeds_failed": int(len(mine)),
                        "status": "no finished run", "reasons": failures})
            rows.append(row)
            continue
        chosen = final if source == "final" else tuning
        runs = chosen[chosen["spec"] == best]
        ok = runs[runs["status"] == OK]
        valid = summarize(ok["best_val_metric"], first(chosen["metric"]) or "")
        ok = ok.sort_values("seed", key=lambda s: s.fillna(-1))
        test = summarize(ok["test_metric"], first(ok["metric"]) or "")
        seeds = sorted(s for s in ok["seed"] if s is not None)
        published = reference_numbers.published(task, regularizer)
        row.update({
            "spec": best,
            "hyperparameters": runs["hyperparameters"].iloc[0],
            "seeds": valid["n"],
            "seed_list": seeds,
            "seeds_failed": int(len(runs) - len(ok)),
            "reasons": sorted(set(r for r in runs["reason"] if r)),
            "valid_mean": valid["mean"], "valid_std": valid["std"],
            "valid_ci_low": valid["ci_low"], "valid_ci_high": valid["ci_high"],
            "test_n": test["n"], "test_mean": test["mean"], "test_std": test["std"],
            "test_ci_low": test["ci_low"], "test_ci_high": test["ci_high"],
            "wall_time_s": _mean(ok["wall_time_s"]),
            "throughput": _mean(ok["throughput"]),
            "throughput_unit": first(ok["throughput_unit"]),
            "epochs": first(ok["epochs"]),
            "hidden_size": first(s.get("hidden_size") for s in ok["settings"] if isinstance(s, dict)),
            "cell": first(ok["cell"]),
            "metric": first(ok["metric"]),
            "paper_valid": None if published is None else published[0],
            "paper_test": None if published is None else published[1],
            "commits": sorted({str(c)[:12] for c in ok["git_commit"] if text(c)}),
            "val_curves": list(ok["val_curve"]),
            "valid_values": [float(v) for v in ok["best_val_metric"]],
            "test_values": [float(v) for v in ok["test_metric"]],
            "best_epochs": list(ok["best_epoch"]),
            "train_loss_curves": list(ok["train_loss_curve"]),
            "val_nll_curves": list(ok["val_nll_curve"]),
            "status": OK,
        })
        rows.append(row)

    finished = [r for r in rows if r.get("status") == OK]
    rank_by = "test" if finished and all(r["test_n"] > 0 for r in finished) else "valid"
    baseline = next((r for r in finished if r["regularizer"] == BASELINE), None)
    for row in finished:
        for split in ("valid", "test"):
            row[f"{split}_vs_none"] = (row[f"{split}_mean"] - baseline[f"{split}_mean"]
                                       if baseline is not None else float("nan"))
    _compare(finished, rank_by)
    order = sorted(finished, key=lambda r: (r[f"{rank_by}_mean"], r["valid_mean"], r["regularizer"]))
    previous, rank = None, 0
    for position, row in enumerate(order, start=1):
        score = round(row[f"{rank_by}_mean"], 12)
        if score != previous:
            rank, previous = position, score
        # A board with one entrant ranks nothing: first of one is no result.
        row["rank"] = rank if len(order) > 1 else None
    unfinished = [r for r in rows if r.get("status") != OK]
    return order + unfinished, rank_by


def _compare(finished: list[dict], split: str) -> None:
    """Each row against the baseline and against zoneout on ``split``: the difference of means,
    Welch's p and Holm's adjustment over every distinct comparison of the board (``row["vs_none"]``,
    ...). ``none`` vs ``zoneout`` appears on both rows but is one test of the family."""
    by_name = {row["regularizer"]: row for row in finished}
    tests: dict[frozenset, dict] = {}
    mirrors: list[tuple[dict, dict]] = []  # (a row's comparison, the same test seen from the other row)
    for row in finished:
        for other in (BASELINE, REFERENCE):
            key = f"vs_{other}"
            if other == row["regularizer"] or other not in by_name:
                row[key] = None
                continue
            pair = frozenset((row["regularizer"], other))
            if pair in tests:
                seen = tests[pair]
                row[key] = {"difference": -seen["difference"], "p": seen["p"]}
                mirrors.append((row[key], seen))
                continue
            difference, p = welch(row[f"{split}_values"], by_name[other][f"{split}_values"])
            row[key] = tests[pair] = {"difference": difference, "p": p}
    family = list(tests.values())
    for comparison, adjusted in zip(family, holm([t["p"] for t in family])):
        comparison["p_holm"] = adjusted
        comparison["significant"] = bool(adjusted == adjusted and adjusted < ALPHA)
    for mirror, seen in mirrors:
        mirror.update(p_holm=seen["p_holm"], significant=seen["significant"])


def _mean(series) -> float:
    values = [float(v) for v in series if v is not None and not math.isnan(float(v))]
    return float(np.mean(values)) if values else float("nan")


_TABLE = ["rank", "regularizer", "spec", "source", "shipped", "seeds", "seeds_failed", "tuning_trials",
          "tuning_trials_ok", "valid_mean", "valid_std", "valid_ci_low", "valid_ci_high", "test_n", "test_mean",
          "test_std", "test_ci_low", "test_ci_high", "valid_vs_none", "test_vs_none"]


def table(board: Board) -> pd.DataFrame:
    """The board's rows as a DataFrame in rank order (unfinished regularizers last), one column per
    number, the comparisons flattened: ``vs_none_difference``, ``vs_none_p``, ``vs_none_p_holm``,
    ``vs_none_significant`` (and the same for ``vs_zoneout``)."""
    records = []
    for row in board.rows:
        record = {name: row.get(name) for name in _TABLE}
        for other in (BASELINE, REFERENCE):
            comparison = row.get(f"vs_{other}") or {}
            for part in ("difference", "p", "p_holm", "significant"):
                record[f"vs_{other}_{part}"] = comparison.get(part)
        records.append(record)
    return pd.DataFrame(records, columns=_TABLE + [f"vs_{o}_{p}" for o in (BASELINE, REFERENCE)
                                                   for p in ("difference", "p", "p_holm", "significant")])
