"""Running a study: its configuration, the budget, the workers, stale trials and the summary.

* Budget: the study must hold ``trials`` trials *with an outcome* (COMPLETE, PRUNED, or FAIL with
  a recorded reason). Each worker runs ``study.optimize`` with a :class:`Budget` (Optuna's
  ``MaxTrialsCallback`` counting those trials), so rerunning the same command resumes the study
  and runs only the missing trials.
* Enqueued trials: nothing to tune (an empty search space) is one enqueued trial and a budget of
  one; on a track the paper's setting is enqueued as trial 0.
* Stale trials: on an RDB storage the heartbeat fails a killed worker's trial and
  ``RetryHeartbeatStaleTrialCallback`` enqueues its configuration again; a trial whose worker process on
  this machine is gone (the journal file has no heartbeat; ``--heartbeat 0``) is failed before
  the worker starts, and enqueued again the same way. A failed stale trial has no outcome.
* ``workers`` processes on this machine share the storage; Ctrl-C stops them all.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from .objective import Objective, TrialFailed, process_started, run_config, run_fn_label
from .summary import StudySummary, counted, outcomes, summarize_study
from .storage import StudyError, load_study, open_storage, redact, resolve_storage, retry_stale_trial, short

__all__ = ["StudyConfig", "StudySummary", "Budget", "counted", "default_study_name", "run_study",
           "run_task_suite", "summarize_study"]

log = logging.getLogger("benchmark.study")


@dataclass
class StudyConfig:
    task: str
    regularizer: str
    trials: int
    storage: str | None = None  # None: benchmark.studies.storage.resolve_storage()
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
    heartbeat: int = 10  # seconds between heartbeats of an RDB storage; stale after 3 missed ones
    run_fn: str | Callable | None = None  # "module:function", run_fn(RunConfig, callbacks) -> RunRecord
    poll: float = 2.0  # unused; kept so that existing callers that pass it keep working
    verbose: bool = True  # trial lines at INFO (else DEBUG) on the benchmark.study logger
    command: str | None = None  # the command line that runs this study, kept in every record

    def resolved_name(self) -> str:
        track = self.run_options.get("track")
        if self.study_name:
            return self.study_name
        if track:  # "digits/cpu-v1" -> "digits-cpu-v1-zoneout"
            return f"{track.replace('/', '-')}-{self.regularizer}"
        return default_study_name(self.task, self.regularizer, self.preset, self.scale)

    def resolved_storage(self) -> str:
        return resolve_storage(self.storage)

    def identity(self) -> dict[str, Any]:
        return {"task": self.task, "regularizer": self.regularizer, "preset": self.preset or "",
                "scale": "" if self.scale is None else str(self.scale), "seed": int(self.seed)}


def default_study_name(task: str, regularizer: str, preset: str | None = None, scale: Any = None) -> str:
    parts = [task, regularizer]
    if preset:
        parts.append(str(preset))
    if scale not in (None, ""):
        parts.append(str(scale))
    return "-".join(parts)


def _say(config: StudyConfig, text: str, *args: Any) -> None:
    log.log(logging.INFO if config.verbose else logging.DEBUG, text, *args)


# ----------------------------------------------------------------------------- budget


class Budget(MaxTrialsCallback):
    """Optuna's ``MaxTrialsCallback`` over the trials with an outcome: a FAIL counts only with a
    recorded reason (not a stale, interrupted or surplus trial, which is run again)."""

    def __init__(self, n_trials: int) -> None:
        super().__init__(n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))

    def done(self, study) -> int:
        """The trials of ``study`` that count toward the budget."""
        return sum(1 for t in study.get_trials(deepcopy=False, states=self._states) if counted(t))

    def __call__(self, study, trial) -> None:
        if self.done(study) >= self._n_trials:
            study.stop()


def search_space_is_empty(regularizer: str) -> bool:
    import optuna
    import regularizers

    probe = optuna.trial.FixedTrial({})
    try:
        return not regularizers.get(regularizer).search_space(probe)
    except ValueError:  # FixedTrial has no value for a suggested parameter: the space is not empty
        return False


def target(config: StudyConfig) -> int:
    """The budget: ``trials``, or 1 when there is nothing to tune (N runs of one configuration
    would only pick a lucky one; its variance comes from the seeded reruns)."""
    return 1 if search_space_is_empty(config.regularizer) else int(config.trials)


def epochs(config: StudyConfig) -> int:
    """The epochs each trial of the study trains (1 where the setting cannot be resolved)."""
    from .. import runner

    try:
        plan = runner.plan_run(run_config(config.task, "none", 0, config.preset, config.scale, config.run_options))
        return plan.settings.epochs
    except (ValueError, TypeError):
        return 1


def enqueue_trials(config: StudyConfig, study) -> None:
    """The trials whose configuration is known before sampling: the one configuration of a
    regularizer with nothing to tune, and on a track the paper's setting of the regularizer for
    this kind of task (trial 0, so that tuning can only improve on it)."""
    import regularizers

    from ..tasks import get_task

    if search_space_is_empty(config.regularizer):
        study.enqueue_trial({}, skip_if_exists=True)
        return
    if not config.run_options.get("track") or study.get_trials(deepcopy=False):
        return
    paper = get_task(config.task).paper_hyperparameters.get(config.regularizer, {})
    cls = regularizers.get(config.regularizer)
    cell = config.run_options.get("cell", "lstm")
    searched = {k: v for k, v in paper.items()
                if cls.hyperparameters[k].search is not None and cls.hyperparameters[k].applies_to(cell)}
    if searched:
        study.enqueue_trial(searched, skip_if_exists=True)


# ----------------------------------------------------------------------------- stale trials


def alive(pid: int, started: int | None = None) -> bool:
    """Whether process ``pid`` runs, and is the one that started at ``started`` when that is known."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        pass
    now = process_started(pid)
    return started is None or now is None or now == started


