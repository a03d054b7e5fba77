"""The SQLite results store: round trip, validation, concurrent appends from several processes."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchmark  # noqa: E402
from benchmark.records import FIELDS, RunRecord  # noqa: E402
from benchmark.store import COLUMNS, ResultsStore, default_store_path, export_json, read_records  # noqa: E402


def a_record(**changes):
    record = {"task": "digits", "regularizer": "zoneout", "hyperparameters": {"z_cells": 0.5, "z_states": 0.05},
              "spec": "zoneout:z_cells=0.5,z_states=0.05", "cell": "lstm", "seed": 0, "preset": "cpu",
              "scale": "tiny", "metric": "error_rate", "direction": "min", "best_val_metric": 0.25,
              "test_metric": 0.3, "val_curve": [0.5, 0.25], "status": "ok"}
    record.update(changes)
    return record


def test_round_trip_keeps_every_field_under_its_name(tmp_path):
    store = ResultsStore(tmp_path / "sub" / "results.sqlite")
    first = store.append(a_record(command="regbench run --task digits", val_curve=[1.0, float("nan")]))
    second = store.append(a_record(seed=1, scale=0.25, study="s", trial=3, resumed=True))
    assert (first, second) == (1, 2) and len(store) == 2
    frame = benchmark.load_results(tmp_path / "sub" / "results.sqlite")
    assert list(frame.columns) == list(FIELDS) and list(COLUMNS) == [f for f in FIELDS if f != "id"]
    assert frame.loc[0, "hyperparameters"] == {"z_cells": 0.5, "z_states": 0.05}
    assert frame.loc[0, "val_curve"] == [1.0, None]  # NaN is not JSON: stored as null
    assert frame.loc[0, "command"] == "regbench run --task digits"
    assert frame.loc[1, "scale"] == "0.25" and frame.loc[1, "study"] == "s" and frame.loc[1, "trial"] == 3
    assert frame.loc[0, "created_at"].endswith("+00:00")
    records = store.records()
    assert records[1].resumed is True and records[0].resumed is False and records[1].id == 2
    # What the store gives back is what was appended, field for field.
    again = a_record(seed=1, scale="0.25", study="s", trial=3, resumed=True)
    assert {k: v for k, v in records[1].to_dict().items() if k not in ("id", "created_at") and v is not None} == \
        {k: v for k, v in again.items() if v is not None} | {"resumed": True}
    assert sqlite3.connect(tmp_path / "sub" / "results.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_record_needs_a_valid_status_and_known_fields(tmp_path):
    store = ResultsStore(tmp_path / "results.sqlite")
    with pytest.raises(ValueError, match="status"):
        store.append(a_record(status="great"))
    with pytest.raises(ValueError, match="best_valid.*the fields are"):
        store.append(a_record(best_valid=0.2))
    assert len(store) == 0


def test_a_record_appended_gets_its_id(tmp_path):
    store = ResultsStore(tmp_path / "results.sqlite")
    record = RunRecord.from_dict(a_record())
    assert not record.stored
    store.append(record)
    assert record.stored and record.id == 1 and record.created_at


def test_a_store_of_an_older_version_is_upgraded_in_place(tmp_path):
    """Before run records had one schema, a pruned trial was a failed row with extra.pruned, and
    the command, resumed flag and rerun trial lived in the extra column."""
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, task TEXT, regularizer TEXT, "
                           "status TEXT, reason TEXT, extra TEXT)")
        connection.execute("INSERT INTO runs (task, regularizer, status, reason, extra) VALUES "
                           "('digits', 'none', 'failed', 'pruned: after epoch 2', "
                           "'{\"pruned\": true, \"command\": \"regbench study\", \"mine\": 1}')")
        connection.execute("INSERT INTO runs (task, regularizer, status, extra) VALUES "
                           "('digits', 'none', 'ok', '{\"resumed\": true, \"rerun_of_trial\": 4}')")
        connection.execute("INSERT INTO runs (task, regularizer, status) VALUES ('digits', 'none', 'failed')")
    records = ResultsStore(path).records()
    assert [r.status for r in records] == ["pruned", "ok", "failed"]
    assert records[0].command == "regbench study" and records[1].resumed and records[1].rerun_of_trial == 4
    with sqlite3.connect(path) as connection:  # a key that is no field is kept, not lost
        assert [row[0] for row in connection.execute("SELECT extra FROM runs ORDER BY id")] == \
            ['{"mine": 1}', None, None]
    assert [r.status for r in ResultsStore(path).records()] == ["pruned", "ok", "failed"]  # once


def test_an_older_json_export_reads_under_todays_names(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps([{**a_record(status="failed"), "best_valid": 0.25, "params": "{}", "curve": "[]",
                                 "extra": {"pruned": True, "command": "regbench study"}}]))
    (record,) = read_records(path)
    assert record.status == "pruned" and record.command == "regbench study" and record.best_val_metric == 0.25
    export_json([record], tmp_path / "new.json")
    assert read_records(tmp_path / "new.json") == [record]


def test_default_path_is_under_the_current_directory(monkeypatch):
    monkeypatch.delenv("REGBENCH_STORE", raising=False)
    assert default_store_path() == Path("regbench_runs") / "results.sqlite"
    monkeypatch.setenv("REGBENCH_STORE", "/somewhere/else.sqlite")
    assert default_store_path() == Path("/somewhere/else.sqlite")


def test_an_older_store_gains_the_new_columns(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, task TEXT, status TEXT)")
        connection.execute("INSERT INTO runs (task, status) VALUES ('digits', 'ok')")
    store = ResultsStore(path)
    store.append(a_record())
    frame = store.dataframe()
    assert len(frame) == 2 and frame.loc[1, "spec"].startswith("zoneout") and pd.isna(frame.loc[0, "spec"])


def _append_many(path: str, worker: int, count: int, start) -> None:
    start.wait()  # all workers write at the same moment
    store = ResultsStore(path)
    for index in range(count):
        store.append(a_record(seed=index, trial=worker, study="concurrency"))


def test_concurrent_appends_from_several_processes_lose_nothing(tmp_path):
    path = str(tmp_path / "results.sqlite")
    workers, count = 4, 30
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(workers)
    processes = [context.Process(target=_append_many, args=(path, worker, count, start)) for worker in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    frame = ResultsStore(path).dataframe()
    assert len(frame) == workers * count
    assert set(zip(frame["trial"], frame["seed"])) == {(w, i) for w in range(workers) for i in range(count)}
    assert frame["id"].is_unique


def test_a_store_that_cannot_be_written_is_found_before_any_run(tmp_path, monkeypatch):
    """SQLite opens a read-only file without complaint; only the first append, after training, fails.
    (Read-only here through SQLite's own mode=ro: permission bits do not stop root, who runs CI.)"""
    from contextlib import closing

    from benchmark.store import StoreError

    path = tmp_path / "results.sqlite"
    store = ResultsStore(path)
    store.append({"task": "digits", "regularizer": "none", "status": "ok"})
    store.check_writable()  # a writable store passes, and the probe leaves no row
    assert len(store) == 1
    monkeypatch.setattr(ResultsStore, "_connect", lambda self: closing(
        sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)))
    with pytest.raises(StoreError, match="cannot be written"):
        store.check_writable()
    assert len(store) == 1
