"""Leaderboard logic on synthetic stores: statistics checked against independent computations,
best-configuration selection, ranks, byte-identical output, the CLI subcommand.

The synthetic records here test the leaderboard code only; committed leaderboards come from
real runs.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark import leaderboard as L  # noqa: E402

T_975 = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305, 4: 2.776445105}  # tabulated Student t


def _record(reg, hyperparameters, seed, valid, test, *, task="digits", study=None, trial=None, status="ok",
            reason="", preset="tiny", scale=0.1, val_curve=None, metric="error"):
    spec = reg if not hyperparameters else reg + ":" + ",".join(
        f"{k}={v:g}" for k, v in sorted(hyperparameters.items()))
    return {
        "task": task, "regularizer": reg, "hyperparameters": hyperparameters, "spec": spec, "cell": "lstm",
        "seed": seed, "preset": preset, "scale": scale, "dataset": "digits",
        "data_source": "sklearn.datasets.load_digits", "data_checksum": "abc123" * 10, "metric": metric,
        "best_val_metric": valid, "test_metric": test, "epochs": 3, "wall_time_s": 10.0 + seed,
        "throughput": 1000.0 + 10 * seed, "throughput_unit": "samples/s",
        "val_curve": val_curve if val_curve is not None else [valid + 0.2, valid + 0.1, valid],
        "status": status, "reason": reason, "study": study, "trial": trial,
        "git_commit": "deadbeef", "run_dir": f"runs/{reg}/{seed}", "created_at": "2026-01-01T00:00:00",
    }


def synthetic_records():
    recs = []
    # none: 3 seeds
    for seed, (v, t) in enumerate([(0.30, 0.31), (0.32, 0.34), (0.28, 0.30)]):
        recs.append(_record("none", {}, seed, v, t))
    # zoneout: tuning trials at several configs, then reruns of two configs
    for trial, (zc, zs, v) in enumerate([(0.5, 0.05, 0.25), (0.1, 0.05, 0.29), (0.5, 0.3, 0.27), (0.1, 0.3, 0.33)]):
        recs.append(_record("zoneout", {"z_cells": zc, "z_states": zs}, 0, v, v + 0.01, study="s-zo", trial=trial))
    for seed, (v, t) in enumerate([(0.24, 0.26), (0.26, 0.27), (0.25, 0.25)]):
        recs.append(_record("zoneout", {"z_cells": 0.5, "z_states": 0.05}, seed, v, t, study="s-zo"))
    # a config with a lower single seed but a higher mean must not win on its lucky seed... it has 2 seeds
    for seed, (v, t) in enumerate([(0.20, 0.22), (0.40, 0.41)]):
        recs.append(_record("zoneout", {"z_cells": 0.1, "z_states": 0.05}, seed, v, t, study="s-zo"))
    # recurrent dropout: one diverged seed
    recs.append(_record("recurrent_dropout", {"p": 0.25}, 0, 0.27, 0.28))
    recs.append(_record("recurrent_dropout", {"p": 0.25}, 1, 0.29, 0.30))
    recs.append(_record("recurrent_dropout", {"p": 0.25}, 2, float("nan"), float("nan"), status="diverged",
                        reason="NaN loss at epoch 2"))
    # weight noise: only failed
    recs.append(_record("weight_noise", {"sigma": 0.075}, 0, float("nan"), float("nan"), status="failed",
                        reason="RuntimeError: boom"))
    # a second task
    for seed, v in enumerate([1.5, 1.6]):
        recs.append(_record("none", {}, seed, v, v + 0.1, task="char_ptb", metric="bpc"))
    for seed, v in enumerate([1.4, 1.45]):
        recs.append(_record("zoneout", {"z_cells": 0.5, "z_states": 0.05}, seed, v, v + 0.1, task="char_ptb",
                            metric="bpc"))
    return recs


@pytest.fixture
def store_json(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(synthetic_records()))
    return path


def _board(boards, key):
    return next(b for b in boards if b.key == key)


def test_statistics_match_independent_computation():
    values = [0.24, 0.26, 0.25]
    s = L.summarize(values)
    mean = statistics.mean(values)
    std = statistics.stdev(values)
    half = T_975[2] * std / math.sqrt(3)
    assert s["n"] == 3
    assert s["mean"] == pytest.approx(mean, abs=1e-12)
    assert s["std"] == pytest.approx(std, abs=1e-12)
    assert s["ci_low"] == pytest.approx(mean - half, abs=1e-8)
    assert s["ci_high"] == pytest.approx(mean + half, abs=1e-8)
    one = L.summarize([0.3])
    assert one["n"] == 1 and one["mean"] == 0.3 and math.isnan(one["std"]) and math.isnan(one["ci_low"])
    assert L.summarize([0.1, float("nan"), 0.3])["n"] == 2


def test_rows_best_config_ranks_and_baseline(store_json):
    boards = L.build_boards(L.load_records(store_json))
    assert [b.key for b in boards] == ["char_ptb", "digits"]
    digits = _board(boards, "digits")
    rows = digits.table.set_index("regularizer")
    zo = rows.loc["zoneout"]
    # final runs only; z_cells=0.5 (mean 0.25) beats z_cells=0.1 (mean 0.30, lucky seed 0.20)
    assert zo["spec"] == "zoneout:z_cells=0.5,z_states=0.05"
    assert zo["seeds"] == 3 and zo["tuning_trials"] == 4 and zo["source"] == "final"
    assert zo["valid_mean"] == pytest.approx(np.mean([0.24, 0.26, 0.25]))
    assert zo["test_mean"] == pytest.approx(np.mean([0.26, 0.27, 0.25]))
    assert zo["test_std"] == pytest.approx(np.std([0.26, 0.27, 0.25], ddof=1))
    half = T_975[2] * np.std([0.26, 0.27, 0.25], ddof=1) / math.sqrt(3)
    assert zo["test_ci_high"] == pytest.approx(np.mean([0.26, 0.27, 0.25]) + half, abs=1e-8)
    none_test = np.mean([0.31, 0.34, 0.30])
    assert zo["test_vs_none"] == pytest.approx(zo["test_mean"] - none_test)
    rd = rows.loc["recurrent_dropout"]
    assert rd["seeds"] == 2 and rd["seeds_failed"] == 1 and rd["reasons"] == ["NaN loss at epoch 2"]
    assert rows.loc["weight_noise", "status"] == "no finished run" and pd.isna(rows.loc["weight_noise", "rank"])
    assert digits.rank_by == "test"
    assert list(digits.ranked[["regularizer", "rank"]].itertuples(index=False, name=None)) == [
        ("zoneout", 1), ("recurrent_dropout", 2), ("none", 3)]
    ptb = _board(boards, "char_ptb")
    prow = ptb.table.set_index("regularizer")
    assert prow.loc["zoneout", "paper_test"] == 1.252 and prow.loc["none", "paper_valid"] == 1.466


def test_tuning_only_fallback(tmp_path):
    recs = [_record("zoneout", {"z_cells": zc, "z_states": 0.05}, 0, v, v, study="s", trial=i)
            for i, (zc, v) in enumerate([(0.1, 0.3), (0.5, 0.2)])]
    boards = L.build_boards(L.load_records(pd.DataFrame(recs)))
    row = boards[0].table.iloc[0]
    assert row["source"] == "tuning only" and row["spec"] == "zoneout:z_cells=0.5,z_states=0.05"


def test_files_content_and_byte_identity(store_json, tmp_path):
    out1, out2 = tmp_path / "a", tmp_path / "b"
    files1 = L.write_leaderboards(store_json, out1, store_label="results.json", out_label="leaderboards")
    files2 = L.write_leaderboards(store_json, out2, store_label="results.json", out_label="leaderboards")
    names = [p.name for p in files1]
    assert names == [p.name for p in files2]
    assert {"README.md", "digits.md", "char_ptb.md", "leaderboard.json", "digits_curves.png",
            "digits_zoneout_grid.png", "char_ptb_curves.png"} <= set(names)
    for a, b in zip(files1, files2):
        assert a.read_bytes() == b.read_bytes(), a.name
    png = (out1 / "digits_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and b"Software" not in png and b"matplotlib" not in png
    md = (out1 / "digits.md").read_text()
    assert "abc123abc123" in md and "preset `tiny`" in md and "regbench leaderboard --store results.json" in md
    assert "regbench run --from-study s-zo --seeds 2" in md or "regbench run --from-study s-zo --seeds 3" in md
    assert "diverged (run): NaN loss at epoch 2" in md and "failed (run): RuntimeError: boom" in md
    zo_line = next(line for line in md.splitlines() if "| zoneout |" in line)
    assert "0.2600 ± 0.0100" in zo_line  # test mean ± std of 0.26, 0.27, 0.25
    ptb_md = (out1 / "char_ptb.md").read_text()
    assert "1.3620 / 1.2520" in ptb_md and "full scale, GPU" in ptb_md
    assert "made at regbench commit `deadbeef` (" in md and "check out that commit" in md
    index = (out1 / "README.md").read_text()
    assert "Cross-task ranking" in index
    data = json.loads((out1 / "leaderboard.json").read_text())
    zo = next(r for b in data["boards"] if b["board"] == "digits" for r in b["rows"] if r["regularizer"] == "zoneout")
    assert zo["test_mean"] == pytest.approx(0.26)
    # boards outside the tracks are ranked on their own page, never across tasks
    assert data["cross_task"] == [] and "No board qualifies yet." in index and "no: not a track" in index
    assert "**Not a benchmark track**" in md


def _on_tracks(records):
    for record in records:
        record["track"] = f"{record['task']}/cpu-v1"
    return records


def test_track_boards_and_cross_task_ranking(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_on_tracks(synthetic_records())))
    L.write_leaderboards(path, tmp_path / "lb", store_label="results.json", out_label="lb")
    data = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    assert sorted(b["board"] for b in data["boards"]) == ["char_ptb-cpu-v1", "digits-cpu-v1"]
    summary = {r["regularizer"]: r for r in data["cross_task"]}
    assert summary["zoneout"]["mean_rank"] == 1.0 and summary["none"]["mean_rank"] == 2.5
    # weight_noise never finished on digits (3 finished rows): it counts as last there
    assert summary["weight_noise"]["mean_rank"] == 4.0 and summary["weight_noise"]["unfinished"] == ["digits-cpu-v1"]
    index = (tmp_path / "lb" / "README.md").read_text()
    assert "| weight_noise | 4.00 | 1 | – | 4* |" in index
    md = (tmp_path / "lb" / "digits-cpu-v1.md").read_text()
    assert md.startswith("# digits/cpu-v1\n") and "Track: `digits/cpu-v1`" in md and "## Findings" in md
    assert "Not a benchmark track" not in md and "Smoke scale" not in md


def test_differences_with_welch_p_and_holm():
    boards = L.build_boards(L.load_records(pd.DataFrame(synthetic_records())))
    rows = _board(boards, "digits").table.set_index("regularizer")
    none_test, zo_test, rd_test = [0.31, 0.34, 0.30], [0.26, 0.27, 0.25], [0.28, 0.30]
    # Welch's t and the Welch-Satterthwaite degrees of freedom, written out
    def welch_p(a, b):
        from scipy import stats
        va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
        t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
        dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
        return 2 * stats.t.sf(abs(t), dof)
    raw = {"zo-none": welch_p(zo_test, none_test), "rd-none": welch_p(rd_test, none_test),
           "rd-zo": welch_p(rd_test, zo_test)}
    def comparison(regularizer, other):
        return {part: rows.loc[regularizer, f"vs_{other}_{part}"] for part in ("difference", "p", "p_holm", "significant")}
    zo_none, rd_none, rd_zo = comparison("zoneout", "none"), comparison("recurrent_dropout", "none"), \
        comparison("recurrent_dropout", "zoneout")
    assert zo_none["difference"] == pytest.approx(np.mean(zo_test) - np.mean(none_test))
    assert zo_none["p"] == pytest.approx(raw["zo-none"]) and rd_zo["p"] == pytest.approx(raw["rd-zo"])
    # Holm over the three distinct comparisons of the board: none vs zoneout is shown on both rows
    # (with opposite signs) but is one test
    none_zo = comparison("none", "zoneout")
    assert none_zo["p"] == pytest.approx(raw["zo-none"]) and none_zo["difference"] == pytest.approx(-zo_none["difference"])
    family = {"zo-none": raw["zo-none"], "rd-none": raw["rd-none"], "rd-zo": raw["rd-zo"]}
    order = sorted(family, key=family.get)
    expected, running = {}, 0.0
    for k, name in enumerate(order):
        running = max(running, min(1.0, (3 - k) * family[name]))
        expected[name] = running
    assert none_zo["p_holm"] == zo_none["p_holm"]
    assert zo_none["p_holm"] == pytest.approx(expected["zo-none"])
    assert rd_none["p_holm"] == pytest.approx(expected["rd-none"]) and rd_zo["p_holm"] == pytest.approx(expected["rd-zo"])
    assert all(pd.isna(value) for value in [*comparison("none", "none").values(), *comparison("zoneout", "zoneout").values()])
    assert all(c["significant"] == (c["p_holm"] < 0.05) for c in (zo_none, rd_none, rd_zo))


def test_holm_and_welch_by_hand():
    from benchmark.boards.significance import holm, interval, welch

    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, float("nan"), 0.01]) [0] == pytest.approx(0.5) and math.isnan(holm([0.5, float("nan")])[1])
    assert welch([1.0, 1.0], [1.0, 1.0]) == (0.0, 1.0) and welch([1.0, 1.0], [2.0, 2.0]) == (-1.0, 0.0)
    assert math.isnan(welch([1.0], [2.0, 3.0])[1])
    low, high = interval([0.0, 0.0, 0.06], "error_rate")
    assert low == 0.0 and 0.06 < high < 1.0  # Student t alone would go below 0
    assert interval([0.99, 1.0, 0.9], "error_rate")[1] == 1.0


def test_smoke_boards_say_so_and_single_entrants_are_not_ranked(tmp_path):
    recs = [dict(_record("none", {}, s, 0.8, 0.8, scale="tiny"), track="digits/smoke") for s in range(2)]
    recs += [dict(_record("zoneout", {"z_cells": 0.5}, s, 0.7, 0.7, scale="tiny"), track="digits/smoke")
             for s in range(2)]
    recs += [dict(_record("none", {}, s, 1.5, 1.5, task="char_ptb", metric="bpc"), track="char_ptb/cpu-v1")
             for s in range(2)]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(recs))
    L.write_leaderboards(path, tmp_path / "lb", plots=False)
    smoke = (tmp_path / "lb" / "digits-smoke.md").read_text()
    assert "**Smoke scale: these numbers are not results.**" in smoke and "## Findings" not in smoke
    data = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    assert data["cross_task"] == []  # smoke never; a board of one entrant ranks nothing
    lone = next(b for b in data["boards"] if b["board"] == "char_ptb-cpu-v1")
    assert [r["rank"] for r in lone["rows"]] == [None]
    index = (tmp_path / "lb" / "README.md").read_text()
    assert "no: smoke scale" in index and "no: fewer than 2 ranked rows" in index


def test_findings_report_the_claims_either_way():
    from benchmark.boards.findings import paragraph as findings

    def row(name, values, rank):
        return {"regularizer": name, "test_values": values, "rank": rank}

    def paragraph(task, rows, split, metric):  # the findings read the finished rows of a board's table
        return findings(task, pd.DataFrame(rows), split, metric)
    rows = [row("zoneout", [1.30, 1.31, 1.29, 1.30, 1.30], 1), row("recurrent_dropout", [1.40, 1.41, 1.39, 1.40, 1.41], 2),
            row("none", [1.40, 1.42, 1.38, 1.41, 1.40], 3), row("weight_noise", [1.60, 1.61, 1.62, 1.60, 1.61], 4)]
    text = paragraph("char_ptb", rows, "test", "bpc")
    assert "*zoneout ahead of recurrent_dropout*: holds" in text
    assert "*recurrent_dropout ahead of none*: not significant" in text
    assert "*weight_noise near none*: does not hold: significantly worse" in text
    assert "*norm_stabilizer near none*: cannot be checked" in text
    assert "Holm's correction over the 2 claims of a difference" in text  # "near" tests stay out of it
    near = paragraph("char_ptb", rows + [row("norm_stabilizer", [1.41, 1.40, 1.39, 1.42, 1.40], 3)], "test", "bpc")
    assert "*norm_stabilizer near none*: no significant difference detected (consistent with the claim, " \
           "not evidence of equivalence)" in near
    pixels = paragraph("pmnist", rows, "test", "error_rate")
    assert "*recurrent_batchnorm best*: cannot be checked" in pixels and "*zoneout ahead of none*: holds" in pixels
    assert "*recurrent_batchnorm with zoneout best*" in pixels
    bn = [row("recurrent_batchnorm", [1.31, 1.30, 1.32, 1.29, 1.33], 2)] + rows[1:]
    assert "*recurrent_batchnorm best*: not supported: zoneout ranks first and recurrent_batchnorm ranks 2, " \
           "the difference not significant" in paragraph("pmnist", [rows[0]] + bn, "test", "error_rate")


def test_settings_split_into_boards(tmp_path):
    recs = [_record("none", {}, s, 0.3, 0.3, preset="tiny", scale=0.1) for s in range(2)]
    recs += [_record("none", {}, s, 0.2, 0.2, preset="full", scale=1.0) for s in range(2)]
    boards = L.build_boards(L.load_records(pd.DataFrame(recs)))
    assert len(boards) == 2 and all(b.key.startswith("digits-") for b in boards)


def test_export_results_stable(store_json, tmp_path):
    a = L.export_results(store_json, tmp_path / "x.json")
    b = L.export_results(store_json, tmp_path / "y.json")
    assert a.read_bytes() == b.read_bytes()
    again = L.build_boards(L.load_records(a))
    first = L.build_boards(L.load_records(store_json))
    assert again[1].table["test_mean"].equals(first[1].table["test_mean"])


def test_reads_the_real_results_store(tmp_path):
    """Records appended through benchmark.store.ResultsStore (its own column names) give the same rows."""
    from benchmark.store import ResultsStore

    store = ResultsStore(tmp_path / "results.sqlite")
    for row in synthetic_records():
        row["settings"] = {"hidden_size": 48}
        if row["status"] == "ok" and row["regularizer"] == "zoneout" and row["trial"] == 3:
            row.update(status="pruned", reason="pruned: MedianPruner")
        store.append(row)
    from_store = {b.key: b for b in L.build_boards(L.load_records(store.path))}
    from_json = {b.key: b for b in L.build_boards(L.load_records(pd.DataFrame(synthetic_records())))}
    for key in from_json:
        columns = ["regularizer", "test_mean", "rank"]
        assert from_store[key].table[columns].equals(from_json[key].table[columns])
    zo = from_store["digits"].table.set_index("regularizer").loc["zoneout"]
    assert zo["tuning_trials"] == 4 and zo["tuning_trials_ok"] == 3  # the pruned trial is not 'ok'
    assert zo["hidden_size"] == 48
    files = L.write_leaderboards(store.path, tmp_path / "out", store_label="s.sqlite", out_label="lb")
    assert "hidden size 48" in (tmp_path / "out" / "digits.md").read_text() and len(files) >= 6


def test_export_round_trip_and_row_order_give_identical_files(tmp_path):
    """A JSON export of the store, or the records in another order, give byte-identical leaderboards."""
    from benchmark.store import ResultsStore

    records = synthetic_records()
    for index, record in enumerate(records):  # values whose mean depends on summation order
        record["wall_time_s"] = 0.1 * (index + 1) / 3
        record["throughput"] = 1e5 / (index + 7)
    stores = []
    for name, order in (("a", records), ("b", list(reversed(records)))):
        store = ResultsStore(tmp_path / f"{name}.sqlite")
        for record in order:
            store.append(record)
        stores.append(store.path)
    exported = L.export_results(stores[0], tmp_path / "results.json")
    outputs = []
    for i, source in enumerate([stores[0], stores[1], exported]):
        files = L.write_leaderboards(source, tmp_path / f"out{i}", store_label="results.json", out_label="lb")
        outputs.append({p.name: p.read_bytes() for p in files})
    assert outputs[0] == outputs[1] == outputs[2]
    assert "0.2600 ± 0.0100" in outputs[0]["digits.md"].decode()  # real rows, not an empty board


def test_cli_subcommand(store_json, tmp_path, capsys):
    from benchmark import cli

    out = tmp_path / "lb"
    assert cli.main(["leaderboard", "--store", str(store_json), "--out", str(out),
                     "--export", str(tmp_path / "export.json")]) == 0
    assert (out / "README.md").exists() and (out / "digits.md").exists() and (tmp_path / "export.json").exists()
    assert cli.main(["leaderboard", "--store", str(tmp_path / "missing.sqlite"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"regbench leaderboard: error: results store {tmp_path / 'missing.sqlite'} does not exist "
                   "(run `regbench run` or `regbench study` first, or pass --store)"]


def test_the_committed_boards_are_what_the_committed_store_gives(tmp_path):
    """Every committed board comes from leaderboards/results.json, the export of real runs' store."""
    committed = Path(__file__).resolve().parents[1] / "leaderboards"
    written = L.write_leaderboards(committed / "results.json", tmp_path, store_label="leaderboards/results.json",
                                   out_label="leaderboards")
    for path in written:
        if path.suffix != ".png":  # plots depend on the matplotlib version; their numbers are in the JSON
            assert path.read_bytes() == (committed / path.name).read_bytes(), f"leaderboards/{path.name} is stale"


