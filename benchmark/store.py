"""The results store: one row per run, in SQLite, under the names of :class:`RunRecord`.

Several processes (parallel suite workers, Optuna workers) may append at once: the database
is in WAL mode, every connection waits up to ``timeout`` seconds for a lock, and every append
is one ``BEGIN IMMEDIATE ... COMMIT`` transaction, so a record is either stored whole or not
at all, and a crash mid-run never damages what is there.

    store = ResultsStore("regbench_runs/results.sqlite")
    row_id = store.append(record)      # a RunRecord, or a mapping of its field names
    store.records()                    # list[RunRecord], oldest first
    frame = store.dataframe()          # the same, one column per field (or benchmark.load_results)

The columns are the fields of :class:`benchmark.records.RunRecord`, in its order; lists and
dicts are JSON text. A store written by an older regbench (a ``failed`` row with
``extra.pruned``, the command in an ``extra`` column) is upgraded in place when opened, in one
transaction. A JSON export (:func:`export_json`, the form committed under ``leaderboards/``)
holds the same records, and :func:`read_records` reads either form.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from .errors import UsageError
from .records import FIELDS, JSON_FIELDS, STATUSES, RunRecord

__all__ = ["ResultsStore", "StoreError", "COLUMNS", "STATUSES", "default_store_path", "load_results",
           "read_records", "export_json", "upgrade_row"]

STORE_ENV = "REGBENCH_STORE"
DEFAULT_STORE = Path("regbench_runs") / "results.sqlite"


def _sql_type(annotation: str) -> str:
    if annotation.startswith(("int", "bool")):
        return "INTEGER"
    if annotation.startswith("float"):
        return "REAL"
    return "TEXT"  # text, and lists and dicts as JSON


# name -> SQLite type, in the record's field order (the id is the table's primary key).
COLUMNS: dict[str, str] = {f.name: _sql_type(str(f.type)) for f in dataclasses.fields(RunRecord)
                           if f.name != "id"}
_INTEGERS = tuple(name for name, kind in COLUMNS.items() if kind == "INTEGER")


def upgrade_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row of an older store, export or ``record.json`` under today's names: the keys of its
    ``extra`` column become fields, a ``failed`` row marked ``pruned`` gets the ``pruned`` status,
    and keys that are no field (the leaderboard's old copies ``params``, ``best_valid``,
    ``test_at_best``, ``curve``, ``versions``, ``hidden_size`` of fields that are there) are left out."""
    row = dict(row)
    extra = row.pop("extra", None)
    if isinstance(extra, str):
        extra = json.loads(extra)
    for key, value in (extra or {}).items():
        if key not in row or row[key] is None:
            row[key] = value
    if row.pop("pruned", False) and row.get("status") == "failed":
        row["status"] = "pruned"
    return {key: value for key, value in row.items() if key in FIELDS}


def default_store_path() -> Path:
    """``$REGBENCH_STORE`` or ``regbench_runs/results.sqlite`` under the current directory."""
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE)


class StoreError(UsageError, ValueError):
    """The store cannot be used (not a SQLite file, damaged, not writable); one line, nothing written."""


