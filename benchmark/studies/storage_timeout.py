"""A time limit on every query to a PostgreSQL study storage, so that a study never hangs on it.

Connecting has libpq's ``connect_timeout``, but a server that stops answering mid-study (stopped,
frozen, its machine gone while the TCP connection stays open) would leave a query waiting
forever: PostgreSQL's own ``statement_timeout`` runs on the server, and TCP keepalives are
answered by the server's kernel. So every blocking call of the psycopg2 connections that
:func:`connect_args` makes (execute, commit, rollback, SQLAlchemy's pings included) notes when it
started, and a watchdog thread ends the process with one line when one has waited longer than
the limit: the study then stops with a clear message instead of hanging, and rerunning the
command resumes it (its trial left RUNNING is failed as its worker is gone). The timed
connections are psycopg2's (the driver regbench picks when psycopg 3 is absent); with psycopg 3
only connecting is timed.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any

__all__ = ["TIMEOUT_ENV", "DEFAULT_TIMEOUT", "query_timeout", "connect_args"]

TIMEOUT_ENV = "REGBENCH_STORAGE_TIMEOUT"
DEFAULT_TIMEOUT = 120.0  # seconds a storage query may wait for the server
CONNECT_TIMEOUT = 10  # seconds, libpq's connect_timeout

_waiting: dict[int, tuple[float, str]] = {}  # thread -> (when its call started, the storage, redacted)
_watchdog_lock = threading.Lock()
_watchdog: threading.Thread | None = None


def query_timeout() -> float:
    """``$REGBENCH_STORAGE_TIMEOUT`` seconds, or the default; ValueError for anything but a positive number
    (a silent default would leave a user who asked for a short limit waiting the long one)."""
    text = os.environ.get(TIMEOUT_ENV)
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"${TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return value


def _watch(limit: float) -> None:
    while True:
        time.sleep(min(1.0, limit / 4))
        now = time.monotonic()
        for started, storage in list(_waiting.values()):
            if now - started > limit:
                print(f"regbench study: error: the study storage {storage} has not answered a query for "
                      f"{limit:.0f} s (server stopped or unreachable?); stopping. Rerun the same command to "
                      "resume once it answers", file=sys.stderr, flush=True)
                os._exit(3)


@contextmanager
def _timed(storage: str):
    global _watchdog
    if _watchdog is None:
        with _watchdog_lock:
            if _watchdog is None:
                _watchdog = threading.Thread(target=_watch, args=(query_timeout(),), daemon=True,
                                             name="regbench-storage-watchdog")
                _watchdog.start()
    key = threading.get_ident()
    _waiting[key] = (time.monotonic(), storage)
    try:
        yield
    finally:
        _waiting.pop(key, None)


def _psycopg2_classes(storage: str):
    from psycopg2 import extensions

    class TimedCursor(extensions.cursor):
        def execute(self, query, vars=None):
            with _timed(storage):
                return super().execute(query, vars)

        def executemany(self, query, vars_list):
            with _timed(storage):
                return super().executemany(query, vars_list)

    class TimedConnection(extensions.connection):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.cursor_factory = TimedCursor

        def commit(self):
            with _timed(storage):
                return super().commit()

        def rollback(self):
            with _timed(storage):
                return super().rollback()

    return TimedConnection


def connect_args(url: str, storage: str) -> dict[str, Any]:
    """SQLAlchemy ``connect_args`` for a PostgreSQL ``url``: the connect timeout and, with psycopg2,
    timed connections (``storage`` is the URL without its password, for the message)."""
    args: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT}
    if url.startswith("postgresql+psycopg2://"):
        args["connection_factory"] = _psycopg2_classes(storage)
    return args
