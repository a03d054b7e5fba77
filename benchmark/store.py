"""The results store: one row per finished run, in SQLite.

Several processes (parallel suite workers, Optuna workers) may append at once: the database
is in WAL mode, every connection waits up to ``timeout`` seconds for a lock, and every append
is one ``BEGIN IMMEDIATE ... COMMIT`` transaction, so a record is either stored whole or not
at all, and a crash mid-run never damages what is there.

    store = ResultsStore("regbench_runs/results.sqlite")
    row_id = store.append({"task": "digits", "regularizer": "zoneout", ...})
    frame = store.dataframe()          # or benchmark.load_results(path)

Columns (see ``COLUMNS``); those in ``JSON_COLUMNS`` are stored as JSON text and come back
from :meth:`ResultsStore.dataframe` as Python objects. Keys of a record that are not columns
are kept in the ``extra`` JSON column.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from .cli import UsageError

__all__ = ["ResultsStore", "StoreError", "COLUMNS", "JSON_COLUMNS", "STATUSES", "default_store_path",
           "load_results"]

STORE_ENV = "REGBENCH_STORE"
DEFAULT_STORE = Path("regbench_runs") / "results.sqlite"
STATUSES = ("ok", "failed", "diverged")

# name -> SQLite type. Order is the column order of the table.
COLUMNS: dict[str, str] = {
    "created_at": "TEXT",  # ISO 8601, UTC
    "task": "TEXT",
    "regularizer": "TEXT",  # registered name
    "hyperparameters": "TEXT",  # JSON object: every hyperparameter of the regularizer
    "spec": "TEXT",  # regularizer.spec, e.g. "zoneout:z_cells=0.5,z_states=0.05,..."
    "cell": "TEXT",  # lstm | gru | rnn
    "seed": "INTEGER",
    "preset": "TEXT",
    "scale": "TEXT",  # tiny | small | paper | a number
    "dataset": "TEXT",
    "data_source": "TEXT",
    "data_checksum": "TEXT",
    "metric": "TEXT",  # bpc | perplexity | error_rate
    "direction": "TEXT",  # min (lower is better) | max
    "best_val_metric": "REAL",
    "test_metric": "REAL",  # on the test split, with the weights of the best validation epoch
    "best_epoch": "INTEGER",
    "epochs": "INTEGER",  # epochs trained
    "wall_time_s": "REAL",
    "throughput": "REAL",  # training tokens or samples per second
    "throughput_unit": "TEXT",  # chars/s | words/s | samples/s
    "val_curve": "TEXT",  # JSON list: validation metric after each epoch
    "train_loss_curve": "TEXT",  # JSON list: mean training loss of each epoch (training mode)
    "val_nll_curve": "TEXT",  # JSON list: validation NLL after each epoch (with the above: the overfitting gap)
    "track": "TEXT",  # the benchmark track (benchmark.tracks), e.g. digits/cpu-v1; empty for ad-hoc runs
    "status": "TEXT",  # ok | failed | diverged
    "reason": "TEXT",  # why it failed or diverged
    "study": "TEXT",  # Optuna study name, if any
    "trial": "INTEGER",  # Optuna trial number, if any
    "torch_version": "TEXT",
    "lightning_version": "TEXT",
    "regbench_version": "TEXT",
    "git_commit": "TEXT",
    "run_dir": "TEXT",
    "settings": "TEXT",  # JSON object: the resolved training settings (hidden size, lr, ...)
    "extra": "TEXT",  # JSON object: record keys that are not columns
}
JSON_COLUMNS = ("hyperparameters", "val_curve", "train_loss_curve", "val_nll_curve", "settings", "extra")


def default_store_path() -> Path:
    """``$REGBENCH_STORE`` or ``regbench_runs/results.sqlite`` under the current directory."""
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE)


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON; store them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


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

    @staticmethod
    def _row(record: dict[str, Any]) -> dict[str, Any]:
        row = {name: record.get(name) for name in COLUMNS}
        extra = {k: v for k, v in record.items() if k not in COLUMNS and k != "id"}
        if isinstance(row["extra"], dict):
            extra = {**row["extra"], **extra}
        row["extra"] = extra or None
        row["created_at"] = row["created_at"] or datetime.now(timezone.utc).isoformat(timespec="seconds")
        if row["status"] not in STATUSES:
            raise ValueError(f"record status must be one of {', '.join(STATUSES)}, got {row['status']!r}")
        for name in JSON_COLUMNS:
            if row[name] is not None and not isinstance(row[name], str):
                row[name] = json.dumps(_json_safe(row[name]), sort_keys=not name.endswith("_curve"))
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

    def append(self, record: dict[str, Any]) -> int:
        """Store one finished run in one transaction; returns its row id."""
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
        return int(cursor.lastrowid)

    def dataframe(self) -> pd.DataFrame:
        """All runs, oldest first, JSON columns decoded."""
        with self._connect() as connection:
            frame = pd.read_sql_query("SELECT * FROM runs ORDER BY id", connection)
        for name in JSON_COLUMNS:
            frame[name] = frame[name].map(lambda text: json.loads(text) if isinstance(text, str) else None)
        return frame

    def __len__(self) -> int:
        with self._connect() as connection:
            return int(connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0])

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"


def load_results(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The runs of the store at ``path`` (default: :func:`default_store_path`) as a DataFrame."""
    return ResultsStore(path).dataframe()
