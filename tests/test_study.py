"""Optuna studies: budget and resume, outcomes of bad runs, errors, pruning through Lightning,
workers sharing a storage, a killed worker, reruns of the best configuration.

Trials use ``tiny_objective.tiny_run`` (a real ~1 s LSTM training on 512 embedded digits) or
small objectives defined here; every storage and store lives in tmp_path.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark import study as S  # noqa: E402
from benchmark.store import ResultsStore  # noqa: E402
from benchmark.studies.objective import process_started, spec_of  # noqa: E402
from benchmark.studies.study import alive, epochs  # noqa: E402
from in_process import regbench_in_process  # noqa: E402
from tiny_objective import TINY, tiny_run  # noqa: E402


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    env["OMP_NUM_THREADS"] = "1"
    # Tiny tensors: the Python loops are enough, and a worker process then never waits on (or
    # is killed during) the JIT build of the native loops, whose lock file would stay behind.
    env["REGBENCH_NATIVE"] = "0"
    return env


def _config(tmp_path, **kw):
    base = dict(task="digits", regularizer="zoneout", trials=3, storage=f"sqlite:///{tmp_path}/studies.sqlite",
                store=str(tmp_path / "results.sqlite"), run_fn=TINY, run_options={"epochs": 2}, heartbeat=1,
                poll=0.5, verbose=False)
    base.update(kw)
    return S.StudyConfig(**base)


def _trials(config):
    storage = S.open_storage(config.resolved_storage(), None)
    return optuna.load_study(study_name=config.resolved_name(), storage=storage).get_trials()


def _records(config):
    return ResultsStore(config.store).dataframe()


def test_study_budget_resume_and_records(tmp_path):
    config = _config(tmp_path)
    summary = S.run_study(config)
    assert sum(summary.outcomes.values()) == 3
    trials = _trials(config)
    assert len(trials) == 3 and all(S.counted(t) for t in trials)
    frame = _records(config)
    assert sorted(frame["trial"]) == [0, 1, 2]
    assert set(frame["study"]) == {"digits-zoneout"}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    for trial in complete:  # the objective value is the stored best validation metric
        row = frame[frame["trial"] == trial.number].iloc[0]
        assert trial.value == pytest.approx(row["best_val_metric"])
        assert row["hyperparameters"]["z_cells"] == pytest.approx(trial.params["z_cells"], rel=1e-5)  # spec: 6 digits
    # the same command with a larger budget runs only the missing trials
    summary = S.run_study(_config(tmp_path, trials=5))
    assert sum(summary.outcomes.values()) == 5
    assert len(_trials(config)) == 5
    assert sorted(_records(config)["trial"]) == [0, 1, 2, 3, 4]
    # and once more: nothing to do
    S.run_study(_config(tmp_path, trials=5))
    assert len(_trials(config)) == 5 and len(_records(config)) == 5
    # the sampler is seeded: a fresh study with the same seed proposes the same first parameters
    other = _config(tmp_path, study_name="again", trials=2)
    S.run_study(other)
    first = {t.number: t.params for t in _trials(config)}
    assert [t.params for t in _trials(other)] == [first[0], first[1]]


def test_empty_search_space_runs_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="benchmark.study")
    config = _config(tmp_path, regularizer="none", trials=4, verbose=True)
    summary = S.run_study(config)
    assert summary.target == 1 and sum(summary.outcomes.values()) == 1
    assert len(_trials(config)) == 1 and len(_records(config)) == 1
    assert "nothing to tune" in caplog.text


def flaky_run(config, callbacks):
    """Trial 0 diverges (NaN), trial 1 raises, the others are real tiny runs."""
    number = int(config.run_name.rsplit("trial", 1)[1])
    if number == 0:
        return tiny_run(config, callbacks).replace(status="diverged", reason="NaN loss at epoch 1",
                                                      best_val_metric=None)
    if number == 1:
        raise RuntimeError("CUDA out of memory (simulated)\nsecond line")
    return tiny_run(config, callbacks)


def test_diverged_and_failed_trials_are_recorded_and_the_study_goes_on(tmp_path):
    config = _config(tmp_path, trials=4, run_fn=flaky_run)
    summary = S.run_study(config)
    assert summary.outcomes.get("diverged") == 1 and summary.outcomes.get("failed") == 1
    assert sum(summary.outcomes.values()) == 4
    trials = {t.number: t for t in _trials(config)}
    assert trials[0].state == TrialState.COMPLETE and trials[0].value == math.inf
    assert trials[1].state == TrialState.FAIL
    assert trials[1].user_attrs["reason"] == "RuntimeError: CUDA out of memory (simulated)"
    frame = _records(config).set_index("trial")
    assert frame.loc[0, "status"] == "diverged" and frame.loc[0, "reason"] == "NaN loss at epoch 1"
    assert frame.loc[1, "status"] == "failed" and "CUDA out of memory" in frame.loc[1, "reason"]
    assert summary.best_trial in (2, 3) and math.isfinite(summary.best_value)


def test_study_name_of_another_task_is_refused(tmp_path):
    S.run_study(_config(tmp_path, trials=1))
    with pytest.raises(S.StudyError, match="belongs to another experiment: task='digits'"):
        S.run_study(_config(tmp_path, task="embedded_text", study_name="digits-zoneout", trials=1))
    with pytest.raises(S.StudyError, match="regularizer='zoneout'"):
        S.run_study(_config(tmp_path, regularizer="rnndrop", study_name="digits-zoneout", trials=1))


def _cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "benchmark.study", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--storage", "postgresql://nobody@127.0.0.1:1/none"], "cannot open the study storage postgresql://nobody@"),
    (["--storage", "nosuchdb://x"], "cannot open the study storage nosuchdb://x"),
    (["--regularizer", "zonout"], "unknown regularizer 'zonout'"),
    (["--task", "nosuchtask"], "unknown task 'nosuchtask'"),
    (["--storage", "sqlite:///"], "is in memory and would vanish"),
    (["--storage", "sqlite://"], "is in memory and would vanish"),
    (["--storage", "sqlite:///:memory:"], "is in memory and would vanish"),
    (["--storage", "sqlite:///file:s?mode=memory&uri=true"], "is in memory and would vanish"),
    (["--storage", "sqlite+pysqlite:///:memory:"], "is in memory and would vanish"),
])
def test_bad_input_gives_one_line_errors(tmp_path, args, message, monkeypatch, capsys):
    base = {"--task": "digits", "--regularizer": "zoneout", "--trials": "1",
            "--storage": f"sqlite:///{tmp_path}/s.sqlite"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    argv = [x for pair in base.items() for x in pair] + ["--objective", TINY, "--store", str(tmp_path / "r.sqlite")]
    monkeypatch.setenv("REGBENCH_NATIVE", "0")
    monkeypatch.chdir(tmp_path)
    code, _, err = regbench_in_process(["study", *argv], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("regbench study: error: ") and message in lines[0], lines[0]


def test_a_bad_study_input_is_exit_2_and_one_line_from_the_real_command_too(tmp_path):
    argv = ["--task", "digits", "--regularizer", "zonout", "--trials", "1", "--storage", f"sqlite:///{tmp_path}/s.sqlite",
            "--objective", TINY, "--store", str(tmp_path / "r.sqlite")]
    result = _cli(argv, tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("regbench study: error: unknown regularizer 'zonout'"), result.stderr


def test_from_study_without_trials_is_a_clear_error(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    S.add_from_study_arguments(parser)
    args = parser.parse_args(["--from-study", "nothing-here", "--storage", f"sqlite:///{tmp_path}/s.sqlite"])
    assert S.run_from_study(args) == 2
    assert "no study named 'nothing-here'" in capsys.readouterr().err


def test_rerun_best_uses_fresh_seeds_and_resumes(tmp_path):
    config = _config(tmp_path, trials=2)
    summary = S.run_study(config)
    records = S.rerun_best(config.resolved_name(), config.resolved_storage(), seeds=2, store=config.store,
                           run_fn=TINY, verbose=False)
    assert [r.seed for r in records] == [1, 2]
    frame = _records(config)
    reruns = frame[frame["trial"].isna()]
    assert len(reruns) == 2 and set(reruns["study"]) == {config.resolved_name()}
    best = S.best_configuration(config.resolved_name(), config.resolved_storage())
    assert best["params"] == summary.best_params and best["run_options"] == {"epochs": 2}
    assert set(reruns["spec"]) == {spec_of("zoneout", summary.best_params)}
    again = S.rerun_best(config.resolved_name(), config.resolved_storage(), seeds=3, store=config.store,
                         run_fn=TINY, verbose=False)
    assert [r.seed for r in again] == [3]


def test_pruning_callback_stops_lightning_training(tmp_path):
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y)

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_metric", torch.nn.functional.mse_loss(self.layer(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    data = TensorDataset(torch.randn(16, 2), torch.randn(16, 1))
    loader = DataLoader(data, batch_size=8)

    def fit(pruner):
        study = optuna.create_study(pruner=pruner)
        trial = study.ask()
        callback = S.pruning_callback(trial)
        trainer = pl.Trainer(max_epochs=5, callbacks=[callback], logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
        trainer.fit(Tiny(), loader, loader)
        return trainer, callback, trial

    trainer, callback, trial = fit(optuna.pruners.ThresholdPruner(upper=-1.0))  # prunes at the first report
    assert callback.pruned_at == 0 and trainer.current_epoch == 1
    assert list(trial.storage.get_trial(trial._trial_id).intermediate_values) == [0]
    trainer, callback, trial = fit(optuna.pruners.NopPruner())
    assert callback.pruned_at is None and trainer.current_epoch == 5
    assert sorted(trial.storage.get_trial(trial._trial_id).intermediate_values) == [0, 1, 2, 3, 4]


def slow_run(config, callbacks):
    """tiny_run that takes a few seconds, so that a worker can be killed in the middle of a trial."""
    record = tiny_run(config, callbacks)
    # Long enough that a test polling the storage (each poll opens it anew, a second or so on a
    # loaded machine) sees both workers of a two-worker study in the middle of a trial.
    time.sleep(6)
    return record


_held_calls = 0


def held_run(config, callbacks):
    """tiny_run that, in a process given REGBENCH_TEST_HOLD (a folder), marks each trial it starts
    with a file there and holds a minute in every trial after the first REGBENCH_TEST_HOLD_AFTER
    (0 unless given): a test waits on those files, not on timings, to catch workers mid-trial."""
    global _held_calls
    record = tiny_run(config, callbacks)
    hold = os.environ.get("REGBENCH_TEST_HOLD")
    if hold:
        (Path(hold) / f"{os.getpid()}-{_held_calls}").touch()
        _held_calls += 1
        if _held_calls > int(os.environ.get("REGBENCH_TEST_HOLD_AFTER", "0")):
            time.sleep(60)
    return record


def _holding(hold: Path, count: int, process: subprocess.Popen, seconds: float = 180) -> bool:
    """Wait until ``count`` trials of held_run have started (or the process ended)."""
    deadline = time.time() + seconds
    while len(list(hold.iterdir())) < count and process.poll() is None and time.time() < deadline:
        time.sleep(0.3)
    return len(list(hold.iterdir())) >= count


def _workers_holding(hold: Path) -> set[str]:
    """The worker processes (pids) that have started a held trial."""
    return {path.name.split("-")[0] for path in hold.iterdir()}


def test_killed_worker_loses_nothing_and_the_study_resumes(tmp_path):
    storage = f"sqlite:///{tmp_path}/studies.sqlite"
    store = tmp_path / "results.sqlite"
    hold = tmp_path / "hold"
    hold.mkdir()
    argv = ["--task", "digits", "--regularizer", "zoneout", "--trials", "4", "--storage", storage,
            "--store", str(store), "--objective", "test_study:held_run", "--epochs", "1", "--heartbeat", "1",
            "--no-prune"]
    worker = subprocess.Popen([sys.executable, "-m", "benchmark.study", *argv], cwd=tmp_path,
                              env={**_env(), "REGBENCH_TEST_HOLD": str(hold), "REGBENCH_TEST_HOLD_AFTER": "1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = _config(tmp_path, trials=4)
    try:
        # the first trial finished, the second holding: one done, one running
        assert _holding(hold, 2, worker), "the worker should be holding its second trial"
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    trials = _trials(config)
    finished_before = {t.number for t in trials if S.counted(t)}
    stale = [t.number for t in trials if t.state == TrialState.RUNNING]
    assert finished_before and stale
    stored_before = set(ResultsStore(store).dataframe()["trial"])
    assert stored_before == finished_before  # every finished trial is in the store, nothing else
    # resume: the stale trial is failed by the heartbeat and replaced; the budget is met exactly
    S.run_study(_config(tmp_path, trials=4, run_fn="test_study:held_run", run_options={"epochs": 1},
                        prune=False))  # no hold in this process
    trials = _trials(config)
    counted = [t.number for t in trials if S.counted(t)]
    assert len(counted) == 4 and finished_before <= set(counted)
    for number in stale:
        assert trials[number].state == TrialState.FAIL and "outcome" not in trials[number].user_attrs
    frame = ResultsStore(store).dataframe()
    assert sorted(frame["trial"]) == sorted(counted)  # each trial stored exactly once


def test_two_worker_processes_share_a_sqlite_study(tmp_path, monkeypatch):
    monkeypatch.setenv("REGBENCH_NATIVE", "0")  # inherited by the spawned workers; see _env()
    config = _config(tmp_path, trials=4, workers=2, prune=False)
    summary = S.run_study(config)
    assert sum(summary.outcomes.values()) == 4
    trials = _trials(config)
    counted = [t for t in trials if S.counted(t)]
    assert len(counted) == 4
    workers = {t.user_attrs.get("worker") for t in counted}
    frame = _records(config)
    assert sorted(frame["trial"]) == sorted(t.number for t in counted)
    assert len(workers) >= 1


@pytest.mark.parametrize("name, message", [("", "must not be empty"), ("../..", "cannot be a folder name"),
                                           ("/", "cannot be a folder name")])
def test_a_study_name_that_cannot_be_a_folder_is_refused(tmp_path, name, message):
    with pytest.raises(S.StudyError, match=message):
        S.run_study(_config(tmp_path, study_name=name, trials=1))
    assert not (tmp_path / "results.sqlite").exists()


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("heartbeat", [0, 1])
def test_a_trial_orphaned_by_a_killed_worker_without_heartbeat_does_not_block_the_study(tmp_path, heartbeat, caplog):
    caplog.set_level(logging.INFO, logger="benchmark.study")
    config = _config(tmp_path, trials=1, heartbeat=0)
    S.run_study(config)
    # What a worker started with --heartbeat 0 and killed with -9 in the middle of a trial leaves.
    study = optuna.load_study(study_name=config.resolved_name(), storage=S.open_storage(config.resolved_storage(), None))
    orphan = study.ask()
    orphan.set_user_attr("worker", f"{os.uname().nodename}:{_dead_pid()}")
    orphan.set_user_attr("heartbeat", 0)

    def hung(signum, frame):
        raise TimeoutError("the study waited on the orphaned trial")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        summary = S.run_study(_config(tmp_path, trials=2, heartbeat=heartbeat, verbose=True))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert sum(summary.outcomes.values()) == 2
    trials = {t.number: t for t in _trials(config)}
    assert trials[orphan.number].state == TrialState.FAIL and "outcome" not in trials[orphan.number].user_attrs
    assert f"trial {orphan.number} was left running by" in caplog.text


def always_fails(config, callbacks):
    raise RuntimeError("out of memory (simulated)")


def test_a_study_whose_trials_all_failed_exits_non_zero_and_says_why(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).parent))
    argv = ["--task", "digits", "--regularizer", "zoneout", "--trials", "2", "--storage",
            f"sqlite:///{tmp_path}/s.sqlite", "--store", str(tmp_path / "r.sqlite"), "--objective",
            "test_study:always_fails", "--heartbeat", "0"]
    assert S.main(argv) == 1
    err = capsys.readouterr().err
    assert "no trial of study digits-zoneout finished" in err and "2 failed" in err, err


def test_workers_are_capped_at_the_trials_still_to_run(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="benchmark.study")
    config = _config(tmp_path, trials=1, workers=4, verbose=True)
    S.run_study(config)
    assert "1 trial(s) to run: 1 worker(s), not 4" in caplog.text
    trial = _trials(config)[0]
    assert trial.user_attrs["worker"].endswith(f":{os.getpid()}")  # one worker: this process, none spawned


def test_ctrl_c_on_a_study_with_workers_is_one_line_and_the_study_resumes(tmp_path):
    storage = f"sqlite:///{tmp_path}/studies.sqlite"
    store = tmp_path / "results.sqlite"
    hold = tmp_path / "hold"
    hold.mkdir()
    argv = ["--task", "digits", "--regularizer", "zoneout", "--trials", "4", "--storage", storage,
            "--store", str(store), "--objective", "test_study:held_run", "--epochs", "1", "--heartbeat", "1",
            "--no-prune", "--workers", "2"]
    # Its own process group, as a terminal's foreground job: Ctrl-C reaches every process in it.
    # Ctrl-C's default action in the study, as in a terminal, whatever this process's: an ignored
    # signal stays ignored across exec, and code run earlier in the suite may have left it ignored
    # (in the full suite the study then never saw the Ctrl-C and the test timed out).
    study = subprocess.Popen([sys.executable, "-m", "benchmark.study", *argv], cwd=tmp_path,
                             env={**_env(), "REGBENCH_TEST_HOLD": str(hold)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # each worker holds its first trial for a minute: two files are two workers mid-trial
        assert _holding(hold, 2, study) and len(_workers_holding(hold)) == 2, "both workers should hold a trial"
        os.killpg(study.pid, signal.SIGINT)
        out, err = study.communicate(timeout=120)
    except BaseException:
        try:
            os.killpg(study.pid, signal.SIGKILL)  # leave no worker holding a trial behind
        except ProcessLookupError:
            pass
        raise
    lines = [line for line in err.splitlines() if line.strip()]
    assert study.returncode == 130 and len(lines) == 1 and "interrupted" in lines[0], err
    config = _config(tmp_path, trials=4, run_fn="test_study:held_run", run_options={"epochs": 1}, prune=False)
    assert not [t for t in _trials(config) if t.state == TrialState.RUNNING]  # consistent: nothing left running
    S.run_study(config)  # the same study again resumes and completes (no hold in this process)
    counted = [t.number for t in _trials(config) if S.counted(t)]
    assert len(counted) == 4
    assert sorted(ResultsStore(store).dataframe()["trial"]) == sorted(counted)  # each once


def test_a_stop_swallowed_by_a_finalizer_is_delivered_again_without_a_traceback(monkeypatch, capsys):
    """A worker's stop (KeyboardInterrupt from its SIGTERM handler) can land inside a ``__del__``,
    where Python swallows it; the worker must say nothing and be interrupted again just after."""
    from benchmark.studies import study as worker_side

    class Finalized:
        def __del__(self):
            raise KeyboardInterrupt  # what the signal handler raises when it lands here

    monkeypatch.setattr(worker_side, "_stopping", False)
    monkeypatch.setattr(sys, "unraisablehook", worker_side._redeliver_swallowed_interrupt)
    previous = signal.signal(signal.SIGALRM, worker_side._interrupt)
    reached = []
    try:
        def objective(trial):
            worker_side._stopping = True  # the stop arrives mid-trial...
            Finalized()  # ...inside a finalizer, which swallows it: the trial would carry on
            reached.append(time.time())
            time.sleep(5)
            reached.append("the trial was not interrupted")
            return 0.0

        with pytest.raises(KeyboardInterrupt):
            worker_side._interruptible(objective)(None)
        assert len(reached) == 1 and time.time() - reached[0] < 2
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert "Exception ignored" not in capsys.readouterr().err


def test_opening_a_fresh_storage_that_another_process_is_creating_retries(tmp_path, monkeypatch):
    """Two studies started at once on a new SQLite file race to create Optuna's tables; the loser's
    "UNIQUE constraint failed" (seen on this machine) must mean "open what the winner made"."""
    from sqlalchemy.exc import IntegrityError

    real, calls = optuna.storages.RDBStorage, []

    def racing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise IntegrityError("INSERT INTO alembic_version", {}, Exception(
                "UNIQUE constraint failed: alembic_version.version_num"))
        return real(*args, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    storage = S.open_storage(f"sqlite:///{tmp_path / 'studies.sqlite'}", None)
    assert len(calls) == 2 and storage.get_all_studies() == []


@pytest.mark.parametrize("value", ["0", "-5", "soon", "inf"])
def test_a_storage_timeout_that_is_not_a_positive_number_is_refused(monkeypatch, value):
    monkeypatch.setenv("REGBENCH_STORAGE_TIMEOUT", value)
    with pytest.raises(S.StudyError, match="REGBENCH_STORAGE_TIMEOUT must be a positive number of seconds"):
        S.open_storage("postgresql://nobody@127.0.0.1:1/none", None)


def test_a_reused_process_id_does_not_keep_an_orphaned_trial_running():
    """A worker is its pid and its start time: a later process with the same pid is not that worker."""
    me = os.getpid()
    started = process_started(me)
    assert started is not None and alive(me, started)
    assert not alive(me, started + 1)  # same pid, another process: the worker is gone
    assert alive(me, None)  # an older trial without a start time: the pid alone decides


def test_on_a_track_the_papers_setting_is_trial_0_and_pruning_waits_for_half_the_epochs(tmp_path):
    config = _config(tmp_path, trials=2, run_options={"track": "digits/smoke"})
    S.run_study(config)
    trials = sorted(_trials(config), key=lambda t: t.number)
    assert trials[0].params == {"z_cells": 0.15, "z_states": 0.15}  # digits: the paper's pMNIST zoneout
    assert trials[1].params != trials[0].params
    assert epochs(config) == 6  # digits/smoke trains 6 epochs: the pruner waits for 3
    off_track = _config(tmp_path / "b", trials=1)
    S.run_study(off_track)
    assert _trials(off_track)[0].params != {"z_cells": 0.15, "z_states": 0.15}  # ad-hoc studies only search
