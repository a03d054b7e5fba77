"""Optuna studies over a regularizer's declared search space, and seeded reruns of the best.

    regbench study --task digits --regularizer zoneout --trials 20
    regbench study --task digits --all --trials 6 --seeds 3      # every regularizer, equal budget
    regbench run --from-study digits-zoneout-paper-tiny --seeds 3

Protocol and behaviour
----------------------
* Search space: ``regularizers.get(R).search_space(trial)``. Every trial trains with the same
  seed (``--seed``, default 0) so that configurations are compared on equal terms; the sampler
  is a ``TPESampler`` seeded from ``--seed`` and the trial's position, so a study run in one go
  and one interrupted and resumed propose the same sequence.
* Budget: ``--trials N`` is the number of trials the study must hold *with an outcome*
  (finished, diverged, pruned or failed with a recorded reason). Rerunning the same command
  resumes the study (``load_if_exists``) and runs only the trials still missing. A trial left
  RUNNING by a killed worker is failed by the storage's heartbeat (``fail_stale_trials``) or,
  when that worker ran on this machine, as soon as its process is gone, with or without a
  heartbeat; it has no outcome and is run again. A RUNNING trial that cannot be judged (a
  worker elsewhere without a heartbeat) gets one line saying why the study waits for it. An
  equal budget N for every regularizer of a task is the protocol (``run_task_suite``, ``--all``).
* Nothing to tune (``none``, ``recurrent_batchnorm``: an empty search space): the study runs its
  one configuration once, as trial 0, whatever N is; spending N trials on one configuration
  would only pick a lucky run. Its variance comes from the seeded reruns like everyone else's.
* Outcomes: a run that diverges (NaN; the runner returns status ``diverged``) completes with
  the value ``+inf``: it is an honest result of that configuration and tells TPE to avoid the
  region. A run that raises is ``TrialState.FAIL`` with the reason in the trial's user attrs.
  Either way the study goes on, and the record (with ``study`` and ``trial``) lands in the
  results store; pruned trials are stored with status ``pruned`` and a reason that says after
  which epoch (the leaderboard counts them as pruned tuning trials).
* Pruning: ``MedianPruner`` on the validation metric after each epoch, through
  :func:`pruning_callback`, a ``lightning.pytorch.Callback`` that calls ``trial.report`` /
  ``trial.should_prune`` and stops the trainer cleanly (the partial run is then recorded and
  the trial marked PRUNED).
* Storage: ``sqlite:///regbench_runs/studies.sqlite`` by default; any SQLAlchemy URL, e.g.
  ``postgresql://user@host/db`` for workers on several machines (every query is timed:
  ``benchmark.storage_timeout``); an in-memory SQLite URL is refused. ``--workers K`` runs K
  processes sharing the storage on this machine, no more than there are trials to run; Ctrl-C
  stops them all with one line, their trials failed without an outcome (run again next time).
  The study's user attrs hold its task, regularizer, preset, scale and seed; reusing a study
  name for anything else is refused.

Public functions: :func:`run_study`, :func:`run_task_suite`, :func:`rerun_best`,
:func:`best_configuration`, :func:`open_storage`, :func:`load_study`, :func:`pruning_callback`,
:func:`default_study_name`; CLI glue :func:`add_arguments` / :func:`run` and
:func:`add_from_study_arguments` / :func:`run_from_study`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import shlex
import signal
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .records import RunRecord

__all__ = [
    "DEFAULT_STORAGE", "StudyError", "StudyConfig", "StudySummary", "open_storage", "load_study",
    "default_study_name", "run_study", "run_task_suite", "best_configuration", "rerun_best",
    "pruning_callback", "tiny_run", "add_arguments", "run", "add_from_study_arguments", "run_from_study",
]

HELP = "tune a regularizer with an Optuna study (equal budget per regularizer with --all)"
DEFAULT_STORAGE = "sqlite:///regbench_runs/studies.sqlite"
STORAGE_ENV = "REGBENCH_STUDY_STORAGE"
MONITOR = "val_metric"

# Keys of the study's user attrs that define what the study is about.
IDENTITY_KEYS = ("task", "regularizer", "preset", "scale", "seed")


class StudyError(RuntimeError):
    """A problem the user can fix (bad storage, wrong study name, ...); its message is one line."""


USER_ERRORS = (StudyError,)


class TrialFailed(Exception):
    """Raised inside an objective to mark the trial FAIL after its record was stored."""


class SurplusTrial(Exception):
    """This trial would exceed the budget (another worker took the last slot): FAIL, no outcome."""


# ----------------------------------------------------------------------------- configuration


@dataclass
class StudyConfig:
    task: str
    regularizer: str
    trials: int
    storage: str | None = None
    study_name: str | None = None
    seed: int = 0
    preset: str | None = None
    scale: str | None = None
    run_options: dict[str, Any] = field(default_factory=dict)  # epochs, data_dir, ... for the runner
    store: str | None = None  # results store path; None = the runner's default
    workers: int = 1
    threads: int = 1  # torch threads per worker: the native loops slow down many times over on shared cores
    prune: bool = True
    startup_trials: int | None = None  # random trials before TPE; default min(10, max(2, N // 3))
    heartbeat: int = 10  # seconds between heartbeats; stale after 3 missed ones
    run_fn: str | Callable | None = None  # "module:function" (see tiny_run) or None for the runner
    poll: float = 2.0  # seconds between checks while other workers hold the last trials
    verbose: bool = True
    command: str | None = None  # the command line that runs this study, kept in every record

    def resolved_name(self) -> str:
        track = self.run_options.get("track")
        if self.study_name:
            return self.study_name
        if track:  # "digits/cpu-v1" -> "digits-cpu-v1-zoneout"
            return f"{track.replace('/', '-')}-{self.regularizer}"
        return default_study_name(self.task, self.regularizer, self.preset, self.scale)

    def resolved_storage(self) -> str:
        return self.storage or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE

    def identity(self) -> dict[str, Any]:
        return {"task": self.task, "regularizer": self.regularizer, "preset": self.preset or "",
                "scale": "" if self.scale is None else str(self.scale), "seed": int(self.seed)}


@dataclass
class StudySummary:
    study_name: str
    storage: str
    target: int
    outcomes: dict[str, int]
    best_value: float | None
    best_params: dict[str, Any] | None
    best_trial: int | None

    def line(self) -> str:
        counts = ", ".join(f"{v} {k}" for k, v in sorted(self.outcomes.items()) if v)
        done = sum(self.outcomes.values())
        best = ("no finished trial" if self.best_value is None else
                f"best {self.best_value:.4f} (trial {self.best_trial}, {json.dumps(self.best_params, sort_keys=True)})")
        return f"study {self.study_name}: {done}/{self.target} trials ({counts or 'none'}); {best}"


def default_study_name(task: str, regularizer: str, preset: str | None = None, scale: Any = None) -> str:
    parts = [task, regularizer]
    if preset:
        parts.append(str(preset))
    if scale not in (None, ""):
        parts.append(str(scale))
    return "-".join(parts)


def _search_space_is_empty(regularizer: str) -> bool:
    import optuna
    import regularizers

    cls = regularizers.get(regularizer)
    probe = optuna.trial.FixedTrial({})
    try:
        return not cls.search_space(probe)
    except ValueError:  # FixedTrial has no value for a suggested parameter: the space is not empty
        return False


# ----------------------------------------------------------------------------- storage


def _quiet_optuna() -> None:
    import optuna

    # Errors only: every trial outcome gets its own line from this module (the traceback of a
    # failed run goes to its record), and Optuna's warning for a trial stopped by Ctrl-C would
    # print a traceback per worker.
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else type(error).__name__
    return f"{type(error).__name__}: {first}"[:300]


def open_storage(url: str, heartbeat: int | None = 10):
    """An Optuna ``RDBStorage`` for ``url`` with a heartbeat; StudyError when it can't be used."""
    import optuna

    _quiet_optuna()
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
        engine_kwargs = {"connect_args": connect_args(url, _redact(given)), "pool_pre_ping": True}
    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs = {"heartbeat_interval": int(heartbeat), "grace_period": int(heartbeat) * 3}
    for attempt in range(6):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
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
            raise StudyError(f"cannot open the study storage {_redact(given)}: {_short(error)}") from None
    raise AssertionError("unreachable")


