"""Seeded reruns of a study's best configuration (``regbench run --from-study``)."""

from __future__ import annotations

import logging
from typing import Any

from ..records import RunRecord
from .objective import as_record, failure_record, resolve_run_fn, run_config, spec_of
from .storage import StudyError, load_study, open_storage, resolve_storage, short

__all__ = ["best_configuration", "rerun_best"]

log = logging.getLogger("benchmark.study")


def best_configuration(study_name: str, storage_url: str | None = None) -> dict[str, Any]:
    """The study's identity (task, regularizer, preset, scale, seed, run options) and best params."""
    from .summary import summarize_study

    url = resolve_storage(storage_url)
    study = load_study(open_storage(url, None), study_name)
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
               command: str | None = None) -> list[RunRecord]:
    """Run the study's best configuration with ``seeds`` fresh seeds (study seed + 1, + 2, ...).

    The tuning seed itself is not reused: the configuration was chosen on it, so its result is
    optimistically biased. Seeds already rerun (an ``ok`` record with this study, no trial, the
    same spec and seed in the store) are skipped, so the command resumes.
    """
    from ..store import ResultsStore

    best = best_configuration(study_name, storage_url)
    fn = resolve_run_fn(run_fn)
    spec = spec_of(best["regularizer"], best["params"])
    results_store = ResultsStore(store)
    level = logging.INFO if verbose else logging.DEBUG
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
            log.log(level, "[%s] seed %d of %s already in the store; skipped", study_name, seed, spec)
            continue
        config = run_config(best["task"], spec, seed, best["preset"], best["scale"], options,
                            run_name=f"{study_name}-seed{seed}")
        try:
            record = as_record(fn(config, []))
        except OSError as error:  # the environment's fault: not a failed run of the configuration
            raise StudyError(f"seed {seed} of {spec} could not run: {short(error)}; fix that and rerun the "
                             "same command to resume") from None
        except Exception as error:
            record = failure_record(config, short(error))
        if not record.stored:  # else another process ran this very seed and stored it
            record = record.replace(study=study_name, trial=None, rerun_of_trial=best["trial"],
                                    command=command or record.command)
            results_store.append(record)
        records.append(record)
        value = record.best_val_metric
        shown = "nan" if value is None else f"{value:.4f}"
        log.log(level, "[%s] rerun seed %d %s: %s %s", study_name, seed, spec, record.status, shown)
    return records
