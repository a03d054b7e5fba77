"""Leaderboards from the results store: markdown per task, an index, JSON and PNG plots.

``write_leaderboards(store, out_dir)`` reads every record of the store with pandas and writes

* ``<task>.md``: a row per regularizer at its best configuration, with mean ± std and a 95 %
  Student-t confidence interval over seeds, seeds and tuning trials counted, the difference
  from the unregularized baseline (``none``), the rank, the training cost and the paper's
  figure beside ours, plus which data, which scale and the commands that reproduce it;
* ``README.md``: the index, with a cross-task ranking (mean rank per regularizer);
* ``leaderboard.json``: the same rows, machine-readable;
* ``<board>_curves.png``: validation metric per epoch (mean over seeds, band = min..max);
* ``<board>_zoneout_grid.png``: z_cells x z_states map of zoneout runs (the paper's Figure 3)
  when the store has zoneout runs at at least two values of each.

Protocol
--------
A *board* is one task at one setting (preset, scale, data checksum): runs at different scales
are different experiments and never share a table. A *configuration* is a regularizer spec
(name and every hyperparameter). Records with a ``trial`` number are tuning trials of a study;
the others (plain runs and ``regbench run --from-study`` reruns) are final runs. For every
regularizer the best configuration is the one with the lowest mean validation metric over
its finished final seeds; a regularizer without final runs falls back to its tuning trials
(flagged ``tuning only``). Rows are ranked by mean test metric (validation when a board has
no test figures). Lower is better for every metric.

The same store always gives byte-identical files: everything is sorted, no timestamps are
written, PNG metadata is fixed.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from . import findings, reference_numbers
from .data import source_names
from .significance import ALPHA, CONFIDENCE, holm, interval, welch

__all__ = [
    "BASELINE", "REFERENCE", "load_records", "summarize", "build_boards",
    "write_leaderboards", "export_results", "add_arguments", "run",
]

HELP = "write the leaderboards (markdown, JSON, plots) from the results store"

DEFAULT_OUT = os.path.join("regbench_runs", "leaderboards")  # never the committed leaderboards/ unless asked
# The committed store of the CPU tracks' runs: the baselines a new regularizer is compared with.
SHIPPED_STORE = Path(__file__).resolve().parents[1] / "leaderboards" / "results.json"
BASELINE = "none"
REFERENCE = "zoneout"  # the second comparison of every row: "does it beat zoneout?"
OK = "ok"

# Columns a record may have; missing ones are filled so that older or partial stores still load.
_DEFAULTS: dict[str, Any] = {
    "task": "", "regularizer": "", "params": "{}", "spec": "", "cell": "", "seed": None, "preset": "",
    "scale": None, "dataset": "", "data_source": "", "data_checksum": "", "metric": "",
    "best_valid": np.nan, "test_at_best": np.nan, "epochs": None, "wall_time_s": np.nan,
    "throughput": np.nan, "throughput_unit": "", "curve": "[]", "status": "", "reason": "",
    "study": None, "trial": None, "versions": "", "git_commit": "", "run_dir": "", "created_at": "",
    "hidden_size": None, "command": "", "settings": None, "track": "", "train_loss_curve": None,
    "val_nll_curve": None,
}


# ----------------------------------------------------------------------------- loading


def load_records(store) -> pd.DataFrame:
    """All records of ``store`` as a DataFrame with every expected column.

    ``store`` is a ``ResultsStore`` (anything with ``.dataframe()``), a DataFrame, the path of a
    store's SQLite file, or the path of a JSON export (``export_results``).
    """
    if isinstance(store, pd.DataFrame):
        frame = store.copy()
    elif hasattr(store, "dataframe"):
        frame = store.dataframe()
    else:
        from .store import load_results

        frame = load_results(store)
    frame = frame.copy()
    # The store's column names (benchmark/store.py) and the short names used here.
    for short, long in _ALIASES.items():
        if long in frame.columns and (short not in frame.columns or frame[short].isna().all()):
            frame[short] = frame[long]
    if "settings" in frame.columns and "hidden_size" not in frame.columns:
        frame["hidden_size"] = [s.get("hidden_size") if isinstance(s, dict) else None for s in frame["settings"]]
    if "extra" in frame.columns:
        extras = [e if isinstance(e, dict) else (_json_dict(e)) for e in frame["extra"]]
        if "command" not in frame.columns:
            frame["command"] = [e.get("command", "") for e in extras]
        pruned = [bool(e.get("pruned")) for e in extras]
        if "status" in frame.columns:
            frame["status"] = ["pruned" if p else s for p, s in zip(pruned, frame["status"])]
    for column, default in _DEFAULTS.items():
        if column not in frame.columns:
            frame[column] = default
    for column in ("best_valid", "test_at_best", "wall_time_s", "throughput"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    for column in ("task", "regularizer", "spec", "preset", "dataset", "data_source", "data_checksum",
                   "metric", "status", "reason", "throughput_unit", "cell", "track"):
        frame[column] = frame[column].map(_text)
    frame["scale"] = frame["scale"].map(_scale_text)
    frame["params"] = frame["params"].map(_params_text)
    frame["spec"] = [s if s else _spec_of(r, p) for s, r, p in zip(frame["spec"], frame["regularizer"],
                                                                    frame["params"])]
    frame["study"] = pd.Series([_text(v) or None for v in frame["study"]], index=frame.index, dtype=object)
    frame["trial"] = pd.Series([_int_or_none(v) for v in frame["trial"]], index=frame.index, dtype=object)
    frame["seed"] = pd.Series([_int_or_none(v) for v in frame["seed"]], index=frame.index, dtype=object)
    frame["tuning"] = [v is not None for v in frame["trial"]]
    frame["curve_values"] = frame["curve"].map(_curve)
    # A fixed order whatever the store's row order (an export, a merge): sums and means then give
    # the same floats to the last bit.
    keys = [json.dumps([_text(row.get(k)) for k in ("task", "regularizer", "spec", "study", "trial", "seed",
                                                     "created_at", "run_dir", "status", "best_valid")])
            for row in frame.to_dict("records")]
    frame = frame.assign(_order=keys).sort_values("_order", kind="stable").drop(columns="_order")
    return frame.reset_index(drop=True)


_ALIASES = {"params": "hyperparameters", "best_valid": "best_val_metric", "test_at_best": "test_metric",
            "curve": "val_curve"}


def _json_dict(value) -> dict:
    try:
        loaded = json.loads(value) if isinstance(value, str) and value else {}
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _scale_text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _int_or_none(value):
    if value is None:
        return None
    try:
        if isinstance(value, float) and math.isnan(value):
            return None
        return int(value)
    except (TypeError, ValueError):
        return None


def _params_text(value) -> str:
    if isinstance(value, dict):
        params = value
    else:
        try:
            params = json.loads(value) if _text(value) else {}
        except (TypeError, ValueError):
            return _text(value)
    return json.dumps(params, sort_keys=True)


def _spec_of(regularizer: str, params: str) -> str:
    try:
        values = json.loads(params)
    except ValueError:
        values = {}
    if not values:
        return regularizer
    return regularizer + ":" + ",".join(f"{k}={_fmt_param(v)}" for k, v in sorted(values.items()))


def _fmt_param(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _curve(value) -> list[float]:
    if isinstance(value, (list, tuple)):
        items = value
    else:
        try:
            items = json.loads(value) if _text(value) else []
        except (TypeError, ValueError):
            return []
    out = []
    for item in items or []:
        try:
            out.append(float(item))
        except (TypeError, ValueError):
            out.append(float("nan"))
    return out


# ----------------------------------------------------------------------------- statistics


def summarize(values: Iterable[float], metric: str = "") -> dict[str, float]:
    """n, mean, sample std (ddof=1) and the 95 % interval of the mean (within the metric's range)."""
    data = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(data)
    mean = float(np.mean(data)) if n else float("nan")
    std = float(np.std(data, ddof=1)) if n >= 2 else float("nan")
    low, high = interval(data, metric)
    return {"n": n, "mean": mean, "std": std, "ci_low": low, "ci_high": high}


# ----------------------------------------------------------------------------- boards


@dataclass
class Board:
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
            from .tracks import TRACKS

            known = TRACKS.get(self.track)
            return known.smoke if known is not None else self.track.endswith("/smoke")
        return self.scale == "tiny"

    @property
    def ranked_rows(self) -> list[dict]:
        return [row for row in self.rows if row.get("rank") is not None]


def _setting_key(row) -> tuple[str, str, str, str]:
    return (row["track"], row["preset"], row["scale"], row["data_checksum"])


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "._" else "-" for c in text)
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
                key = _slug(track.replace("/", "-") + ("" if len(same_track) == 1 else f"-{checksum[:8]}"))
            elif len(ad_hoc) == 1:
                key = _slug(task)
            else:
                key = _slug("-".join([task, preset or "preset", f"scale{scale}" if scale else "scale", checksum[:8]]))
            rows, rank_by = _board_rows(task, records)
            boards.append(Board(key, task, track, preset, scale, checksum, records, rows, rank_by))
    return boards