def test_a_new_regularizer_gets_the_shipped_baselines_beside_it(tmp_path):
    shipped = tmp_path / "shipped.json"
    shipped.write_text(json.dumps(_on_tracks(synthetic_records())))
    mine = [dict(_record("gaussian_zoneout", {"p": 0.1}, s, 0.2, v), track="digits/cpu-v1")
            for s, v in enumerate([0.21, 0.22, 0.20])]
    mine.append(dict(_record("none", {}, 7, 0.5, 0.5), track="digits/cpu-v1"))  # the user's own baseline wins
    store = tmp_path / "mine.json"
    store.write_text(json.dumps(mine))
    frame = L.track_records("digits/cpu-v1", store, shipped)
    assert set(frame[frame["shipped"]]["regularizer"]) == {"zoneout", "recurrent_dropout", "weight_noise"}
    assert set(frame[~frame["shipped"]]["regularizer"]) == {"gaussian_zoneout", "none"}
    path = L.write_track_board("digits/cpu-v1", store, tmp_path / "lb", shipped=shipped, plots=False)
    md = path.read_text()
    assert path.name == "digits-cpu-v1.md" and "`zoneout:z_cells=0.5,z_states=0.05` (shipped)" in md
    assert "| gaussian_zoneout |" in md and "`gaussian_zoneout:p=0.1` (shipped)" not in md


