"""The parts of benchmark.studies that lean on Optuna: the journal file storage shared by worker
processes, the old SQLite default kept, enqueued trials, the MaxTrialsCallback budget on resume,
pruned runs recorded, and URLs redacted in messages."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark import study as S  # noqa: E402
from benchmark.records import RunRecord  # noqa: E402
from benchmark.store import ResultsStore  # noqa: E402
from tiny_objective import TINY  # noqa: E402


def _config(tmp_path, **kw):
    base = dict(task="digits", regularizer="zoneout", trials=3, storage=str(tmp_path / "studies.journal"),
                store=str(tmp_path / "results.sqlite"), run_fn=TINY, run_options={"epochs": 2}, heartbeat=1,
                verbose=False)
    base.update(kw)
    return S.StudyConfig(**base)


def _study(config):
    return optuna.load_study(study_name=config.resolved_name(), storage=S.open_storage(config.resolved_storage(), None))


def test_two_worker_processes_share_a_journal_file_study(tmp_path, monkeypatch):
    monkeypatch.setenv("REGBENCH_NATIVE", "0")  # inherited by the spawned workers
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    config = _config(tmp_path, trials=4, workers=2, prune=False)
    summary = S.run_study(config)
    assert isinstance(S.open_storage(config.resolved_storage(), None), optuna.storages.JournalStorage)
    assert sum(summary.outcomes.values()) == 4
    trials = _study(config).get_trials()
    counted = [t for t in trials if S.counted(t)]
    assert len(counted) == 4 and not [t for t in trials if t.state == TrialState.RUNNING]
    assert len({t.user_attrs["worker"] for t in counted}) == 2  # both processes ran trials
    frame = ResultsStore(config.store).dataframe()
    assert sorted(frame["trial"]) == sorted(t.number for t in counted)  # each counted trial stored once
    for trial in trials:
        if trial not in counted:  # a worker that lost the race for the last slot
            assert trial.state == TrialState.FAIL and "outcome" not in trial.user_attrs


def test_the_default_storage_is_a_journal_file_unless_the_old_sqlite_file_exists(tmp_path, monkeypatch, caplog):
    import benchmark.studies.storage as storage

    caplog.set_level(logging.INFO, logger="benchmark.study")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(S.STORAGE_ENV, raising=False)
    monkeypatch.setattr(storage, "_said_legacy", False)
    assert S.resolve_storage(None) == S.DEFAULT_STORAGE == "regbench_runs/studies.journal"
    assert S.resolve_storage("sqlite:///x.sqlite") == "sqlite:///x.sqlite"
    (tmp_path / "regbench_runs").mkdir()
    (tmp_path / "regbench_runs" / "studies.sqlite").write_bytes(b"")
    assert S.resolve_storage(None) == S.LEGACY_STORAGE == "sqlite:///regbench_runs/studies.sqlite"
    assert S.resolve_storage(None) == S.LEGACY_STORAGE
    said = [r.getMessage() for r in caplog.records if "existing study storage" in r.getMessage()]
    assert len(said) == 1 and S.LEGACY_STORAGE in said[0]  # said once
    monkeypatch.setenv(S.STORAGE_ENV, "elsewhere.journal")
    assert S.resolve_storage(None) == "elsewhere.journal"


def test_nothing_to_tune_is_one_enqueued_trial(tmp_path):
    config = _config(tmp_path, regularizer="none", trials=3)
    summary = S.run_study(config)
    trials = _study(config).get_trials()
    assert summary.target == 1 and len(trials) == 1
    assert trials[0].state == TrialState.COMPLETE and "fixed_params" in trials[0].system_attrs  # enqueued
    S.run_study(config)  # resumed: nothing missing, nothing enqueued again
    assert len(_study(config).get_trials()) == 1


def test_on_a_track_the_papers_setting_is_an_enqueued_trial(tmp_path):
    config = _config(tmp_path, trials=2, run_options={"track": "digits/smoke"})
    S.run_study(config)
    first = min(_study(config).get_trials(), key=lambda t: t.number)
    assert first.system_attrs["fixed_params"] == {"z_cells": 0.15, "z_states": 0.15} == first.params


def test_the_budget_counts_trials_with_an_outcome_on_resume(tmp_path):
    config = _config(tmp_path, trials=2, prune=False)
    S.run_study(config)
    study = _study(config)
    # what an interrupted or surplus trial leaves: FAIL without an outcome, which does not count
    study.tell(study.ask(), state=TrialState.FAIL)
    assert S.Budget(2).done(study) == 2 and S.Budget(3).done(study) == 2
    summary = S.run_study(_config(tmp_path, trials=3, prune=False))
    trials = _study(config).get_trials()
    assert sum(summary.outcomes.values()) == 3 and len([t for t in trials if S.counted(t)]) == 3
    assert len(trials) == 4  # one new trial: only the missing one ran
    assert len(ResultsStore(config.store).dataframe()) == 3
    S.run_study(_config(tmp_path, trials=3, prune=False))  # the budget is met: nothing runs
    assert len(_study(config).get_trials()) == 4


def worse_after_two(config, callbacks):
    """Trials 0 and 1 reach 0.4; later trials stay at 0.9, which the MedianPruner stops after epoch 1."""
    number = int(config.run_name.rsplit("trial", 1)[1])
    curve = []
    for epoch, value in enumerate([0.5, 0.4] if number < 2 else [0.9, 0.9]):
        curve.append(value)
        if any(c.report(epoch, value) for c in callbacks):
            break
    return RunRecord(task=config.task, regularizer="zoneout", spec=config.regularizer, seed=config.seed,
                     status="ok", best_val_metric=min(curve), val_curve=curve, epochs=len(curve))


def test_a_pruned_trial_is_recorded_as_pruned_before_it_stops(tmp_path):
    config = _config(tmp_path, trials=3, run_fn=worse_after_two)
    summary = S.run_study(config)
    assert summary.outcomes == {"ok": 2, "pruned": 1}
    trial = {t.number: t for t in _study(config).get_trials()}[2]
    assert trial.state == TrialState.PRUNED and sorted(trial.intermediate_values) == [0, 1]  # waited for epoch 1
    row = ResultsStore(config.store).dataframe().set_index("trial").loc[2]
    assert row["status"] == "pruned" and row["reason"] == "pruned: MedianPruner stopped it after epoch 1"


def test_storage_urls_are_redacted_in_messages(tmp_path):
    assert S.redact("postgresql://me:hunter2@db.example/studies") == "postgresql://me:***@db.example/studies"
    assert S.redact("sqlite:///a/b.sqlite") == "sqlite:///a/b.sqlite"
    assert S.redact("runs/studies.journal") == "runs/studies.journal"
    with pytest.raises(S.StudyError) as error:
        S.open_storage("postgresql://nobody:hunter2@127.0.0.1:1/none", None)
    assert "hunter2" not in str(error.value)
    result = subprocess.run(
        [sys.executable, "-m", "benchmark.study", "--task", "digits", "--regularizer", "zoneout", "--trials", "1",
         "--storage", "nosuchdb://me:hunter2@host/x", "--objective", TINY, "--store", str(tmp_path / "r.sqlite")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]), REGBENCH_NATIVE="0"))
    assert result.returncode == 2 and "hunter2" not in result.stderr
    assert "cannot open the study storage nosuchdb://me:***@host/x" in result.stderr