class ResultsStore:
    """Append-only table of finished runs in a SQLite file (created on first use).

    Opening checks the file (``PRAGMA quick_check``) and raises :class:`StoreError` for one that is
    not a store, is damaged or cannot be written, before anything uses it; it never replaces it.
    """

    def __init__(self, path: str | os.PathLike | None = None, timeout: float = 60.0) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self.timeout = timeout
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as connection:
                damage = [row[0] for row in connection.execute("PRAGMA quick_check")]
                if damage != ["ok"]:
                    raise sqlite3.DatabaseError(f"damaged: {damage[0]}")
                self._create_table(connection)
        except (sqlite3.Error, OSError) as error:
            if "locked" in str(error):  # busy, not broken: the caller's timeout applies
                raise
            reason = f"{type(error).__name__}: {str(error).strip() or 'unknown error'}"
            raise StoreError(f"cannot use the results store {self.path}: {reason}; "
                             "move it aside or pass another --store") from None

    def _connect(self) -> closing[sqlite3.Connection]:
        """A connection that closes at the end of a ``with`` block (sqlite3's own only commits)."""
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per append.
        connection = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        self._ensure_wal(connection)
        return closing(connection)

    def _ensure_wal(self, connection: sqlite3.Connection) -> None:
        """Put the file in WAL mode, once: the mode is stored in the file itself.

        Changing the mode needs the file to itself, and SQLite answers "database is locked" at
        once instead of waiting for it, so several processes opening a new store at the same
        moment retry here until ``timeout``.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    connection.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @staticmethod
    def _create_table(connection: sqlite3.Connection) -> None:
        columns = ", ".join(f"{name} {kind}" for name, kind in COLUMNS.items())
        connection.execute(f"CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY AUTOINCREMENT, {columns})")
        # A store written by an older regbench gains the new columns (empty for old rows).
        present = {row[1] for row in connection.execute("PRAGMA table_info(runs)")}
        for name, kind in COLUMNS.items():
            if name not in present:
                try:
                    connection.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
                except sqlite3.OperationalError as error:  # another process added it first
                    if "duplicate column" not in str(error):
                        raise
        if "extra" in present:
            ResultsStore._upgrade_rows(connection)

    @staticmethod
    def _upgrade_rows(connection: sqlite3.Connection) -> None:
        """Move what older versions kept in the ``extra`` column into fields (see upgrade_row), once."""
        connection.execute("BEGIN IMMEDIATE")
        try:
            rows = connection.execute("SELECT id, status, extra, " + ", ".join(FIELDS[:-1])
                                      + " FROM runs WHERE extra IS NOT NULL").fetchall()
            names = ["id", "status", "extra", *FIELDS[:-1]]
            for values in rows:
                old = dict(zip(names, values))
                new = upgrade_row(old)
                changed = {k: v for k, v in new.items() if k in COLUMNS and v != old.get(k)}
                changed = {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in changed.items()}
                # Keys that are no field of a record stay where they were: nothing stored is lost.
                extra = json.loads(old["extra"]) if isinstance(old["extra"], str) else {}
                left = {k: v for k, v in (extra or {}).items() if k not in FIELDS and k != "pruned"}
                changed["extra"] = json.dumps(left) if left else None
                assignments = ", ".join(f"{k} = ?" for k in changed)
                connection.execute(f"UPDATE runs SET {assignments} WHERE id = ?", [*changed.values(), old["id"]])
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    @staticmethod
    def _row(record: RunRecord | Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(record, RunRecord):
            record = RunRecord.from_dict(record)  # ValueError for an unknown key or status
        row = record.to_dict()
        del row["id"]
        row["created_at"] = row["created_at"] or datetime.now(timezone.utc).isoformat(timespec="seconds")
        for name in JSON_FIELDS:
            if row[name] is not None:
                row[name] = json.dumps(row[name], sort_keys=not name.endswith("_curve"))
        for name, kind in COLUMNS.items():
            if kind == "REAL" and row[name] is not None:
                row[name] = float(row[name])
            elif name == "scale" and row[name] is not None:
                row[name] = str(row[name])
        return row

    def check_writable(self) -> None:
        """Raise StoreError unless a row can be appended: SQLite opens a read-only file without a
        word and refuses only the first write, which would come after a whole training run."""
        try:
            with self._connect() as connection:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    connection.execute("INSERT INTO runs (status) VALUES ('ok')")
                finally:
                    connection.execute("ROLLBACK")
        except sqlite3.Error as error:
            raise StoreError(f"results store {self.path} cannot be written ({error}); make it writable or "
                             "choose another --store") from None

    def append(self, record: RunRecord | Mapping[str, Any]) -> int:
        """Store one run in one transaction; returns its row id (a RunRecord gets it as ``id``)."""
        row = self._row(record)
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._connect() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                cursor = connection.execute(f"INSERT INTO runs ({names}) VALUES ({marks})", list(row.values()))
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        row_id = int(cursor.lastrowid)
        if isinstance(record, RunRecord):
            record.id, record.created_at = row_id, row["created_at"]
        return row_id

    def records(self) -> list[RunRecord]:
        """Every run, oldest first."""
        with self._connect() as connection:
            connection.row_factory = sqlite3.Row
            rows = connection.execute(f"SELECT id, {', '.join(COLUMNS)} FROM runs ORDER BY id").fetchall()
        return [_from_row(dict(row)) for row in rows]

    def dataframe(self) -> pd.DataFrame:
        """Every run, oldest first: one column per field of RunRecord."""
        return records_frame(self.records())

    def __len__(self) -> int:
        with self._connect() as connection:
            return int(connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0])

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"


def _from_row(row: dict[str, Any]) -> RunRecord:
    for name in JSON_FIELDS:
        if isinstance(row.get(name), str):
            row[name] = json.loads(row[name])
    if row.get("resumed") is not None:
        row["resumed"] = bool(row["resumed"])
    else:
        row.pop("resumed", None)
    return RunRecord.from_dict(row)


def records_frame(records: Iterable[RunRecord]) -> pd.DataFrame:
    """Records as a DataFrame, one column per field, in the field order."""
    frame = pd.DataFrame([r.to_dict() for r in records], columns=list(FIELDS))
    for name in _INTEGERS:  # nullable integers, not floats with NaN for the missing ones
        if name != "resumed":
            frame[name] = frame[name].astype("Int64")
    return frame


def read_records(path: str | os.PathLike) -> list[RunRecord]:
    """The records of a store's SQLite file or of a JSON export (older forms are upgraded)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"results store {path} does not exist")
    if path.suffix == ".json":
        rows = json.loads(path.read_text())
        return [RunRecord.from_dict({k: v for k, v in upgrade_row(row).items()}) for row in rows]
    return ResultsStore(path).records()


def export_json(records: Iterable[RunRecord], path: str | os.PathLike) -> Path:
    """Write ``records`` to a JSON file, sorted and stable: the form committed beside the leaderboards."""
    rows = [r.to_dict() for r in records]
    rows.sort(key=lambda r: json.dumps(r, sort_keys=True))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(rows, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)  # a reader never sees half a file
    return path


def load_results(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The runs of the store at ``path`` (default: :func:`default_store_path`; a JSON export too) as a DataFrame."""
    return records_frame(read_records(path if path is not None else default_store_path()))