# ----------------------------------------------------------------------------- the parts of benchmark.boards


def test_records_are_read_under_the_store_names(store_json, tmp_path):
    from benchmark.boards.load import load_records
    from benchmark.records import FIELDS
    from benchmark.store import ResultsStore

    frame = load_records(store_json)
    assert list(frame.columns) == [*FIELDS, "tuning"]
    assert not {"params", "best_valid", "test_at_best", "curve", "curve_values", "extra", "hidden_size"} & set(frame)
    zo = frame[(frame["regularizer"] == "zoneout") & frame["tuning"]]
    assert len(zo) == 4 and {"z_cells": 0.5, "z_states": 0.05} in list(zo["hyperparameters"])
    assert isinstance(frame["val_curve"].iloc[0], list) and frame["best_val_metric"].dtype == float
    # a pruned trial keeps its own status, from a store as from a DataFrame
    store = ResultsStore(tmp_path / "s.sqlite")
    store.append(_record("zoneout", {"z_cells": 0.5}, 0, 0.4, None, study="s", trial=0, status="pruned"))
    assert list(load_records(store)["status"]) == list(load_records(store.path)["status"]) == ["pruned"]
    # the leaderboard's old names are not read as the new ones: they are refused
    old = dict(_record("none", {}, 0, 0.3, 0.3), params={})
    with pytest.raises(ValueError, match="params"):
        load_records(pd.DataFrame([old]))