def fail_trials_of_gone_workers(study) -> list:
    """FAIL the RUNNING trials whose worker process on this machine no longer exists, and enqueue
    their configurations again (``RetryHeartbeatStaleTrialCallback``, as the heartbeat does); returns them."""
    from optuna.exceptions import UpdateFinishedTrialError

    failed = []
    host = os.uname().nodename
    retry = retry_stale_trial()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        node, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
        if node == host and pid.isdigit() and not alive(int(pid), trial.user_attrs.get("worker_started")):
            try:
                study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            except UpdateFinishedTrialError:  # it finished after all
                continue
            retry(study, study._storage.get_trial(trial._trial_id))
            failed.append(trial)
    return failed


def _fail_stale_trials(config: StudyConfig, study) -> None:
    """Before a worker starts: fail what the heartbeat says is stale, and the trials of gone local
    workers; say why the study may wait for a RUNNING trial that cannot be judged."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    for trial in fail_trials_of_gone_workers(study):
        _say(config, "[%s] trial %d was left running by worker %s, which is gone; failed it (no outcome), "
                     "it will be run again", study.study_name, trial.number, trial.user_attrs["worker"])
    host = os.uname().nodename
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        heartbeat = int(trial.user_attrs.get("heartbeat") or 0)
        if not worker or worker.rpartition(":")[0] == host or (heartbeat and config.heartbeat):
            continue  # just created, judged above (this machine's processes), or the heartbeat will tell
        why = ("which runs without a heartbeat (--heartbeat 0)" if not heartbeat else
               "and this worker runs with --heartbeat 0, so it cannot tell a stale trial (rerun with --heartbeat 10)")
        log.warning("[%s] trial %d is running in %s %s; if that worker is gone, rerun on its machine, which "
                    "fails it", study.study_name, trial.number, worker, why)


# ----------------------------------------------------------------------------- workers


def _sampler(config: StudyConfig, worker: int, budget: int):
    import optuna

    startup = config.startup_trials if config.startup_trials is not None else min(10, max(2, budget // 3))
    seed = (int(config.seed) * 1_000_003 + worker * 10_007) % (2**32)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)


def _pruner(config: StudyConfig, budget: int):
    import optuna

    if not config.prune:
        return optuna.pruners.NopPruner()
    # Early epochs rank configurations by noise (digits' validation error is still 0.7-0.9 after
    # two): the pruner waits for half the epochs.
    return optuna.pruners.MedianPruner(n_startup_trials=max(2, min(5, max(1, budget // 3))),
                                       n_warmup_steps=max(1, epochs(config) // 2))


def _work(config: StudyConfig, worker: int = 0) -> None:
    """One worker: run trials until the study holds its budget of trials with an outcome; a storage
    that fails mid-study (its server gone, a connection that cannot be made) is a StudyError."""
    from sqlalchemy.exc import DBAPIError

    try:
        _optimize(config, worker)
    except DBAPIError as error:
        raise StudyError(f"the study storage {redact(config.resolved_storage())} failed: "
                         f"{short(error.orig or error)}; rerun the same command to resume once it answers") from None


def _optimize(config: StudyConfig, worker: int) -> None:
    import torch

    torch.set_num_threads(config.threads)
    budget_size = target(config)
    storage = open_storage(config.resolved_storage(), config.heartbeat)
    study = load_study(storage, config.resolved_name(), config.identity(), create=True,
                       sampler=_sampler(config, worker, budget_size), pruner=_pruner(config, budget_size))
    enqueue_trials(config, study)
    _fail_stale_trials(config, study)
    budget = Budget(budget_size)
    if budget.done(study) >= budget_size:
        return
    store = _open_store(config.store) if config.store is not False else None
    objective = Objective(config, config.resolved_name(), budget_size, store)
    study.optimize(_interruptible(objective), callbacks=[budget], catch=(TrialFailed,), gc_after_trial=False)


def _open_store(path):
    from ..store import ResultsStore

    return ResultsStore(path)


# In a worker process that its parent stops (Ctrl-C): the stop interrupts a running objective
# at once (Optuna then marks its trial failed), and otherwise waits until Optuna has created a
# trial or finished storing one, so that no trial is left RUNNING half-made.
_stopping = False
_in_objective = False


def _interruptible(objective):
    def run(trial) -> float:
        global _in_objective
        _in_objective = True
        try:
            if _stopping:  # stopped while Optuna created this trial: it fails it now
                raise KeyboardInterrupt
            return objective(trial)
        finally:
            _in_objective = False
            if _stopping:  # a re-delivery still pending has nothing left to interrupt
                signal.setitimer(signal.ITIMER_REAL, 0)

    return run


def _interrupt(signum=None, frame=None) -> None:
    """The stop itself, for SIGTERM (through ``stop``) and for its re-delivery (SIGALRM): it
    interrupts a running objective and does nothing outside one, by design (see above)."""
    if _in_objective:
        raise KeyboardInterrupt


def _redeliver_swallowed_interrupt(unraisable, previous=None) -> None:
    """A stop that lands inside a finalizer (``__del__``, a weakref callback, the garbage collector)
    is swallowed there, and Python would print it as "Exception ignored" and carry on with the
    trial. Instead: say nothing and interrupt again a moment later, outside the finalizer. Anything
    else goes to the hook that was there before (``previous``)."""
    if _stopping and isinstance(unraisable.exc_value, KeyboardInterrupt):
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        return
    (previous or sys.__unraisablehook__)(unraisable)


def _worker_process(payload: dict[str, Any], worker: int, level: int) -> None:
    def stop(signum, frame):
        global _stopping
        _stopping = True
        _interrupt()

    signal.signal(signal.SIGTERM, stop)  # the parent's way of passing Ctrl-C on
    signal.signal(signal.SIGALRM, _interrupt)
    sys.unraisablehook = functools.partial(_redeliver_swallowed_interrupt, previous=sys.unraisablehook)
    from ..logs import configure

    configure(level)
    sys.exit(_worker_entry(payload, worker))


def _worker_entry(payload: dict[str, Any], worker: int) -> int:
    """Entry point of a worker process (``--workers K``)."""
    config = StudyConfig(**payload)
    try:
        _work(config, worker)
    except StudyError as error:
        log.error("regbench study: error: %s", error)
        return 2
    except KeyboardInterrupt:  # Ctrl-C, passed on by the parent, which says it once
        return 130
    except Exception:
        if _stopping:  # whatever the interruption broke (a storage write cut short): quietly, the parent cleans up
            return 130
        raise
    return 0


# How long the workers have, together, to end their trials after Ctrl-C before they are killed.
_STOP_SECONDS = 20.0


def _stop_workers(config: StudyConfig, processes: list) -> None:
    """After Ctrl-C: stop every worker (SIGTERM, which it turns into KeyboardInterrupt, so
    that its trial is marked failed without an outcome), then fail any trial a worker could not
    mark, so that the storage holds nothing RUNNING for the next run to wait on."""
    # All at once, with one deadline: stopped one by one, with 30 s each, a two-worker study in CI
    # took over two minutes to end after Ctrl-C. A worker that does not end in time is killed, which
    # loses nothing stored, and fail_trials_of_gone_workers below fails what it left running.
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + _STOP_SECONDS
    for process in processes:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
    try:
        storage = open_storage(config.resolved_storage(), None)
        fail_trials_of_gone_workers(load_study(storage, config.resolved_name()))
    except Exception:  # noqa: BLE001 -- the next run fails them as well
        pass


def _run_workers(config: StudyConfig) -> None:
    import multiprocessing

    payload = dataclasses.asdict(config)
    payload["run_fn"] = run_fn_label(config.run_fn)
    context = multiprocessing.get_context("spawn")
    level = log.getEffectiveLevel()
    processes = [context.Process(target=_worker_process, args=(payload, worker, level), daemon=False)
                 for worker in range(config.workers)]
    # Workers start with Ctrl-C ignored (an ignored signal stays ignored across exec): a
    # terminal's Ctrl-C reaches only this process, which then stops them all.
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


def _check(config: StudyConfig) -> None:
    import regularizers

    from ..runner import MAX_SEED

    _check_study_name(config.study_name)
    if config.trials < 1:
        raise StudyError(f"--trials must be at least 1, got {config.trials}")
    if config.workers < 1:
        raise StudyError(f"--workers must be at least 1, got {config.workers}")
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


def _check_study_name(name: str | None) -> None:
    """A study name becomes part of run folder names (``<name>-trial3``); it must make a safe one."""
    if name is None:
        return
    from ..runner import folder_name

    if not name.strip():
        raise StudyError("--study-name must not be empty (leave it out for the default name)")
    try:
        folder_name(name)
    except ValueError as error:
        raise StudyError(f"--study-name {error}") from None


def _check_task(task: str) -> None:
    from ..tasks import get_task

    try:
        get_task(task)
    except ValueError as error:
        raise StudyError(str(error)) from None


def remember_options(config: StudyConfig) -> None:
    """Store the run options and budget in the study so that --from-study reruns the same thing."""
    storage = open_storage(config.resolved_storage(), None)
    study = load_study(storage, config.resolved_name(), config.identity(), create=True)
    previous = study.user_attrs.get("run_options")
    if previous is not None and previous != config.run_options:
        raise StudyError(f"study {config.resolved_name()!r} was run with options {json.dumps(previous, sort_keys=True)}, "
                         f"not {json.dumps(config.run_options, sort_keys=True)}; choose another --study-name")
    study.set_user_attr("run_options", config.run_options)
    study.set_user_attr("trials", max(int(study.user_attrs.get("trials") or 0), target(config)))


def _load_existing(config: StudyConfig):
    return load_study(open_storage(config.resolved_storage(), None), config.resolved_name(), config.identity())


def run_study(config: StudyConfig) -> StudySummary:
    """Run (or resume) a study until it holds its budget of trials with an outcome."""
    _check(config)
    if config.store is not False:
        _open_store(config.store).check_writable()  # a damaged or unwritable results store: one line, now
    budget = target(config)
    remember_options(config)
    if budget < config.trials:
        _say(config, "%s has nothing to tune: its study runs its one configuration once (trial 0), not %d "
                     "times; use --seeds / run --from-study for its variance", config.regularizer, config.trials)
    missing = max(1, budget - sum(outcomes(_load_existing(config)).values()))
    if config.workers > missing:  # a worker for every trial still to run, no more
        _say(config, "%d trial(s) to run: %d worker(s), not %d", missing, missing, config.workers)
        config = dataclasses.replace(config, workers=missing)
    if config.workers == 1:
        _work(config, 0)
    else:
        _run_workers(config)
    return summarize_study(_load_existing(config), budget, config.resolved_storage())


def run_task_suite(task: str, trials: int, seeds: int = 3, regularizers_: list[str] | None = None,
                   **options: Any) -> list[StudySummary]:
    """The equal-budget protocol: a study of ``trials`` trials for every regularizer of ``task``,
    then ``seeds`` seeded reruns of each best configuration. ``options`` are StudyConfig fields."""
    import regularizers

    from .reruns import rerun_best

    summaries = []
    for name in regularizers_ or regularizers.available():
        config = StudyConfig(task=task, regularizer=name, trials=trials, **options)
        summary = run_study(config)
        summaries.append(summary)
        _say(config, "%s", summary.line())
        if seeds:
            rerun_best(config.resolved_name(), config.resolved_storage(), seeds=seeds, store=config.store,
                       run_fn=config.run_fn, verbose=config.verbose)
    return summaries
