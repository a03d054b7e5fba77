"""One trial = one run: the trial's ``RunConfig``, the run function, and the trial's outcome.

A run function is ``run_fn(config: RunConfig, callbacks: list) -> RunRecord``; the default runs
``benchmark.runner.run_experiment``. Outcomes:

* ``ok``: the trial completes with the run's best validation metric.
* ``diverged`` (NaN): completes with ``+inf``, an honest result that tells TPE to avoid the region.
* pruned: the record is stored with status ``pruned`` and a reason, then ``TrialPruned``.
* the run raised, or returned ``failed``: a ``failed`` record with the reason (and traceback),
  the trial ``FAIL`` with the reason in its user attrs.

Every record carries the study and the trial number and lands in the results store.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import os
import traceback
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..records import RunRecord
from .storage import StudyError, short

if TYPE_CHECKING:  # the runner (torch, Lightning) and Optuna are imported when a study runs
    from ..runner import RunConfig

__all__ = ["RunFn", "TrialFailed", "run_config", "resolve_run_fn", "run_fn_label", "spec_of", "failure_record",
           "as_record", "Objective", "process_started"]

log = logging.getLogger("benchmark.study")

RunFn = Callable[["RunConfig", list], RunRecord]


class TrialFailed(Exception):
    """Raised inside an objective to mark the trial FAIL after its record was stored."""


def run_config(task: str, spec: str, seed: int, preset: str | None, scale: Any, options: Mapping[str, Any],
               **fields: Any) -> RunConfig:
    """The RunConfig of one run of a study: ``spec`` carries every hyperparameter; ``options`` are
    the study's run options (track, epochs, data_dir, hub, out_dir, ...); unset values keep the
    runner's defaults."""
    from ..runner import RunConfig

    names = {f.name for f in dataclasses.fields(RunConfig)}
    values: dict[str, Any] = {"preset": preset, "scale": scale, **options, **fields}
    values = {key: value for key, value in values.items() if key in names and value is not None}
    return RunConfig(task=task, regularizer=spec, seed=int(seed), progress_bar=False, **values)


def _runner_run(config: RunConfig, callbacks: list) -> RunRecord:
    """Run one configuration with the real runner (benchmark.runner.run_experiment)."""
    from .. import runner

    # store=False: the study appends the record itself, after marking pruned trials as such.
    return runner.run_experiment(config, callbacks=tuple(callbacks), store=False)


def resolve_run_fn(run_fn: str | RunFn | None) -> RunFn:
    if run_fn is None:
        return _runner_run
    if callable(run_fn):
        return run_fn
    module, _, name = str(run_fn).partition(":")
    return getattr(importlib.import_module(module), name)


def run_fn_label(run_fn) -> str | None:
    """``module:function`` of a run function (what a worker process imports)."""
    if run_fn is None or isinstance(run_fn, str):
        return run_fn
    return f"{run_fn.__module__}:{run_fn.__qualname__}"


def spec_of(regularizer: str, params: dict[str, Any]) -> str:
    import regularizers

    return regularizers.build(regularizer, **params).spec


def failure_record(config: RunConfig, reason: str) -> RunRecord:
    """The record of a run that raised."""
    import regularizers

    try:
        built = regularizers.build(config.regularizer)
        name, hyperparameters = built.name, built.params
    except Exception:
        name, hyperparameters = config.regularizer.split(":", 1)[0], {}
    return RunRecord(task=config.task, regularizer=name, hyperparameters=hyperparameters, spec=config.regularizer,
                     seed=config.seed, track=config.track, preset=None if config.track else config.preset,
                     scale=None if config.track else str(config.scale), status="failed", reason=reason)


def as_record(result: RunRecord | Mapping[str, Any]) -> RunRecord:
    """What a run function returned, as a record (a test's run function may return a mapping)."""
    return result if isinstance(result, RunRecord) else RunRecord.from_dict(result)