def test_selection_on_validation_is_a_table(store_json):
    from benchmark.boards.tables import best_configuration, configurations

    frame = L.load_records(store_json)
    final = frame[(frame["task"] == "digits") & (frame["regularizer"] == "zoneout") & ~frame["tuning"]]
    table = configurations(final)
    assert list(table["spec"]) == ["zoneout:z_cells=0.1,z_states=0.05", "zoneout:z_cells=0.5,z_states=0.05"]
    assert list(table["n"]) == [2, 3]
    assert table["mean"].tolist() == pytest.approx([0.30, 0.25])
    assert table["std"].iloc[1] == pytest.approx(statistics.stdev([0.24, 0.26, 0.25]))
    # the lucky seed (0.20) does not win: the configuration with more seeds is compared first
    assert best_configuration(final) == "zoneout:z_cells=0.5,z_states=0.05"
    assert best_configuration(final[final["status"] != "ok"]) is None


def test_board_table_is_a_flat_dataframe_and_the_json_nests_it(store_json, tmp_path):
    boards = L.build_boards(L.load_records(store_json))
    digits = _board(boards, "digits")
    table = digits.table
    assert list(table["regularizer"]) == ["zoneout", "recurrent_dropout", "none", "weight_noise"]
    assert table["rank"].tolist()[:3] == [1, 2, 3] and table["rank"].isna().tolist()[3]
    L.write_leaderboards(store_json, tmp_path, plots=False)
    data = json.loads((tmp_path / "leaderboard.json").read_text())
    rows = {r["regularizer"]: r for b in data["boards"] if b["board"] == "digits" for r in b["rows"]}
    assert "rank" not in rows["weight_noise"] and rows["none"]["vs_none"] is None
    zo = table.set_index("regularizer").loc["zoneout"]
    assert zo["test_mean"] == pytest.approx(rows["zoneout"]["test_mean"], abs=1e-10) and zo["seeds"] == 3
    assert zo["vs_none_p_holm"] == pytest.approx(rows["zoneout"]["vs_none"]["p_holm"], abs=1e-10)
    assert zo["vs_none_difference"] == pytest.approx(np.mean([0.26, 0.27, 0.25]) - np.mean([0.31, 0.34, 0.30]))
    none = table.set_index("regularizer").loc["none"]
    assert math.isnan(none["vs_none_p"]) and none["vs_zoneout_p_holm"] == zo["vs_none_p_holm"]
    assert bool(zo["vs_none_significant"]) == (zo["vs_none_p_holm"] < 0.05)


