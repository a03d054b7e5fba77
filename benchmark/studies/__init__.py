"""Optuna studies over a regularizer's search space, and seeded reruns of the best configuration.

Where each concern lives:

* :mod:`.storage`   opening a storage (journal file by default, an RDB URL for several machines),
                    URL checks and redaction, loading a study and checking what it belongs to;
* :mod:`.pruning`   the Lightning pruning callback (optuna-integration's, recording pruned runs);
* :mod:`.objective` one trial = one run: its ``RunConfig``, the run function, the outcome;
* :mod:`.study`     ``StudyConfig``, the budget (``MaxTrialsCallback``), enqueued trials, stale
                    trials, workers, ``run_study`` and its summary;
* :mod:`.storage_timeout` a time limit on every query to a PostgreSQL storage;
* :mod:`.reruns`    seeded reruns of the best configuration;
* :mod:`.logs`      the command line's handler of the ``benchmark.study`` logger.

The command line (``regbench study``, ``regbench run --from-study``) is :mod:`benchmark.study`.
"""

from .objective import RunFn, TrialFailed
from .reruns import best_configuration, rerun_best
from .storage import (DEFAULT_STORAGE, LEGACY_STORAGE, STORAGE_ENV, StudyError, load_study, open_storage, redact,
                      resolve_storage)
from .study import Budget, StudyConfig, StudySummary, counted, default_study_name, run_study, run_task_suite

__all__ = ["DEFAULT_STORAGE", "LEGACY_STORAGE", "STORAGE_ENV", "MONITOR", "StudyError", "StudyConfig", "StudySummary",
           "RunFn", "TrialFailed", "Budget", "PruningCallback", "counted", "open_storage", "load_study", "redact",
           "resolve_storage", "default_study_name", "run_study", "run_task_suite", "best_configuration", "rerun_best",
           "pruning_callback"]


def __getattr__(name: str):
    """The pruning callback's names, imported on first use (optuna-integration imports Lightning)."""
    if name in ("MONITOR", "PruningCallback", "pruning_callback"):
        from . import pruning

        return getattr(pruning, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
