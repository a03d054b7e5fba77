"""regbench.benchmark: tasks, models, the runner, the results store and the ``regbench`` command.

    from benchmark import RunConfig, run_experiment, load_results
    record = run_experiment(RunConfig(task="digits", regularizer="zoneout", scale="tiny", seed=0))
    frame = load_results()   # every stored run, as a pandas DataFrame

Importing this package is cheap; Lightning is imported when a run starts.
"""

__version__ = "0.1.0"

from .store import ResultsStore, default_store_path, load_results  # noqa: E402
from .tasks import TASKS, get_task, resolve_settings  # noqa: E402


def __getattr__(name):
    # The runner imports torch; load it on first use only.
    if name in ("RunConfig", "run_experiment", "plan_run"):
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'benchmark' has no attribute {name!r}")


__all__ = ["__version__", "ResultsStore", "default_store_path", "load_results", "TASKS", "get_task",
           "resolve_settings", "RunConfig", "run_experiment", "plan_run"]