def process_started(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux's /proc); None where unknown.
    With the pid it names one process: a pid alone can be reused by a later, unrelated process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22, after the (command)
    except (OSError, ValueError, IndexError):
        return None


class Objective:
    """Optuna's objective for one study: sample (or take the enqueued) hyperparameters, run, record."""

    def __init__(self, config, study_name: str, target: int, store) -> None:
        import regularizers

        self.config = config  # a StudyConfig
        self.study_name = study_name
        self.target = target
        self.store = store
        self.run_fn = resolve_run_fn(config.run_fn)
        self.space = regularizers.get(config.regularizer).search_space

    def __call__(self, trial) -> float:
        from .pruning import pruning_callback

        config = self.config
        # First, so that a worker killed at any later point leaves a trial that can be judged.
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        trial.set_user_attr("worker_started", process_started(os.getpid()))
        trial.set_user_attr("heartbeat", int(config.heartbeat or 0))  # whether a kill can be told from the storage
        self._check_budget(trial)
        params = self.space(trial, cell_type=config.run_options.get("cell", "lstm"))
        spec = spec_of(config.regularizer, params)
        trial.set_user_attr("spec", spec)
        run = run_config(config.task, spec, config.seed, config.preset, config.scale, config.run_options,
                         run_name=f"{self.study_name}-trial{trial.number}", resume=False)
        callback = pruning_callback(trial)
        extra: dict[str, Any] = {"study": self.study_name, "trial": trial.number}
        if config.command:
            extra["command"] = config.command
        try:
            record = as_record(self.run_fn(run, [callback] if config.prune else []))
        except OSError as error:  # the environment's fault (a full disk): no record, no outcome, one line
            raise StudyError(f"trial {trial.number} could not run: {short(error)}; fix that and rerun the "
                             "same command to resume") from None
        except Exception as error:
            reason = short(error)
            record = failure_record(run, reason).replace(**extra, traceback=traceback.format_exc(limit=8))
            self._fail(trial, record, reason, f"failed: {reason}")
        record = record.replace(**extra)
        status, value = record.status, record.best_val_metric
        if callback.pruned_at is not None and status == "ok":
            import optuna

            reason = f"pruned: MedianPruner stopped it after epoch {callback.pruned_at}"
            self._append(record.replace(status="pruned", reason=reason))
            trial.set_user_attr("outcome", "pruned")
            self._say(f"trial {trial.number} {spec}: {reason}")
            raise optuna.TrialPruned(reason)
        if status == "diverged" or (status == "ok" and (value is None or math.isnan(value))):
            self._append(record)
            trial.set_user_attr("outcome", "diverged")
            trial.set_user_attr("reason", str(record.reason or "NaN validation metric"))
            self._say(f"trial {trial.number} {spec}: diverged ({record.reason}); value +inf")
            return float("inf")
        if status != "ok":
            reason = str(record.reason or status)
            self._fail(trial, record, reason, f"{spec}: failed ({reason})")
        self._append(record)
        trial.set_user_attr("outcome", "ok")
        self._say(f"trial {trial.number} {spec}: {value:.4f}")
        return float(value)

    def _check_budget(self, trial) -> None:
        """Workers that started trials at the same moment may take one more slot than the budget
        (``MaxTrialsCallback`` counts after a trial): such a trial stops its worker and FAILs
        without an outcome, before it runs."""
        from optuna.trial import TrialState

        from .summary import counted

        ahead = sum(1 for t in trial.study.get_trials(deepcopy=False)
                    if t.number < trial.number and (counted(t) or t.state == TrialState.RUNNING))
        if ahead >= self.target:
            trial.study.stop()
            raise TrialFailed(f"budget of {self.target} trials already taken")

    def _append(self, record: RunRecord) -> None:
        if self.store is not None:
            self.store.append(record)

    def _fail(self, trial, record: RunRecord, reason: str, line: str):
        self._append(record)
        trial.set_user_attr("outcome", "failed")
        trial.set_user_attr("reason", reason)
        self._say(f"trial {trial.number} {line}")
        raise TrialFailed(reason) from None

    def _say(self, text: str) -> None:
        log.log(logging.INFO if self.config.verbose else logging.DEBUG, "[%s] %s", self.study_name, text)
