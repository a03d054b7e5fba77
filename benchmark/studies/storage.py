"""Where studies live: opening a storage, its default, URL checks and redaction.

* No storage given: Optuna's journal file ``regbench_runs/studies.journal``
  (``JournalStorage(JournalFileBackend(path))``, Optuna's advice for several processes on one
  machine). A plain path is a journal file too.
* An SQLAlchemy URL (``sqlite:///file``, ``postgresql://user@host/db``) is an ``RDBStorage``
  with a heartbeat, for workers on several machines; every PostgreSQL query is timed
  (``benchmark.studies.storage_timeout``); an in-memory SQLite URL is refused.
* The old default ``regbench_runs/studies.sqlite``: when no storage is given and that file
  exists, it is used (and said once), so that existing studies stay where they are.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

__all__ = ["StudyError", "DEFAULT_STORAGE", "LEGACY_STORAGE", "STORAGE_ENV", "resolve_storage", "is_url",
           "open_storage", "redact", "load_study", "short"]

log = logging.getLogger("benchmark.study")

DEFAULT_STORAGE = "regbench_runs/studies.journal"  # a journal file: workers on this machine
LEGACY_STORAGE = "sqlite:///regbench_runs/studies.sqlite"  # the default before the journal file
STORAGE_ENV = "REGBENCH_STUDY_STORAGE"

# Keys of the study's user attrs that define what the study is about.
IDENTITY_KEYS = ("task", "regularizer", "preset", "scale", "seed")


class StudyError(RuntimeError):
    """A problem the user can fix (bad storage, wrong study name, ...); its message is one line."""


def short(error: BaseException) -> str:
    """``Type: first line of the message``, at most 300 characters."""
    text = str(error).strip().splitlines()
    first = text[0] if text else type(error).__name__
    return f"{type(error).__name__}: {first}"[:300]


_said_legacy = False


def resolve_storage(storage: str | None = None) -> str:
    """The storage to use: the one given, ``$REGBENCH_STUDY_STORAGE``, the old SQLite default where
    that file exists (said once), or the journal file."""
    global _said_legacy
    if storage or os.environ.get(STORAGE_ENV):
        return storage or os.environ[STORAGE_ENV]
    legacy = LEGACY_STORAGE[len("sqlite:///"):]
    if Path(legacy).is_file():
        if not _said_legacy:
            _said_legacy = True
            log.info("using the existing study storage %s (the default for new setups is the journal file %s)",
                     LEGACY_STORAGE, DEFAULT_STORAGE)
        return LEGACY_STORAGE
    return DEFAULT_STORAGE


def is_url(storage: str) -> bool:
    """An SQLAlchemy URL (RDB storage); anything else is the path of a journal file."""
    return "://" in storage


def redact(url: str) -> str:
    """The storage for messages: an URL without its password (SQLAlchemy's own rendering)."""
    if not is_url(url):
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        scheme = url.split("://", 1)[0]
        return url if "@" not in url else f"{scheme}://***"


def _quiet_optuna() -> None:
    import optuna

    # Errors only: every trial outcome gets its own line from this package (the traceback of a
    # failed run goes to its record), and Optuna's warning for a trial stopped by Ctrl-C would
    # print a traceback per worker.
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def open_storage(url: str, heartbeat: int | None = 10):
    """The Optuna storage for ``url`` (see the module's doc); StudyError when it can't be used.
    ``heartbeat``: seconds between heartbeats of an RDB storage, a trial stale after 3 missed ones
    (the journal file has no heartbeat: its workers are all on this machine, whose processes are
    checked directly)."""
    import optuna

    _quiet_optuna()
    if not is_url(url):
        from optuna.storages.journal import JournalFileBackend

        try:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(url)))
        except Exception as error:
            raise StudyError(f"cannot open the study storage {url}: {short(error)}") from None
    given = url
    engine_kwargs: dict[str, Any] = {}
    if url.split(":", 1)[0].split("+", 1)[0] == "sqlite":  # sqlite:// and sqlite+pysqlite:// alike
        _refuse_in_memory_sqlite(url)
        from sqlalchemy.engine import make_url

        Path(make_url(url).database).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif url.startswith("postgresql"):
        from .storage_timeout import connect_args, query_timeout

        try:
            query_timeout()  # a bad $REGBENCH_STORAGE_TIMEOUT is one line now, not an error mid-query
        except ValueError as error:
            raise StudyError(str(error)) from None

        url = _postgres_driver(url)
        engine_kwargs = {"connect_args": connect_args(url, redact(given)), "pool_pre_ping": True}
    kwargs: dict[str, Any] = {}
    if heartbeat:
        # A trial of a killed worker is failed by the heartbeat and its configuration run again.
        kwargs = {"heartbeat_interval": int(heartbeat), "grace_period": int(heartbeat) * 3}
    for attempt in range(6):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                if heartbeat:
                    kwargs["heartbeat_stale_trial_callback"] = retry_stale_trial()
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        except Exception as error:  # sqlalchemy errors, bad URLs, missing drivers
            # Processes that start together on a fresh database race to create its tables; the
            # loser sees a duplicate key ("UNIQUE constraint failed" on SQLite, "duplicate key" on
            # PostgreSQL) or an existing table, and simply opens the tables the winner made.
            message = str(error).lower()
            lost_race = (type(error).__name__ in ("IntegrityError", "ProgrammingError", "OperationalError")
                         and any(text in message for text in ("duplicate", "unique constraint", "already exists")))
            if attempt < 5 and lost_race:
                time.sleep(0.5 * (attempt + 1))
                continue
            raise StudyError(f"cannot open the study storage {redact(given)}: {short(error)}") from None
    raise AssertionError("unreachable")


