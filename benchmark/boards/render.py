"""Boards as text: the markdown of each board and of the index, prose sections included.

Every file is a fixed template filled from the board's table (``tables``: a DataFrame, read row by
row with ``itertuples``); the same table always gives the same bytes.
"""

from __future__ import annotations

import json
import shlex

import numpy as np
import pandas as pd

from .. import reference_numbers
from ..commands import regbench_command
from . import findings
from ..data import source_names
from .significance import ALPHA, CONFIDENCE
from .cross_task import ranking_boards
from .load import first
from .tables import BASELINE, OK, REFERENCE, Board, missing, slug

__all__ = ["board_markdown", "index_markdown", "reproduce_commands", "fmt"]


def _fmt_param(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def fmt(value, metric: str = "", signed: bool = False) -> str:
    if missing(value):
        return "–"
    digits = 2 if metric == "perplexity" else 4
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _fmt_cost(value: float, unit: str | None = None) -> str:
    if missing(value):
        return "–"
    text = f"{value:.1f}" if value < 1000 else f"{value:,.0f}"
    return f"{text} {'' if missing(unit) else unit}".strip()


def _mean_std(row, split: str, metric: str) -> str:
    mean, std = getattr(row, f"{split}_mean"), getattr(row, f"{split}_std")
    if missing(mean):
        return "–"
    if missing(std):
        return fmt(mean, metric)
    return f"{fmt(mean, metric)} ± {fmt(std, metric)}"


def _ci(row, split: str, metric: str) -> str:
    low, high = getattr(row, f"{split}_ci_low"), getattr(row, f"{split}_ci_high")
    if missing(low):
        return "–"
    return f"[{fmt(low, metric)}, {fmt(high, metric)}]"


def _paper(row, metric: str) -> str:
    if missing(row.paper_valid) and missing(row.paper_test):
        return "–"
    return f"{fmt(row.paper_valid, metric)} / {fmt(row.paper_test, metric)}"


def _short_spec(row) -> str:
    """The configuration for a table cell: numbers to 4 significant digits (JSON keeps the exact spec)."""
    values = row.hyperparameters or {}
    if not values:
        return row.spec
    return row.regularizer + ":" + ",".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={_fmt_param(v)}" for k, v in values.items())


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def _without_local_paths(command: str) -> str:
    """``--data-dir /some/machine/path`` -> ``--data-dir DATA_DIR``: a board names data by checksum, not by path."""
    parts = shlex.split(command)
    for i, part in enumerate(parts[:-1]):
        if part == "--data-dir":
            parts[i + 1] = "DATA_DIR"
    return shlex.join(parts)


def reproduce_commands(board: Board, store_label: str, out_label: str) -> list[str]:
    commands = []
    recorded = sorted(set(_without_local_paths(c) for c in board.records["command"] if c))
    commands.extend(recorded)
    if not recorded:
        for study in sorted(set(s for s in board.records["study"] if s)):
            tuning = board.records[(board.records["study"] == study) & board.records["tuning"]]
            if len(tuning):
                regularizer = first(tuning["regularizer"])
                commands.append(regbench_command("study", {"task": board.task, "regularizer": regularizer,
                                                           "trials": len(tuning), "study_name": study,
                                                           "preset": board.preset or None}))
            reruns = board.records[(board.records["study"] == study) & ~board.records["tuning"]]
            if len(reruns):
                seeds = len(set(reruns["seed"]))
                commands.append(regbench_command("run", {"from_study": study, "seeds": seeds}))
    shipped = "shipped" in board.records and board.records["shipped"].any()
    commands.append(regbench_command("leaderboard", {"store": store_label, "out": out_label,
                                                     "track": board.track if shipped else None}))
    return commands


def _comparison(row, other: str, metric: str) -> str:
    """A table cell: the difference of means, Welch's Holm-adjusted p, ``*`` when significant at 5 %."""
    significant = getattr(row, f"vs_{other}_significant")
    if missing(significant):  # nothing to compare with
        return "–"
    p = getattr(row, f"vs_{other}_p_holm")
    p_text = "p –" if missing(p) else f"p {p:.3f}" if p >= 0.001 else "p < 0.001"
    difference = getattr(row, f"vs_{other}_difference")
    return f"{fmt(difference, metric, signed=True)} ({p_text}){'*' if significant else ''}"


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
    from ..tracks import TRACKS

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
    baseline = next(board.finished[board.finished["regularizer"] == BASELINE].itertuples(index=False), None)
    if baseline is None:
        return []
    pairs = [(t, v) for t, v in zip(baseline.train_loss_curves, baseline.val_nll_curves)
             if t and v and len(t) == len(v)]
    best_epochs = [e for e in baseline.best_epochs if e is not None]
    if not pairs and not best_epochs:
        return []
    parts = []
    if best_epochs:
        parts.append(f"its validation {metric} is best at epoch {np.mean(best_epochs) + 1:.1f} on average "
                     f"(of {None if missing(baseline.epochs) else baseline.epochs} trained)")
    if pairs:
        minimum = [int(np.nanargmin(v)) for _, v in pairs]
        final_gap = [v[-1] - t[-1] for t, v in pairs]
        rise = [v[-1] - np.nanmin(v) for _, v in pairs]
        parts.append(f"its validation NLL bottoms out at epoch {np.mean(minimum) + 1:.1f} and then rises by "
                     f"{np.mean(rise):.3f} nats by the last epoch, which ends with a train/valid gap of "
                     f"{np.mean(final_gap):.3f} nats (validation NLL minus training loss; mean over "
                     f"{len(pairs)} seeds)")
    return ["- Does the baseline overfit? " + "; ".join(parts) + "."]


def board_markdown(board: Board, store_label: str, out_label: str, plots: list[str]) -> str:
    recs = board.records
    metric = first(recs["metric"]) or ""
    finished = board.finished
    if board.track:
        title = f"# {board.track}" + (f" (data {board.data_checksum[:8]})" if board.key.endswith(board.data_checksum[:8])
                                      else "")
    else:
        title = f"# {board.task}" + (f" ({board.preset}, scale {board.scale})" if board.key != slug(board.task) else "")
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
    hidden = sorted(set(finished["hidden_size"].dropna().astype(str)))
    cells = sorted(set(finished["cell"].dropna()) - {""})
    epochs = sorted(set(finished["epochs"].dropna().astype(str)))
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
    seed_counts = sorted(set(finished["seeds"]))
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
    for row in board.table.itertuples(index=False):
        if row.status != OK:
            lines.append("| – | " + " | ".join([
                row.regularizer, "–", f"0 ({row.seeds_failed} failed)",
                f"{row.tuning_trials_ok}/{row.tuning_trials}"] + ["–"] * 10) + " |")
            continue
        seeds = str(row.seeds) + (f" ({row.seeds_failed} failed)" if row.seeds_failed else "")
        spec = (f"`{_md_escape(_short_spec(row))}`" + (" (tuning only)" if row.source != "final" else "")
                + (" (shipped)" if row.shipped else ""))
        lines.append("| " + " | ".join([
            "–" if missing(row.rank) else str(row.rank), row.regularizer, spec, seeds,
            f"{row.tuning_trials_ok}/{row.tuning_trials}",
            _mean_std(row, "valid", metric), _ci(row, "valid", metric),
            _mean_std(row, "test", metric), _ci(row, "test", metric),
            _comparison(row, BASELINE, metric), _comparison(row, REFERENCE, metric), _paper(row, metric),
            _fmt_cost(row.wall_time_s), _fmt_cost(row.throughput, row.throughput_unit),
            ", ".join(f"`{c}`" for c in row.commits) or "–",
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
    failed = board.table[board.table["failures"].map(len) > 0].sort_values("regularizer")
    if len(failed):
        lines.append("## Failed or diverged runs")
        lines.append("")
        lines.append("Every failed or diverged run of the board (pruned tuning trials are not listed).")
        lines.append("")
        for row in failed.itertuples(index=False):
            for reason in row.failures:
                lines.append(f"- {row.regularizer}: {_md_escape(reason)}")
        lines.append("")
    if plots:
        lines.append("## Plots")
        lines.append("")
        for plot in plots:
            lines.append(f"![{plot}]({plot})")
            lines.append("")
    lines.append("## Reproduce")
    lines.append("")
    commands = reproduce_commands(board, store_label, out_label)
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


def index_markdown(boards: list[Board], summary: list[dict], store_label: str, out_label: str) -> str:
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
        finished = board.finished
        seeds = ", ".join(map(str, sorted(set(finished["seeds"])))) or "0"
        setting = f"track `{board.track}`" if board.track else f"preset {board.preset or '?'}, scale {board.scale or '?'}"
        why_not = ("yes" if board in ranking else "no: smoke scale" if board.smoke
                   else "no: not a track" if not board.track else "no: fewer than 2 ranked rows"
                   if len(board.ranked) < 2 else "no: another track of this task is ranked")
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
        for command in reproduce_commands(board, store_label, out_label)[:-1]:
            if command not in commands:
                commands.append(command)
    lines.extend(commands)
    lines.append(regbench_command("leaderboard", {"store": store_label, "out": out_label}))
    lines.append("```")
    lines.append("")
    lines.extend(_commits_note(pd.concat([board.records for board in boards]) if boards else pd.DataFrame()))
    return "\n".join(lines)