def _config_stats(records: pd.DataFrame) -> list[dict]:
    """One entry per configuration (spec) of one regularizer."""
    out = []
    metric = _first(records["metric"]) or ""
    for spec in sorted(set(records["spec"])):
        runs = records[records["spec"] == spec]
        ok = runs[runs["status"] == OK]
        out.append({"spec": spec, "runs": runs, "ok": ok, "valid": summarize(ok["best_valid"], metric)})
    return out


def _best_config(records: pd.DataFrame) -> dict | None:
    """The configuration with the lowest mean validation metric among those with the most finished
    seeds: a one-seed configuration must not win on a lucky seed over a five-seed one."""
    candidates = [c for c in _config_stats(records) if c["valid"]["n"] >= 1]
    if not candidates:
        return None
    most = max(c["valid"]["n"] for c in candidates)
    return min((c for c in candidates if c["valid"]["n"] == most), key=lambda c: (c["valid"]["mean"], c["spec"]))


def _board_rows(task: str, records: pd.DataFrame) -> tuple[list[dict], str]:
    rows = []
    for regularizer in sorted(set(records["regularizer"])):
        mine = records[records["regularizer"] == regularizer]
        tuning = mine[mine["tuning"]]
        final = mine[~mine["tuning"]]
        source = "final"
        best = _best_config(final)
        if best is None:
            best = _best_config(tuning)
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
        runs, ok = best["runs"], best["ok"]
        valid = best["valid"]
        ok = ok.sort_values("seed", key=lambda s: s.fillna(-1))
        test = summarize(ok["test_at_best"], _first(ok["metric"]) or "")
        seeds = sorted(s for s in ok["seed"] if s is not None)
        published = reference_numbers.published(task, regularizer)
        row.update({
            "spec": best["spec"],
            "params": json.loads(runs["params"].iloc[0]) if runs["params"].iloc[0] else {},
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
            "throughput_unit": _first(ok["throughput_unit"]),
            "epochs": _first(ok["epochs"]),
            "hidden_size": _first(ok["hidden_size"]),
            "cell": _first(ok["cell"]),
            "metric": _first(ok["metric"]),
            "paper_valid": None if published is None else published[0],
            "paper_test": None if published is None else published[1],
            "commits": sorted({str(c)[:12] for c in ok["git_commit"] if _text(c)}),
            "curves": [c for c in ok["curve_values"]],
            "valid_values": [float(v) for v in ok["best_valid"]],
            "test_values": [float(v) for v in ok["test_at_best"]],
            "best_epochs": [_int_or_none(v) for v in ok["best_epoch"]] if "best_epoch" in ok else [],
            "train_loss_curves": [_curve(c) for c in ok["train_loss_curve"]],
            "val_nll_curves": [_curve(c) for c in ok["val_nll_curve"]],
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


def _first(series):
    values = sorted({v for v in series if v is not None and _text(v) != ""}, key=str)
    if not values:
        return None
    value = values[0]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


# ----------------------------------------------------------------------------- formatting


def _fmt(value, metric: str = "", signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    digits = 2 if metric == "perplexity" else 4
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _fmt_cost(value: float, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.1f}" if value < 1000 else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def _mean_std(row: dict, split: str, metric: str) -> str:
    mean, std = row.get(f"{split}_mean"), row.get(f"{split}_std")
    if mean is None or math.isnan(mean):
        return "–"
    if std is None or math.isnan(std):
        return _fmt(mean, metric)
    return f"{_fmt(mean, metric)} ± {_fmt(std, metric)}"


def _ci(row: dict, split: str, metric: str) -> str:
    low, high = row.get(f"{split}_ci_low"), row.get(f"{split}_ci_high")
    if low is None or math.isnan(low):
        return "–"
    return f"[{_fmt(low, metric)}, {_fmt(high, metric)}]"


def _paper(row: dict, metric: str) -> str:
    valid, test = row.get("paper_valid"), row.get("paper_test")
    if valid is None and test is None:
        return "–"
    return f"{_fmt(valid, metric)} / {_fmt(test, metric)}"


def _short_spec(row: dict) -> str:
    """The configuration for a table cell: numbers to 4 significant digits (JSON keeps the exact spec)."""
    params = row.get("params") or {}
    if not params:
        return row["spec"]
    return row["regularizer"] + ":" + ",".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={_fmt_param(v)}" for k, v in params.items())


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def _without_local_paths(command: str) -> str:
    """``--data-dir /some/machine/path`` -> ``--data-dir DATA_DIR``: a board names data by checksum, not by path."""
    parts = shlex.split(command)
    for i, part in enumerate(parts[:-1]):
        if part == "--data-dir":
            parts[i + 1] = "DATA_DIR"
    return shlex.join(parts)


def _reproduce_commands(board: Board, store_label: str, out_label: str) -> list[str]:
    commands = []
    recorded = sorted(set(_without_local_paths(c) for c in board.records["command"].map(_text) if c))
    commands.extend(recorded)
    if not recorded:
        for study in sorted(set(s for s in board.records["study"] if s)):
            tuning = board.records[(board.records["study"] == study) & board.records["tuning"]]
            if len(tuning):
                regularizer = _first(tuning["regularizer"])
                commands.append(f"regbench study --task {board.task} --regularizer {regularizer} "
                                f"--trials {len(tuning)} --study-name {study}"
                                + (f" --preset {board.preset}" if board.preset else ""))
            reruns = board.records[(board.records["study"] == study) & ~board.records["tuning"]]
            if len(reruns):
                seeds = len(set(reruns["seed"]))
                commands.append(f"regbench run --from-study {study} --seeds {seeds}")
    track = f" --track {board.track}" if "shipped" in board.records and board.records["shipped"].any() else ""
    commands.append(f"regbench leaderboard --store {shlex.quote(store_label)} --out {shlex.quote(out_label)}{track}")
    return commands


def _comparison(row: dict, other: str, metric: str) -> str:
    """A table cell: the difference of means, Welch's Holm-adjusted p, ``*`` when significant at 5 %."""
    comparison = row.get(f"vs_{other}")
    if not comparison:
        return "–"
    p = comparison.get("p_holm")
    p_text = "p –" if p is None or p != p else f"p {p:.3f}" if p >= 0.001 else "p < 0.001"
    return f"{_fmt(comparison['difference'], metric, signed=True)} ({p_text}){'*' if comparison['significant'] else ''}"


def _banner(board: Board) -> list[str]:
    if board.smoke:
        return ["> **Smoke scale: these numbers are not results.** Runs this short test that the pipeline "
                "works; the models are at or near chance, and their ranking is noise. This board never enters "
                "the cross-task ranking. See the CPU tracks (`regbench list`) for boards that mean something.", ""]
    if not board.track:
        return ["> **Not a benchmark track**: an ad-hoc setting (preset and scale chosen by hand). Its rows "
                "are ranked, but it never enters the cross-task ranking; runs on a track "
                "(`regbench run --track ...`) are comparable across regbench versions.", ""]
    return []


def _track_lines(board: Board) -> list[str]:
    from .tracks import TRACKS

    track = TRACKS.get(board.track)
    if track is None:
        return [f"- Track: `{board.track}` (not defined in this regbench version)."]
    if track.trials:
        protocol = (f"an Optuna study of {track.trials} trials per regularizer with tunable hyperparameters "
                    "(equal budget; the paper's setting is trial 0; `none` has nothing to tune), then "
                    f"{track.seeds} fresh seeds of each best configuration, selected on validation, reported on test")
    else:
        protocol = (f"no tuning: each regularizer at the paper's hyperparameters for the task (its defaults "
                    f"where the paper gives none), {track.seeds} seeds, reported on test")
    lines = [f"- Track: `{track.name}`: {track.description}. Protocol: {protocol}."]
    if track.pilot:
        lines.append(f"- Why this setting (pilot): {track.pilot}")
    return lines


def _overfitting_lines(board: Board, metric: str) -> list[str]:
    """Whether the baseline overfits: where its validation NLL bottoms out, and the train/valid gap."""
    baseline = next((r for r in board.rows if r["regularizer"] == BASELINE and r.get("status") == OK), None)
    if baseline is None:
        return []
    pairs = [(t, v) for t, v in zip(baseline.get("train_loss_curves", []), baseline.get("val_nll_curves", []))
             if t and v and len(t) == len(v)]
    best_epochs = [e for e in baseline.get("best_epochs", []) if e is not None]
    if not pairs and not best_epochs:
        return []
    parts = []
    if best_epochs:
        parts.append(f"its validation {metric} is best at epoch {np.mean(best_epochs) + 1:.1f} on average "
                     f"(of {baseline.get('epochs')} trained)")
    if pairs:
        minimum = [int(np.nanargmin(v)) for _, v in pairs]
        final_gap = [v[-1] - t[-1] for t, v in pairs]
        rise = [v[-1] - np.nanmin(v) for _, v in pairs]
        parts.append(f"its validation NLL bottoms out at epoch {np.mean(minimum) + 1:.1f} and then rises by "
                     f"{np.mean(rise):.3f} nats by the last epoch, which ends with a train/valid gap of "
                     f"{np.mean(final_gap):.3f} nats (validation NLL minus training loss; mean over "
                     f"{len(pairs)} seeds)")
    return ["- Does the baseline overfit? " + "; ".join(parts) + "."]


def _board_markdown(board: Board, store_label: str, out_label: str, plots: list[str]) -> str:
    recs = board.records
    metric = _first(recs["metric"]) or ""
    finished = [r for r in board.rows if r.get("status") == OK]
    if board.track:
        title = f"# {board.track}" + (f" (data {board.data_checksum[:8]})" if board.key.endswith(board.data_checksum[:8])
                                      else "")
    else:
        title = f"# {board.task}" + (f" ({board.preset}, scale {board.scale})" if board.key != _slug(board.task) else "")
    lines = [title, ""]
    lines.extend(_banner(board))
    lines.append(f"Metric: **{metric or 'metric'}** (lower is better). Rows are ranked by the mean "
                 f"**{board.rank_by}** {metric} of each regularizer's best configuration (lowest mean "
                 "validation metric over its finished seeds). Numbers in the configurations are shown to 4 "
                 "significant digits; the exact spec is in `leaderboard.json`.")
    lines.append("")
    lines.append("## Setting")
    lines.append("")
    datasets = sorted(set(d for d in recs["dataset"] if d)) or ["?"]
    sources = sorted(set(source_names(d) for d in recs["data_source"] if d)) or ["?"]
    lines.append(f"- Data: {', '.join(datasets)}; source: {', '.join(sources)}; "
                 f"sha256: `{board.data_checksum or '?'}`")
    hidden = sorted(set(str(h) for h in (r.get("hidden_size") for r in finished) if h is not None))
    cells = sorted(set(str(c) for c in (r.get("cell") for r in finished) if c))
    epochs = sorted(set(str(e) for e in (r.get("epochs") for r in finished) if e is not None))
    if board.track:
        lines.extend(_track_lines(board))
    lines.append((f"- Scale (ours): track `{board.track}`" if board.track else
                  f"- Scale (ours): preset `{board.preset or '?'}`, scale `{board.scale or '?'}`")
                 + (f", cell {', '.join(cells)}" if cells else "")
                 + (f", hidden size {', '.join(hidden)}" if hidden else "")
                 + (f", epochs {', '.join(epochs)}" if epochs else "") + "; CPU.")
    settings = sorted({json.dumps(v, sort_keys=True) for v in recs["settings"] if isinstance(v, dict) and v})
    for text in settings:
        lines.append(f"- Training settings: `{text}`")
    paper_task = reference_numbers.paper_task(board.task)
    if paper_task:
        lines.append(f"- Paper's figures ({reference_numbers.PAPER}): valid / test at full scale, GPU: "
                     f"{reference_numbers.SETTINGS[paper_task]}. Ours are at the reduced scale above: "
                     "a different experiment, shown for reference only.")
    else:
        lines.append("- The paper has no figures for this task.")
    lines.extend(_overfitting_lines(board, metric))
    seed_counts = sorted(set(r["seeds"] for r in finished))
    lines.append(f"- Seeds per row: {', '.join(map(str, seed_counts)) or '0'}; confidence intervals: "
                 f"{int(CONFIDENCE * 100)} % Student t over seeds (needs at least 2 seeds), cut to the metric's "
                 "range.")
    lines.append(f"- Records: {len(recs)} ({int(recs['tuning'].sum())} tuning trials, "
                 f"{int((~recs['tuning']).sum())} final runs; {int((recs['status'] == OK).sum())} finished).")
    seconds = float(np.nansum(recs["wall_time_s"].to_numpy(dtype=float)))
    if seconds > 0:
        lines.append(f"- Cost: {seconds:,.0f} s of run time over all records, about {seconds / 7200:.1f} h with two "
                     "worker processes (the runs' own wall times; a run's time depends on what else the machine "
                     "was doing).")
    lines.append("")
    lines.append("## Leaderboard")
    lines.append("")
    header = ["rank", "regularizer", "best configuration", "seeds", "tuning trials",
              f"valid {metric} mean ± std", "valid 95% CI", f"test {metric} mean ± std", "test 95% CI",
              f"{board.rank_by} vs none (p)", f"{board.rank_by} vs zoneout (p)", "paper valid / test",
              "wall time (s)", "throughput", "commit"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * len(header)) + "|")
    for row in board.rows:
        if row.get("status") != OK:
            lines.append("| – | " + " | ".join([
                row["regularizer"], "–", f"0 ({row['seeds_failed']} failed)",
                f"{row['tuning_trials_ok']}/{row['tuning_trials']}"] + ["–"] * 10) + " |")
            continue
        seeds = str(row["seeds"]) + (f" ({row['seeds_failed']} failed)" if row["seeds_failed"] else "")
        spec = (f"`{_md_escape(_short_spec(row))}`" + (" (tuning only)" if row["source"] != "final" else "")
                + (" (shipped)" if row.get("shipped") else ""))
        lines.append("| " + " | ".join([
            "–" if row["rank"] is None else str(row["rank"]), row["regularizer"], spec, seeds,
            f"{row['tuning_trials_ok']}/{row['tuning_trials']}",
            _mean_std(row, "valid", metric), _ci(row, "valid", metric),
            _mean_std(row, "test", metric), _ci(row, "test", metric),
            _comparison(row, BASELINE, metric), _comparison(row, REFERENCE, metric), _paper(row, metric),
            _fmt_cost(row["wall_time_s"]), _fmt_cost(row["throughput"], row.get("throughput_unit") or ""),
            ", ".join(f"`{c}`" for c in row.get("commits", [])) or "–",
        ]) + " |")
    lines.append("")
    if board.rank_by == "valid":
        lines.append("No test figures in this board: the 'vs none' column compares validation means.")
        lines.append("")
    lines.append("`tuning trials` counts finished / all trials of the regularizer's studies on this board; "
                 "`seeds` counts finished seeds of the best configuration; wall time and throughput are "
                 "means over those seeds. `vs none` and `vs zoneout`: the difference of means (negative = "
                 "better), with the p-value of Welch's t-test over seeds, Holm-adjusted over every comparison "
                 f"of this board; `*` marks a difference significant at {ALPHA:.0%}. Without a `*` a difference "
                 "is not a win.")
    lines.append("")
    if board.track and not board.smoke:
        lines.append("## Findings")
        lines.append("")
        lines.append(findings.paragraph(board.task, finished, board.rank_by, metric))
        lines.append("")
    failed = [r for r in board.rows if r.get("failures")]
    if failed:
        lines.append("## Failed or diverged runs")
        lines.append("")
        lines.append("Every failed or diverged run of the board (pruned tuning trials are not listed).")
        lines.append("")
        for row in sorted(failed, key=lambda r: r["regularizer"]):
            for reason in row["failures"]:
                lines.append(f"- {row['regularizer']}: {_md_escape(reason)}")
        lines.append("")
    if plots:
        lines.append("## Plots")
        lines.append("")
        for plot in plots:
            lines.append(f"![{plot}]({plot})")
            lines.append("")
    lines.append("## Reproduce")
    lines.append("")
    commands = _reproduce_commands(board, store_label, out_label)
    lines.append("```")
    lines.extend(commands)
    lines.append("```")
    lines.append("")
    if any("DATA_DIR" in command for command in commands):
        lines.append("`DATA_DIR`: a folder with the data files named under *Setting* (check them by their sha256).")
        lines.append("")
    lines.extend(_commits_note(board.records))
    return "\n".join(lines)


def _commits_note(records: pd.DataFrame) -> list[str]:
    """Which regbench commits made the runs: the same seed draws the same masks only with the same code."""
    commits = records["git_commit"].fillna("").astype(str) if "git_commit" in records else pd.Series([], dtype=str)
    counts = commits[commits != ""].value_counts()
    if counts.empty:
        return []
    listed = ", ".join(f"`{commit[:12]}` ({count} runs)"
                       for commit, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    several = len(counts) > 1
    return [f"The runs were made at regbench commit{'s' if several else ''} {listed}. A seed fixes the random "
            "masks only together with the code that drew them, so check out "
            f"{'those commits' if several else 'that commit'} to repeat the runs draw for draw; other commits "
            "repeat them in distribution.", ""]


def ranking_boards(boards: list[Board]) -> list[Board]:
    """The boards of the cross-task ranking: one per task, a track's, never a smoke one, with at
    least two ranked rows. Where a task has several such tracks, the one with the most ranked rows."""
    chosen: dict[str, Board] = {}
    for board in boards:
        if not board.track or board.smoke or len(board.ranked_rows) < 2:
            continue
        current = chosen.get(board.task)
        if current is None or (len(board.ranked_rows), board.key) > (len(current.ranked_rows), current.key):
            chosen[board.task] = board
    return [chosen[task] for task in sorted(chosen)]


def _cross_task(boards: list[Board]) -> list[dict]:
    """Mean rank per regularizer over the ranking boards (``ranking_boards``) where it was run; a
    regularizer with no finished run on a board (every run failed or diverged) counts as last there
    (finished rows + 1)."""
    ranks: dict[str, list[tuple[str, int, bool]]] = {}
    for board in ranking_boards(boards):
        finished = sum(1 for row in board.rows if row.get("status") == OK)
        for row in board.rows:
            if row.get("status") == OK:
                ranks.setdefault(row["regularizer"], []).append((board.key, row["rank"], True))
            else:
                ranks.setdefault(row["regularizer"], []).append((board.key, finished + 1, False))
    out = []
    for regularizer, items in ranks.items():
        values = [rank for _, rank, _ in items]
        out.append({"regularizer": regularizer, "mean_rank": float(np.mean(values)), "boards": len(values),
                    "ranks": {key: rank for key, rank, _ in sorted(items)},
                    "unfinished": sorted(key for key, _, ok in items if not ok)})
    out.sort(key=lambda r: (r["mean_rank"], -r["boards"], r["regularizer"]))
    return out


def _index_markdown(boards: list[Board], summary: list[dict], store_label: str, out_label: str) -> str:
    lines = ["# regbench leaderboards", ""]
    lines.append("Regularizers of recurrent networks compared at an equal tuning budget per regularizer, "
                 "then the best configuration of each rerun over several seeds. Lower is better for every "
                 "metric. Each board is one track (a task at one versioned setting, `regbench list tracks`) or one "
                 "ad-hoc setting; the paper's figures (full scale, GPU) are "
                 "shown beside ours for reference only.")
    lines.append("")
    lines.append("## Boards")
    lines.append("")
    ranking = ranking_boards(boards)
    lines.append("| board | task | metric | setting | data sha256 | regularizers | seeds per row | records | "
                 "in the ranking |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for board in boards:
        finished = [r for r in board.rows if r.get("status") == OK]
        seeds = ", ".join(map(str, sorted(set(r["seeds"] for r in finished)))) or "0"
        setting = f"track `{board.track}`" if board.track else f"preset {board.preset or '?'}, scale {board.scale or '?'}"
        why_not = ("yes" if board in ranking else "no: smoke scale" if board.smoke
                   else "no: not a track" if not board.track else "no: fewer than 2 ranked rows"
                   if len(board.ranked_rows) < 2 else "no: another track of this task is ranked")
        lines.append(f"| [{board.key}]({board.key}.md) | {board.task} | {board.metric} | {setting} | "
                     f"`{(board.data_checksum or '?')[:16]}` | {len(finished)} | {seeds} | {len(board.records)} | "
                     f"{why_not} |")
    lines.append("")
    lines.append("## Cross-task ranking")
    lines.append("")
    lines.append("Mean rank of each regularizer over the ranking boards: one track per task, never a smoke "
                 "board or an ad-hoc setting, each with at least two ranked rows (ties share the better "
                 "rank). A regularizer with no finished run on a board (all failed or diverged) counts as last "
                 "there, marked `*`. A rank is an order of means, not a significant difference: each board "
                 "gives the tests.")
    lines.append("")
    keys = [b.key for b in ranking]
    if not ranking:
        lines.append("No board qualifies yet.")
        lines.append("")
        summary = []
    if ranking:
        lines.append("| position | regularizer | mean rank | boards | " + " | ".join(keys) + " |")
        lines.append("|" + "|".join(["---"] * (4 + len(keys))) + "|")
    for position, row in enumerate(summary, start=1):
        cells = [str(row["ranks"][k]) + ("*" if k in row["unfinished"] else "") if k in row["ranks"] else "–"
                 for k in keys]
        lines.append(f"| {position} | {row['regularizer']} | {row['mean_rank']:.2f} | {row['boards']} | "
                     + " | ".join(cells) + " |")
    lines.append("")
    lines.append("## Reproduce")
    lines.append("")
    if store_label.endswith(".json"):
        lines.append(f"`{store_label}` is the JSON export of the results store the runs wrote "
                     "(`regbench leaderboard --store STORE.sqlite --export FILE.json`); every row above comes "
                     "from it.")
        lines.append("")
    lines.append("The runs (each board's file lists its own), then the leaderboards:")
    lines.append("")
    lines.append("```")
    commands = []
    for board in boards:
        for command in _reproduce_commands(board, store_label, out_label)[:-1]:
            if command not in commands:
                commands.append(command)
    lines.extend(commands)
    lines.append(f"regbench leaderboard --store {shlex.quote(store_label)} --out {shlex.quote(out_label)}")
    lines.append("```")
    lines.append("")
    lines.extend(_commits_note(pd.concat([board.records for board in boards]) if boards else pd.DataFrame()))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


_PNG_METADATA = {"Software": None}


def _save(fig, path: Path) -> None:
    fig.savefig(path, format="png", dpi=100, metadata=_PNG_METADATA)


def _plot_curves(board: Board, path: Path) -> bool:
    rows = [r for r in board.rows if r.get("status") == OK and any(r["curves"])]
    if not rows:
        return False
    plt = _matplotlib()
    with plt.rc_context({"svg.hashsalt": "regbench", "path.simplify": True}):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        colors = plt.get_cmap("tab10")
        for index, row in enumerate(sorted(rows, key=lambda r: r["regularizer"])):
            curves = [c for c in row["curves"] if c]
            length = max(len(c) for c in curves)
            matrix = np.full((len(curves), length), np.nan)
            for i, curve in enumerate(curves):
                matrix[i, :len(curve)] = curve
            epochs = np.arange(1, length + 1)
            with np.errstate(all="ignore"):
                mean = np.nanmean(matrix, axis=0)
                low, high = np.nanmin(matrix, axis=0), np.nanmax(matrix, axis=0)
            color = colors(index % 10)
            ax.plot(epochs, mean, label=f"{row['regularizer']} (n={len(curves)})", color=color, linewidth=1.5)
            if len(curves) > 1:
                ax.fill_between(epochs, low, high, color=color, alpha=0.2, linewidth=0)
        metric = _first(board.records["metric"]) or "metric"
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation {metric}")
        ax.set_title(f"{board.key}: validation {metric} per epoch (mean, band = min..max over seeds)",
                     fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        _save(fig, path)
        plt.close(fig)
    return True


def _plot_zoneout_grid(board: Board, path: Path) -> bool:
    recs = board.records
    zone = recs[(recs["regularizer"] == "zoneout") & (recs["status"] == OK)]
    points = []
    for params, valid in zip(zone["params"], zone["best_valid"]):
        values = json.loads(params) if params else {}
        if "z_cells" in values and "z_states" in values and not math.isnan(valid):
            points.append((round(float(values["z_cells"]), 3), round(float(values["z_states"]), 3), float(valid)))
    cells = sorted({p[0] for p in points})
    states = sorted({p[1] for p in points})
    if len(cells) < 2 or len(states) < 2 or len({(c, s) for c, s, _ in points}) < 3:
        return False
    grid = np.full((len(states), len(cells)), np.nan)
    for i, zs in enumerate(states):
        for j, zc in enumerate(cells):
            hits = [v for c, s, v in points if c == zc and s == zs]
            if hits:
                grid[i, j] = float(np.mean(hits))
    plt = _matplotlib()
    metric = _first(board.records["metric"]) or "metric"
    if np.isfinite(grid).mean() < 0.75:
        # Not a grid (e.g. a study's continuous proposals): the runs as points, coloured by the metric.
        fig, ax = plt.subplots(figsize=(6.5, 5))
        xs, ys, vs = zip(*sorted(points))
        image = ax.scatter(xs, ys, c=vs, cmap="viridis_r", s=60, edgecolors="black", linewidths=0.5)
        for x, y, v in sorted(points):
            ax.annotate(_fmt(v, metric), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=7)
        ax.set_xlabel("z_cells")
        ax.set_ylabel("z_states")
        ax.grid(True, alpha=0.3)
        fig.colorbar(image, ax=ax, label=f"validation {metric}")
        ax.set_title(f"{board.key}: zoneout runs by z_cells and z_states", fontsize=9)
        fig.tight_layout()
        _save(fig, path)
        plt.close(fig)
        return True
    fig, ax = plt.subplots(figsize=(6.5, 5))
    image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(cells)), [f"{c:g}" for c in cells], rotation=90 if len(cells) > 8 else 0, fontsize=7)
    ax.set_yticks(range(len(states)), [f"{s:g}" for s in states], fontsize=7)
    ax.set_xlabel("z_cells")
    ax.set_ylabel("z_states")
    if len(cells) * len(states) <= 64:
        for i in range(len(states)):
            for j in range(len(cells)):
                if not math.isnan(grid[i, j]):
                    ax.text(j, i, _fmt(grid[i, j], metric), ha="center", va="center", fontsize=7, color="white")
    fig.colorbar(image, ax=ax, label=f"validation {metric} (mean over runs)")
    ax.set_title(f"{board.key}: zoneout z_cells x z_states (blank = not run)", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------- output


def _jsonable(value, exact: bool = False):
    """JSON-ready copy; floats rounded to 10 decimals unless ``exact`` (exports must round-trip)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v, exact) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, exact) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value) or math.isinf(value):
            return None
        return value if exact else round(value, 10)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", newline="\n")


def export_results(store, path: str | os.PathLike) -> Path:
    """Write every record of ``store`` (a ``ResultsStore`` or the path of a store or export) to a
    JSON file, sorted and stable: the form committed with the leaderboards."""
    from .store import export_json, read_records

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
            if _plot_curves(board, curves):
                plot_names.append(curves.name)
                written.append(curves)
            grid = out / f"{board.key}_zoneout_grid.png"
            if _plot_zoneout_grid(board, grid):
                plot_names.append(grid.name)
                written.append(grid)
        path = out / f"{board.key}.md"
        _write(path, _board_markdown(board, store_label, out_label, plot_names))
        written.append(path)
        json_boards.append({
            "board": board.key, "task": board.task, "preset": board.preset, "scale": board.scale,
            "data_checksum": board.data_checksum, "metric": board.metric, "rank_by": board.rank_by,
            "datasets": sorted(set(d for d in board.records["dataset"] if d)),
            "data_sources": sorted(set(d for d in board.records["data_source"] if d)),
            "records": int(len(board.records)),
            "rows": [{k: v for k, v in row.items() if k != "curves"} for row in board.rows],
            "reproduce": _reproduce_commands(board, store_label, out_label),
        })
    summary = _cross_task(boards)
    index = out / "README.md"
    _write(index, _index_markdown(boards, summary, store_label, out_label))
    written.append(index)
    data = out / "leaderboard.json"
    _write(data, json.dumps(_jsonable({"boards": json_boards, "cross_task": summary}), indent=1,
                            sort_keys=True, ensure_ascii=False) + "\n")
    written.append(data)
    return sorted(written)


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
    return Path(out_dir) / f"{_slug(track.replace('/', '-'))}.md"


# ----------------------------------------------------------------------------- command line


def add_arguments(parser) -> None:
    """Arguments of ``regbench leaderboard`` (declared in benchmark.cli.arguments)."""
    from .cli.arguments import leaderboard_arguments

    leaderboard_arguments(parser, DEFAULT_OUT)


def run(args) -> int:
    import sys

    if args.store is None:
        from .store import default_store_path

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
            from .tracks import get_track

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