def test_cross_task_ranking_from_the_boards():
    from benchmark.boards import cross_task, ranking_boards

    boards = L.build_boards(L.load_records(pd.DataFrame(_on_tracks(synthetic_records()))))
    assert [b.key for b in ranking_boards(boards)] == ["char_ptb-cpu-v1", "digits-cpu-v1"]
    summary = {r["regularizer"]: r for r in cross_task(boards)}
    assert summary["zoneout"]["ranks"] == {"char_ptb-cpu-v1": 1, "digits-cpu-v1": 1}
    assert summary["recurrent_dropout"]["mean_rank"] == 2.0 and summary["recurrent_dropout"]["boards"] == 1
    assert cross_task(L.build_boards(L.load_records(pd.DataFrame(synthetic_records())))) == []  # no tracks


def test_leaderboard_json_uses_the_record_names(store_json, tmp_path):
    L.write_leaderboards(store_json, tmp_path, plots=False)
    data = json.loads((tmp_path / "leaderboard.json").read_text())
    rows = [row for board in data["boards"] for row in board["rows"]]
    assert not any({"params", "curves", "val_curves"} & set(row) for row in rows)
    zo = next(r for b in data["boards"] if b["board"] == "digits" for r in b["rows"] if r["regularizer"] == "zoneout")
    assert zo["hyperparameters"] == {"z_cells": 0.5, "z_states": 0.05}


def test_the_command_is_one_module_re_exported():
    import argparse

    from benchmark.boards import command

    assert L.add_arguments is command.add_arguments and L.run is command.run and L.HELP == command.HELP
    parser = argparse.ArgumentParser()
    L.add_arguments(parser)
    args = parser.parse_args([])
    assert (args.store, args.out, args.track, args.export, args.no_plots) == (
        None, str(Path("regbench_runs") / "leaderboards"), None, None, False)
