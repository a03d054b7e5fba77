"""Run many configurations, in parallel worker processes when asked.

Small models gain little from several threads, so on a machine with few cores it is faster to
run several single-threaded runs side by side (``workers``) than one run on every core.
Each run appends its own record to the store (SQLite takes concurrent appends), so a crash or
Ctrl-C loses at most the runs in flight; their ``last.ckpt`` lets the next attempt resume.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from typing import Callable, Iterable

from .records import RunRecord
from .runner import RunConfig

log = logging.getLogger(__name__)

__all__ = ["run_all", "expected_cost"]

# Relative cost of one training step, to start the slowest runs first (better packing).
_SLOW_REGULARIZERS = {"recurrent_batchnorm": 3.0, "zoneout": 1.3, "rnndrop": 1.2}


def expected_cost(config: RunConfig) -> float:
    name = config.regularizer.split(":")[0]
    return _SLOW_REGULARIZERS.get(name, 1.0) * (2.0 if config.task == "embedded_text" else 1.0)


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _run_one(config: RunConfig, threads: int | None, skip_finished: bool = False) -> RunRecord:
    """One run; failures come back as a record instead of an exception (the runner stored them).

    ``skip_finished``: when another process finished this configuration and seed since the command
    looked (two identical commands started minutes apart), take its record instead of a second run.
    """
    _set_threads(threads)
    if multiprocessing.parent_process() is not None:  # a spawned worker shows messages like the command
        from .logs import configure

        configure()
    from .runner import finished_record, plan_run, run_experiment

    started = time.perf_counter()
    try:
        if skip_finished:
            done = finished_record(plan_run(config))
            if done is not None:
                return done
        return run_experiment(config)
    except Exception as error:  # noqa: BLE001 -- one failed run must not stop the suite
        import traceback

        from .errors import one_line

        if isinstance(error, OSError):  # the environment's fault: one line, the run was not recorded
            log.error("regbench run: %s %s seed %s: not recorded, %s: %s", config.task, config.regularizer,
                      config.seed, type(error).__name__, one_line(error))
        else:
            log.error("%s", "".join(traceback.format_exception(error)).rstrip())

        return RunRecord(task=config.task or config.track or "", regularizer=config.regularizer, seed=config.seed,
                         status="failed", reason=f"{type(error).__name__}: {one_line(error)}"[:300],
                         wall_time_s=time.perf_counter() - started)


def run_all(configs: Iterable[RunConfig], workers: int = 1, threads: int | None = None,
            skip_finished: bool = False,
            on_result: Callable[[int, int, RunRecord], None] | None = None) -> list[RunRecord]:
    """Run every configuration; with ``workers`` > 1 in that many spawned processes.

    ``on_result(done, total, record)`` is called as each run finishes. Returns the records in
    the order of ``configs``.
    """
    configs = list(configs)
    total = len(configs)
    records: list[RunRecord | None] = [None] * total
    if workers <= 1 or total == 1:
        for done, (index, config) in enumerate(enumerate(configs), start=1):
            records[index] = _run_one(config, threads, skip_finished)
            if on_result:
                on_result(done, total, records[index])
        return records
    # Slowest first; spawn, not fork: the parent has torch's thread pools initialised.
    order = sorted(range(total), key=lambda i: -expected_cost(configs[i]))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(_run_one, replace(configs[i], progress_bar=False), threads or 1, skip_finished): i
                   for i in order}
        for done, future in enumerate(as_completed(futures), start=1):
            index = futures[future]
            records[index] = future.result()
            if on_result:
                on_result(done, total, records[index])
    return records