def retry_stale_trial():
    """Optuna's callback that enqueues a stale trial's configuration again (a killed worker's trial
    is failed without an outcome; the configuration it was running is not lost)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)


def _refuse_in_memory_sqlite(url: str) -> None:
    """Refuse an in-memory SQLite storage: the study would vanish with the process (and every
    worker process would get a study of its own)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise StudyError(f"cannot open the study storage {redact(url)}: {short(error)}") from None
    database = parsed.database or ""
    if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
        raise StudyError(f"the study storage {redact(url)} is in memory and would vanish with this process; "
                         f"give a file, e.g. {DEFAULT_STORAGE}")


def _postgres_driver(url: str) -> str:
    """``postgresql://`` means psycopg (3) to SQLAlchemy 2.1; use psycopg2 whenever it is installed,
    since only its queries get the timeout of benchmark.studies.storage_timeout (psycopg 3's only connect)."""
    if not url.startswith("postgresql://"):
        return url
    try:
        importlib.import_module("psycopg2")
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    except ImportError:
        pass
    try:
        importlib.import_module("psycopg")
        return url
    except ImportError:
        raise StudyError("a postgresql:// storage needs a driver: pip install psycopg2-binary (or psycopg)") from None


def load_study(storage, study_name: str, identity: dict[str, Any] | None = None, *, create: bool = False,
               sampler=None, pruner=None):
    """Load (or with ``create`` make) the study; check that it belongs to ``identity`` (its task,
    regularizer, preset, scale and seed, kept in its user attrs)."""
    import optuna

    try:
        if create:
            study = optuna.create_study(storage=storage, study_name=study_name, direction="minimize",
                                        sampler=sampler, pruner=pruner, load_if_exists=True)
        else:
            study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        raise StudyError(f"no study named {study_name!r} in the storage; list them with "
                         f"optuna studies --storage URL, or run `regbench study` first") from None
    except Exception as error:
        raise StudyError(f"cannot open study {study_name!r}: {short(error)}") from None
    attrs = study.user_attrs
    if identity is not None:
        if not attrs.get("task"):
            if study.get_trials(deepcopy=False):
                raise StudyError(f"study {study_name!r} already has trials but was not made by regbench; "
                                 "choose another --study-name")
            for key, value in identity.items():
                study.set_user_attr(key, value)
            study.set_user_attr("regbench", 1)
        else:
            mismatched = [f"{key}={attrs.get(key)!r} (not {value!r})" for key, value in identity.items()
                          if key in attrs and str(attrs.get(key)) != str(value)]
            if mismatched:
                raise StudyError(f"study {study_name!r} belongs to another experiment: {', '.join(mismatched)}; "
                                 "choose another --study-name")
    return study