def _refuse_in_memory_sqlite(url: str) -> None:
    """Refuse an in-memory SQLite storage: the study would vanish with the process (and every
    worker process would get a study of its own)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise StudyError(f"cannot open the study storage {url}: {_short(error)}") from None
    database = parsed.database or ""
    if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
        raise StudyError(f"the study storage {url} is in memory and would vanish with this process; "
                         f"give a file, e.g. {DEFAULT_STORAGE}")


def _postgres_driver(url: str) -> str:
    """``postgresql://`` means psycopg (3) to SQLAlchemy 2.1; use psycopg2 whenever it is installed,
    since only its queries get the timeout of benchmark.storage_timeout (psycopg 3's only connect)."""
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


def _redact(url: str) -> str:
    """The URL without a password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}@{host}"
    return url


def load_study(storage, study_name: str, identity: dict[str, Any] | None = None, *, create: bool = False,
               seed: int = 0, prune: bool = True, startup: int = 5, warmup: int = 1):
    """Load (or with ``create`` make) the study; check that it belongs to ``identity``.

    ``warmup``: epochs a trial runs before the pruner may stop it. Early epochs rank configurations
    by noise (digits' validation error is still 0.7-0.9 after two), so studies pass half the epochs.
    """
    import optuna

    pruner = (optuna.pruners.MedianPruner(n_startup_trials=max(2, startup), n_warmup_steps=max(1, warmup))
              if prune else optuna.pruners.NopPruner())
    sampler = optuna.samplers.TPESampler(seed=seed)
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
        raise StudyError(f"cannot open study {study_name!r}: {_short(error)}") from None
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


# ----------------------------------------------------------------------------- pruning


class _Reporter:
    """Reports the validation metric to the trial each epoch and remembers a pruning decision."""

    def __init__(self, trial, monitor: str = MONITOR) -> None:
        self.trial = trial
        self.monitor = monitor
        self.pruned_at: int | None = None
        self.last_value: float | None = None

    def report(self, epoch: int, value: float) -> bool:
        """Report ``value`` for ``epoch``; True when the trial should stop now."""
        if value is None or math.isnan(value):
            return False
        self.last_value = float(value)
        self.trial.report(float(value), step=int(epoch))
        if self.trial.should_prune():
            self.pruned_at = int(epoch)
            return True
        return False


_CALLBACK_CLASS = None


def pruning_callback(trial, monitor: str = MONITOR):
    """A ``lightning.pytorch.Callback`` that reports ``monitor`` after every validation epoch.

    When the pruner says stop it sets ``trainer.should_stop`` rather than raising, so the runner
    finishes and returns its record normally; ``callback.pruned_at`` then holds the epoch.
    """
    global _CALLBACK_CLASS
    if _CALLBACK_CLASS is None:
        from lightning.pytorch import Callback

        class OptunaPruning(Callback, _Reporter):
            def __init__(self, trial, monitor: str = MONITOR) -> None:
                Callback.__init__(self)
                _Reporter.__init__(self, trial, monitor)

            def on_validation_end(self, trainer, pl_module) -> None:
                if trainer.sanity_checking:
                    return
                value = trainer.callback_metrics.get(self.monitor)
                if value is None:
                    return
                if self.report(trainer.current_epoch, float(value)):
                    trainer.should_stop = True

        _CALLBACK_CLASS = OptunaPruning
    return _CALLBACK_CLASS(trial, monitor)


# ----------------------------------------------------------------------------- running one configuration


def _resolve_run_fn(run_fn):
    if run_fn is None:
        return _runner_run
    if callable(run_fn):
        return run_fn
    module, _, name = str(run_fn).partition(":")
    return getattr(importlib.import_module(module), name)


def _run_fn_label(run_fn) -> str | None:
    if run_fn is None or isinstance(run_fn, str):
        return run_fn
    return f"{run_fn.__module__}:{run_fn.__qualname__}"


def _runner_run(request: dict[str, Any], callbacks: list) -> RunRecord:
    """Run one configuration with the real runner (benchmark.runner.run_experiment)."""
    from . import runner

    config = _run_config(request)
    # store=False: the study appends the record itself, after marking pruned trials as such.
    return runner.run_experiment(config, callbacks=tuple(callbacks), store=False)


def _run_config(request: dict[str, Any]):
    from . import runner

    names = {f.name for f in dataclasses.fields(runner.RunConfig)}
    values: dict[str, Any] = {}
    for key, value in request.items():
        if key in names and value is not None:
            values[key] = value
    if "regularizer" in names:
        values["regularizer"] = request["spec"]
    values.pop("params", None)  # the spec carries every hyperparameter
    if "progress_bar" in names:
        values["progress_bar"] = False
    return runner.RunConfig(**values)


def _spec(regularizer: str, params: dict[str, Any]) -> str:
    import regularizers

    return regularizers.build(regularizer, **params).spec


def _failure_record(request: dict[str, Any], reason: str) -> RunRecord:
    import regularizers

    try:
        hyperparameters = regularizers.build(request["regularizer"], **request.get("params", {})).params
    except Exception:
        hyperparameters = dict(request.get("params", {}))
    return RunRecord(
        task=request["task"], regularizer=request["regularizer"], hyperparameters=hyperparameters,
        spec=request.get("spec", request["regularizer"]), seed=request.get("seed"), track=request.get("track"),
        preset=request.get("preset"), scale=None if request.get("scale") is None else str(request["scale"]),
        status="failed", reason=reason)


def _as_record(result: RunRecord | Mapping[str, Any]) -> RunRecord:
    """What a run function returned, as a record (a test's run function may return a mapping)."""
    return result if isinstance(result, RunRecord) else RunRecord.from_dict(result)


def _open_store(path):
    from .store import ResultsStore

    return ResultsStore(path)


# ----------------------------------------------------------------------------- the study loop


def _counted(trial) -> bool:
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "outcome" in trial.user_attrs


def _outcomes(study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        if _counted(trial):
            outcome = trial.user_attrs.get("outcome") or trial.state.name.lower()
            counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def _target(config: StudyConfig) -> int:
    return 1 if _search_space_is_empty(config.regularizer) else int(config.trials)


def _log(config: StudyConfig, text: str) -> None:
    if config.verbose:
        print(text, flush=True)


def _objective(config: StudyConfig, study_name: str, target: int, store, worker: int):
    import optuna
    import regularizers

    run_fn = _resolve_run_fn(config.run_fn)
    cls = regularizers.get(config.regularizer)

    def objective(trial) -> float:
        global _in_objective
        _in_objective = True
        try:
            if _stopping:  # stopped while Optuna created this trial: it fails it now
                raise KeyboardInterrupt
            return run_trial(trial)
        finally:
            _in_objective = False

    def run_trial(trial) -> float:
        from optuna.trial import TrialState

        # First, so that a worker killed at any later point leaves a trial that can be judged.
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        trial.set_user_attr("worker_started", _process_started(os.getpid()))
        ahead = sum(1 for t in trial.study.get_trials(deepcopy=False)
                    if t.number < trial.number and (_counted(t) or t.state == TrialState.RUNNING))
        if ahead >= target:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"budget of {target} trials already taken")
        params = cls.search_space(trial, cell_type=config.run_options.get("cell", "lstm"))
        spec = _spec(config.regularizer, params)
        trial.set_user_attr("spec", spec)
        trial.set_user_attr("heartbeat", int(config.heartbeat or 0))  # whether a kill can be told from the storage
        request = {"task": config.task, "regularizer": config.regularizer, "params": params, "spec": spec,
                   "seed": config.seed, "preset": config.preset, "scale": config.scale, **config.run_options,
                   "run_name": f"{study_name}-trial{trial.number}", "resume": False}
        reporter = pruning_callback(trial) if config.run_fn is None else _Reporter(trial)
        extra = {"study": study_name, "trial": trial.number}
        if config.command:
            extra["command"] = config.command
        try:
            record = _as_record(run_fn(request, [reporter] if config.prune else []))
        except OSError as error:  # the environment's fault (a full disk): no record, no outcome, one line
            raise StudyError(f"trial {trial.number} could not run: {_short(error)}; fix that and rerun the "
                             "same command to resume") from None
        except Exception as error:
            reason = _short(error)
            record = _failure_record(request, reason).replace(**extra, traceback=traceback.format_exc(limit=8))
            if store is not None:
                store.append(record)
            trial.set_user_attr("outcome", "failed")
            trial.set_user_attr("reason", reason)
            _log(config, f"[{study_name}] trial {trial.number} failed: {reason}")
            raise TrialFailed(reason) from None
        record = record.replace(**extra)
        status, value = record.status, record.best_val_metric
        if reporter.pruned_at is not None and status == "ok":
            reason = f"pruned: MedianPruner stopped it after epoch {reporter.pruned_at}"
            record = record.replace(status="pruned", reason=reason)
            if store is not None:
                store.append(record)
            trial.set_user_attr("outcome", "pruned")
            _log(config, f"[{study_name}] trial {trial.number} {spec}: {reason}")
            raise optuna.TrialPruned(reason)
        if store is not None:
            store.append(record)
        if status == "diverged" or (status == "ok" and (value is None or math.isnan(value))):
            trial.set_user_attr("outcome", "diverged")
            trial.set_user_attr("reason", str(record.reason or "NaN validation metric"))
            _log(config, f"[{study_name}] trial {trial.number} {spec}: diverged ({record.reason}); value +inf")
            return float("inf")
        if status != "ok":
            reason = str(record.reason or status)
            trial.set_user_attr("outcome", "failed")
            trial.set_user_attr("reason", reason)
            _log(config, f"[{study_name}] trial {trial.number} {spec}: failed ({reason})")
            raise TrialFailed(reason)
        trial.set_user_attr("outcome", "ok")
        _log(config, f"[{study_name}] trial {trial.number} {spec}: {value:.4f}")
        return float(value)

    return objective


def _sampler(config: StudyConfig, worker: int, position: int, target: int):
    import optuna

    startup = config.startup_trials if config.startup_trials is not None else min(10, max(2, target // 3))
    seed = (int(config.seed) * 1_000_003 + worker * 10_007 + position) % (2**32)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)


def _work(config: StudyConfig, worker: int = 0) -> None:
    """One worker: run trials until the study holds ``target`` trials with an outcome; a storage
    that fails mid-study (its server gone, a connection that cannot be made) is a StudyError."""
    from sqlalchemy.exc import DBAPIError

    try:
        _trials_until_done(config, worker)
    except DBAPIError as error:
        where = _redact(config.resolved_storage())
        raise StudyError(f"the study storage {where} failed: {_short(error.orig or error)}; "
                         "rerun the same command to resume once it answers") from None


def _trials_until_done(config: StudyConfig, worker: int) -> None:
    import optuna
    from optuna.trial import TrialState

    import torch

    torch.set_num_threads(config.threads)
    _quiet_optuna()
    storage = open_storage(config.resolved_storage(), config.heartbeat)
    name = config.resolved_name()
    target = _target(config)
    study = load_study(storage, name, config.identity(), create=True, seed=config.seed, prune=config.prune,
                       startup=min(5, max(1, target // 3)), warmup=_epochs(config) // 2)
    _enqueue_paper_configuration(config, study)
    store = _open_store(config.store) if config.store is not False else None
    objective = _objective(config, name, target, store, worker)
    waiting_on: set[int] = set()  # RUNNING trials whose fate this worker cannot tell, already said so
    while True:
        if _stopping:
            raise KeyboardInterrupt
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        done = sum(1 for t in trials if _counted(t))
        running = sum(1 for t in trials if t.state == TrialState.RUNNING)
        if done >= target:
            return
        if done + running >= target:
            # The last trials are running elsewhere, or were left RUNNING by a killed worker:
            # the heartbeat fails those above; orphans of local workers without one are failed here.
            if not _fail_orphans(config, storage, study, waiting_on):
                time.sleep(config.poll)
            continue
        study.sampler = _sampler(config, worker, len(trials), target)
        study.optimize(objective, n_trials=1, catch=(TrialFailed, SurplusTrial), gc_after_trial=False)


def _process_started(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux's /proc); None where unknown.
    With the pid it names one process: a pid alone can be reused by a later, unrelated process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22, after the (command)
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int, started: int | None = None) -> bool:
    """Whether process ``pid`` runs, and is the one that started at ``started`` when that is known."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        pass
    now = _process_started(pid)
    return started is None or now is None or now == started


def _fail_orphans(config: StudyConfig, storage, study, waiting_on: set[int]) -> bool:
    """Fail RUNNING trials whose worker process on this machine is gone; True if any was failed.

    The storage's heartbeat catches a killed worker only when that worker had a heartbeat (and
    this one checks it); without one a trial would stay RUNNING forever and block every rerun.
    A RUNNING trial whose worker is elsewhere and cannot be judged gets one line saying why
    this worker waits for it.
    """
    from optuna.trial import TrialState

    failed = _fail_trials_of_gone_workers(storage, study)
    for trial in failed:
        _log(config, f"[{study.study_name}] trial {trial.number} was left running by worker "
                     f"{trial.user_attrs['worker']}, which is gone; failed it (no outcome), it will be run again")
    gone = {trial.number for trial in failed}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.number in gone:
            continue
        heartbeat = int(trial.user_attrs.get("heartbeat") or 0)
        if trial.number in waiting_on or (heartbeat and config.heartbeat):
            continue  # said already, or the heartbeat will tell
        waiting_on.add(trial.number)
        worker = trial.user_attrs.get("worker") or "an unknown worker"
        why = ("which runs without a heartbeat (--heartbeat 0)" if not heartbeat else
               "and this worker runs with --heartbeat 0, so it cannot tell a stale trial (rerun with --heartbeat 10)")
        print(f"[{study.study_name}] waiting for trial {trial.number}, running in {worker} {why}; "
              "if that worker is gone, stop this one (Ctrl-C) and rerun on its machine, which fails it",
              file=sys.stderr, flush=True)
    return bool(failed)


def _fail_trials_of_gone_workers(storage, study) -> list:
    """Mark FAIL the RUNNING trials whose worker process on this machine no longer exists; returns them."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    failed = []
    host = os.uname().nodename
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        node, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
        if node == host and pid.isdigit() and not _alive(int(pid), trial.user_attrs.get("worker_started")):
            try:
                storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            except UpdateFinishedTrialError:  # it finished after all
                continue
            failed.append(trial)
    return failed


def _worker_entry(payload: dict[str, Any], worker: int) -> int:
    """Entry point of a worker process (``--workers K``)."""
    config = StudyConfig(**payload)
    threads = max(1, (os.cpu_count() or 1) // max(1, config.workers))
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    try:
        _work(config, worker)
    except StudyError as error:
        print(f"regbench study: error: {error}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:  # Ctrl-C, passed on by the parent, which says it once
        return 130
    except Exception:
        if _stopping:  # whatever the interruption broke (a storage write cut short): quietly, the parent cleans up
            return 130
        raise
    return 0


def summarize_study(study, target: int, storage_url: str) -> StudySummary:
    from optuna.trial import TrialState

    finite = [t for t in study.get_trials(deepcopy=False)
              if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)]
    best = min(finite, key=lambda t: (t.value, t.number)) if finite else None
    return StudySummary(study.study_name, _redact(storage_url), target, _outcomes(study),
                        None if best is None else float(best.value), None if best is None else dict(best.params),
                        None if best is None else best.number)


def run_study(config: StudyConfig) -> StudySummary:
    """Run (or resume) a study until it holds ``config.trials`` trials with an outcome."""
    import regularizers

    _check_study_name(config.study_name)
    if config.trials < 1:
        raise StudyError(f"--trials must be at least 1, got {config.trials}")
    if config.workers < 1:
        raise StudyError(f"--workers must be at least 1, got {config.workers}")
    from .runner import MAX_SEED

    if not 0 <= config.seed <= MAX_SEED:
        raise StudyError(f"--seed must be in [0, {MAX_SEED}], got {config.seed}")
    if config.startup_trials is not None and config.startup_trials < 0:
        raise StudyError(f"--startup-trials must be 0 or more, got {config.startup_trials}")
    if config.heartbeat < 0:
        raise StudyError(f"--heartbeat must be 0 (off) or more seconds, got {config.heartbeat}")
    try:
        regularizers.get(config.regularizer)
    except ValueError as error:
        raise StudyError(str(error)) from None
    _check_task(config.task)
    if config.store is not False:
        _open_store(config.store).check_writable()  # a damaged or unwritable results store: one line, now
    target = _target(config)
    _remember_options(config)
    if target < config.trials:
        _log(config, f"{config.regularizer} has nothing to tune: its study runs its one configuration once "
                     f"(trial 0), not {config.trials} times; use --seeds / run --from-study for its variance")
    missing = max(1, target - sum(_outcomes(_load_existing(config)).values()))
    if config.workers > missing:  # a worker for every trial still to run, no more
        _log(config, f"{missing} trial(s) to run: {missing} worker(s), not {config.workers}")
        config = dataclasses.replace(config, workers=missing)
    if config.workers == 1:
        _work(config, 0)
    else:
        import multiprocessing

        payload = dataclasses.asdict(config)
        payload["run_fn"] = _run_fn_label(config.run_fn)
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=_worker_process, args=(payload, worker), daemon=False)
                     for worker in range(config.workers)]
        # Workers start with Ctrl-C ignored (an ignored signal stays ignored across exec): a
        # terminal's Ctrl-C reaches only this process, which then stops them one at a time.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for process in processes:
                process.start()
        finally:
            signal.signal(signal.SIGINT, previous)
        try:
            for process in processes:
                process.join()
        except KeyboardInterrupt:
            _stop_workers(config, processes)
            raise
        bad = [p.exitcode for p in processes if p.exitcode]
        if bad:
            raise StudyError(f"{len(bad)} of {config.workers} workers failed (exit codes {bad}); rerun to resume")
    return summarize_study(_load_existing(config), target, config.resolved_storage())


def _load_existing(config: StudyConfig):
    return load_study(open_storage(config.resolved_storage(), None), config.resolved_name(), config.identity())


def _stop_workers(config: StudyConfig, processes: list) -> None:
    """After Ctrl-C: stop each worker in turn (SIGTERM, which it turns into KeyboardInterrupt, so
    that its trial is marked failed without an outcome), then fail any trial a worker could not
    mark, so that the storage holds nothing RUNNING for the next run to wait on."""
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
    try:
        storage = open_storage(config.resolved_storage(), None)
        _fail_trials_of_gone_workers(storage, load_study(storage, config.resolved_name()))
    except Exception:  # noqa: BLE001 -- the next run fails them as well
        pass


# In a worker process that its parent stops (Ctrl-C): the stop interrupts a running objective
# at once (Optuna then marks its trial failed), and otherwise waits until Optuna has created a
# trial or finished storing one, so that no trial is left RUNNING half-made.
_stopping = False
_in_objective = False


def _epochs(config: StudyConfig) -> int:
    """The epochs each trial of the study trains (1 where the setting cannot be resolved)."""
    from . import runner

    request = {"task": config.task, "regularizer": "none", "spec": "none", "preset": config.preset,
               "scale": config.scale, **config.run_options}
    try:
        return runner.plan_run(_run_config(request)).settings.epochs
    except (ValueError, TypeError):
        return 1


def _enqueue_paper_configuration(config: StudyConfig, study) -> None:
    """On a track, the paper's setting of the regularizer for this kind of task is trial 0, so
    that tuning can only improve on it (the searched hyperparameters only)."""
    import regularizers

    from .tasks import get_task

    if not config.run_options.get("track") or study.get_trials(deepcopy=False):
        return
    paper = get_task(config.task).paper_hyperparameters.get(config.regularizer, {})
    cls = regularizers.get(config.regularizer)
    cell = config.run_options.get("cell", "lstm")
    searched = {k: v for k, v in paper.items()
                if cls.hyperparameters[k].search is not None and cls.hyperparameters[k].applies_to(cell)}
    if searched:
        study.enqueue_trial(searched, skip_if_exists=True)


def _worker_process(payload: dict[str, Any], worker: int) -> None:
    def stop(signum, frame):
        global _stopping
        _stopping = True
        if _in_objective:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # the parent's way of passing Ctrl-C on
    sys.exit(_worker_entry(payload, worker))


def _check_study_name(name: str | None) -> None:
    """A study name becomes part of run folder names (``<name>-trial3``); it must make a safe one."""
    if name is None:
        return
    from .runner import folder_name

    if not name.strip():
        raise StudyError("--study-name must not be empty (leave it out for the default name)")
    try:
        folder_name(name)
    except ValueError as error:
        raise StudyError(f"--study-name {error}") from None


def _check_task(task: str) -> None:
    try:
        from .tasks import get_task
    except ImportError:
        return
    try:
        get_task(task)
    except ValueError as error:
        raise StudyError(str(error)) from None


def run_task_suite(task: str, trials: int, seeds: int = 3, regularizers_: list[str] | None = None,
                   **options: Any) -> list[StudySummary]:
    """The equal-budget protocol: a study of ``trials`` trials for every regularizer of ``task``,
    then ``seeds`` seeded reruns of each best configuration. ``options`` are StudyConfig fields."""
    import regularizers

    names = regularizers_ or regularizers.available()
    summaries = []
    for name in names:
        config = StudyConfig(task=task, regularizer=name, trials=trials, **options)
        summary = run_study(config)
        summaries.append(summary)
        _log(config, summary.line())
        if seeds:
            rerun_best(config.resolved_name(), config.resolved_storage(), seeds=seeds, store=config.store,
                       run_fn=config.run_fn, verbose=config.verbose)
    return summaries


# ----------------------------------------------------------------------------- reruns


def best_configuration(study_name: str, storage_url: str | None = None) -> dict[str, Any]:
    """The study's identity (task, regularizer, preset, scale, seed, run options) and best params."""
    url = storage_url or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE
    storage = open_storage(url, None)
    study = load_study(storage, study_name)
    attrs = study.user_attrs
    if not attrs.get("task"):
        raise StudyError(f"study {study_name!r} was not made by regbench (no task in its user attrs)")
    summary = summarize_study(study, int(attrs.get("trials") or 0), url)
    if summary.best_params is None:
        raise StudyError(f"study {study_name!r} has no finished trial with a finite value yet; "
                         "run or resume it with `regbench study` first")
    return {"study": study_name, "task": attrs["task"], "regularizer": attrs["regularizer"],
            "preset": attrs.get("preset") or None, "scale": attrs.get("scale") or None,
            "seed": int(attrs.get("seed", 0)), "run_options": dict(attrs.get("run_options") or {}),
            "params": summary.best_params, "value": summary.best_value, "trial": summary.best_trial}


def rerun_best(study_name: str, storage_url: str | None = None, seeds: int = 3, store: str | None = None,
               run_fn=None, verbose: bool = True, run_options: dict[str, Any] | None = None,
               command: str | None = None) -> list[dict]:
    """Run the study's best configuration with ``seeds`` fresh seeds (study seed + 1, + 2, ...).

    The tuning seed itself is not reused: the configuration was chosen on it, so its result is
    optimistically biased. Seeds already rerun (an ``ok`` record with this study, no trial, the
    same spec and seed in the store) are skipped, so the command resumes.
    """
    best = best_configuration(study_name, storage_url)
    fn = _resolve_run_fn(run_fn)
    spec = _spec(best["regularizer"], best["params"])
    results_store = _open_store(store)
    done = set()
    frame = results_store.dataframe()
    if len(frame):
        mine = frame[(frame["study"] == study_name) & frame["trial"].isna() & (frame["spec"] == spec)
                     & (frame["status"] == "ok")]
        done = {int(s) for s in mine["seed"]}
    records = []
    options = {**best["run_options"], **(run_options or {})}
    for offset in range(1, seeds + 1):
        seed = best["seed"] + offset
        if seed in done:
            if verbose:
                print(f"[{study_name}] seed {seed} of {spec} already in the store; skipped", flush=True)
            continue
        request = {"task": best["task"], "regularizer": best["regularizer"], "params": best["params"],
                   "spec": spec, "seed": seed, "preset": best["preset"], "scale": best["scale"], **options,
                   "run_name": f"{study_name}-seed{seed}"}
        try:
            record = _as_record(fn(request, []))
        except OSError as error:  # the environment's fault: not a failed run of the configuration
            raise StudyError(f"seed {seed} of {spec} could not run: {_short(error)}; fix that and rerun the "
                             "same command to resume") from None
        except Exception as error:
            record = _failure_record(request, _short(error))
        if not record.stored:  # else another process ran this very seed and stored it
            record = record.replace(study=study_name, trial=None, rerun_of_trial=best["trial"],
                                    command=command or record.command)
            results_store.append(record)
        records.append(record)
        if verbose:
            value = record.best_val_metric
            shown = "nan" if value is None else f"{value:.4f}"
            print(f"[{study_name}] rerun seed {seed} {spec}: {record.status} {shown}", flush=True)
    return records


# ----------------------------------------------------------------------------- a tiny real objective


def tiny_run(request: dict[str, Any], callbacks: list) -> RunRecord:
    """A real but tiny training run (about a second): a RegularizedLSTM of 16 units on 512 of the embedded
    8x8 digits, pixels one at a time, plain PyTorch. Used by tests and smoke checks of the study
    machinery; reports its validation error per epoch to pruning reporters in ``callbacks``."""
    import torch
    from torch import nn

    import regularizers
    from .data import load_pixels

    seed = int(request.get("seed") or 0)
    epochs = int(request.get("epochs") or 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: more threads only add contention
    try:
        return _tiny_run(request, callbacks, seed, epochs)
    finally:
        torch.set_num_threads(threads)


def _tiny_run(request, callbacks, seed, epochs):
    import torch
    from torch import nn

    import regularizers
    from .data import load_pixels

    torch.manual_seed(seed)
    data = load_pixels("digits", permuted=False, seed=0)
    x, y = data.train_x[:512], data.train_y[:512]
    vx, vy = data.valid_x[:200], data.valid_y[:200]
    lstm = regularizers.RegularizedLSTM(1, 16, batch_first=True, regularizers=[request["spec"]])
    head = nn.Linear(16, 10)
    params = list(lstm.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=float(request.get("lr") or 0.02))
    curve = []
    start = time.perf_counter()
    status, reason = "ok", ""
    for epoch in range(epochs):
        lstm.train()
        for i in range(0, len(x), 32):
            out, _ = lstm(x[i:i + 32])
            loss = nn.functional.cross_entropy(head(out[:, -1]), y[i:i + 32]) + regularizers.penalty(lstm)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        lstm.eval()
        with torch.no_grad():
            out, _ = lstm(vx)
            error = float((head(out[:, -1]).argmax(-1) != vy).float().mean())
        if not math.isfinite(float(loss.detach())):
            status, reason = "diverged", f"NaN loss in epoch {epoch}"
            break
        curve.append(error)
        stop = any(c.report(epoch, error) for c in callbacks if hasattr(c, "report"))
        if stop:
            break
    wall = time.perf_counter() - start
    return RunRecord(
        task=request["task"], regularizer=request["regularizer"],
        hyperparameters=regularizers.build(request["spec"]).params, spec=request["spec"], cell="lstm",
        seed=seed, preset=request.get("preset"), scale=request.get("scale"), dataset="digits",
        data_source=data.source, data_checksum=data.checksum, metric="error_rate",
        best_val_metric=min(curve) if curve else None, test_metric=None,
        epochs=len(curve), wall_time_s=wall, throughput=len(x) * len(curve) / max(wall, 1e-9),
        throughput_unit="samples/s", val_curve=curve, status=status, reason=reason or None,
        settings={"hidden_size": 16, "objective": "tiny_run"})


# ----------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``regbench study`` (declared in benchmark.cli.arguments)."""
    from .cli.arguments import study_arguments

    study_arguments(parser)


def _apply_track(args) -> None:
    """Fill the task, --trials and --seeds of ``args`` from ``--track`` (in place)."""
    if not args.track:
        if args.trials is None:
            raise StudyError("--trials is needed with --task (a --track brings its own)")
        args.seeds = args.seeds or 0
        return
    from .tracks import get_track

    try:
        track = get_track(args.track)
    except ValueError as error:
        raise StudyError(str(error)) from None
    fixed = [flag for flag, value in (("--preset", args.preset), ("--scale", args.scale), ("--epochs", args.epochs))
             if value is not None]
    if fixed:
        raise StudyError(f"a track fixes its settings: drop {', '.join(fixed)} (or use --task for an ad-hoc setting)")
    if not track.trials and args.trials is None:
        raise StudyError(f"track {track.name} has no tuning budget (its regularizers run at the paper's "
                         f"hyperparameters): use `regbench run --track {track.name}`")
    args.task = track.task
    args.trials = track.trials if args.trials is None else args.trials
    args.seeds = track.seeds if args.seeds is None else args.seeds


def _config_from_args(args, regularizer: str) -> StudyConfig:
    options = {}
    if args.track:
        options["track"] = args.track
    if args.epochs is not None:
        options["epochs"] = args.epochs
    if args.data_dir is not None:
        options["data_dir"] = args.data_dir
    if args.hub is not None:
        options["hub"] = args.hub
    return StudyConfig(task=args.task, regularizer=regularizer, trials=args.trials, storage=args.storage,
                       study_name=args.study_name, seed=args.seed, preset=args.preset, scale=args.scale,
                       run_options=options, store=args.store, workers=args.workers, threads=args.threads,
                       prune=not args.no_prune,
                       startup_trials=args.startup_trials, heartbeat=args.heartbeat, run_fn=args.objective,
                       command=_invocation("study"))


def _invocation(subcommand: str) -> str:
    """This process's command line as the ``regbench`` command that repeats it."""
    argv = sys.argv[1:]
    if argv[:1] == [subcommand]:
        argv = argv[1:]
    return shlex.join(["regbench", subcommand, *argv])


def run(args) -> int:
    """``regbench study``: one line per trial, a summary line per study; errors as one line. Exits 1
    when a study has no trial with a finite value (all failed, pruned or diverged) or a rerun failed."""
    import logging

    log = logging.getLogger(__name__)  # shown on stderr by the command line's handler
    try:
        if args.threads < 1:
            raise StudyError(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)  # the reruns of the best configurations run in this process
        _apply_track(args)
        if args.all:
            if args.study_name:
                raise StudyError("--study-name names one study; with --all every regularizer gets its default name")
            import regularizers

            configs = [_config_from_args(args, name) for name in regularizers.available()]
        else:
            configs = [_config_from_args(args, args.regularizer)]
        status = 0
        for config in configs:
            summary = run_study(config)
            print(summary.line(), flush=True)
            if summary.best_value is None:
                outcomes = ", ".join(f"{v} {k}" for k, v in sorted(summary.outcomes.items()) if v) or "none"
                log.error("regbench study: no trial of study %s finished with a finite value (%s); see the "
                          "reasons above", summary.study_name, outcomes)
                status = 1
                continue
            if args.seeds:
                try:
                    rerun_best(config.resolved_name(), config.resolved_storage(), seeds=args.seeds,
                               store=config.store, run_fn=config.run_fn, command=config.command)
                except StudyError as error:  # e.g. every trial diverged: say so, go on with the others
                    log.error("regbench study: %s: no rerun: %s", config.regularizer, error)
                    status = 1
        if args.track and args.seeds:
            _write_track_board(args)
    except KeyboardInterrupt:  # errors are formatted by the command line's handler (benchmark.cli.main)
        print("regbench study: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return status


def _write_track_board(args) -> None:
    """The track's board from this store, with the shipped baselines for the regularizers it lacks."""
    from .leaderboard import DEFAULT_OUT, SHIPPED_STORE, write_track_board
    from .store import default_store_path

    store = args.store or str(default_store_path())
    path = write_track_board(args.track, store, DEFAULT_OUT, shipped=SHIPPED_STORE)
    print(f"Board of {args.track} with the shipped baselines: {path}", flush=True)


def _remember_options(config: StudyConfig) -> None:
    """Store the run options and budget in the study so that --from-study reruns the same thing."""
    storage = open_storage(config.resolved_storage(), None)
    study = load_study(storage, config.resolved_name(), config.identity(), create=True, seed=config.seed)
    previous = study.user_attrs.get("run_options")
    if previous is not None and previous != config.run_options:
        raise StudyError(f"study {config.resolved_name()!r} was run with options {json.dumps(previous, sort_keys=True)}, "
                         f"not {json.dumps(config.run_options, sort_keys=True)}; choose another --study-name")
    study.set_user_attr("run_options", config.run_options)
    study.set_user_attr("trials", max(int(study.user_attrs.get("trials") or 0), _target(config)))


def add_from_study_arguments(parser: argparse.ArgumentParser) -> None:
    """``--from-study S [--storage URL] --seeds K`` for ``regbench run`` (benchmark.cli.arguments)."""
    from .cli.arguments import from_study_arguments

    from_study_arguments(parser)


def run_from_study(args) -> int:
    """``regbench run --from-study S``: the task, regularizer and settings come from the study."""
    clashing = [flag for flag, attr in (("--task", "task"), ("--regularizer", "regularizer"))
                if getattr(args, attr, None)]
    from .errors import error_line

    if clashing:
        print(error_line("run", f"--from-study takes the task and regularizer from the study; "
                                f"drop {' and '.join(clashing)}"), file=sys.stderr)
        return 2
    seeds = getattr(args, "seeds", None) or 3
    if isinstance(seeds, (list, tuple)):
        seeds = len(seeds)
    # --out is the one output folder the reruns write into (the study's own options are kept).
    options = {"out_dir": args.out} if getattr(args, "out", None) else None
    try:
        records = rerun_best(args.from_study, getattr(args, "storage", None), seeds=int(seeds),
                             store=getattr(args, "store", None), run_fn=getattr(args, "objective", None),
                             command=_invocation("run"), run_options=options)
    except StudyError as error:  # called directly too: the one error form, exit 2
        print(error_line("run", error), file=sys.stderr)
        return 2
    return 0 if all(r.get("status") == "ok" for r in records) else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmark.study ARGS`` is ``regbench study ARGS`` (same parser, same error lines)."""
    from .cli import main as regbench

    return regbench(["study", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
