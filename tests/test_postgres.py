"""Workers on several machines share a study through PostgreSQL: tested with a real server.

``.ci/postgres.sh start DIR PORT`` installs PostgreSQL if missing (apt, as root) and starts a
throwaway cluster on 127.0.0.1 in a temporary folder; the test is skipped, with the reason,
when that is impossible. Two worker processes run one study at the same time; every trial must
be run exactly once and the budget met exactly.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCRIPT = ROOT / ".ci" / "postgres.sh"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """(URL, cluster folder) of a throwaway server."""
    pytest.importorskip("psycopg2", reason="psycopg2-binary is not installed (pip install psycopg2-binary)")
    folder = tmp_path_factory.mktemp("postgres")
    try:
        started = subprocess.run(["bash", str(SCRIPT), "start", str(folder), str(_free_port())],
                                 capture_output=True, text=True, timeout=180)
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"PostgreSQL could not be started: {error}")
    if started.returncode != 0:
        reason = (started.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"PostgreSQL could not be started by .ci/postgres.sh: {reason}")
    yield started.stdout.strip().splitlines()[-1], folder
    subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def postgres_url(postgres):
    return postgres[0]


def test_two_workers_share_a_postgres_study(postgres_url, tmp_path):
    import optuna
    from optuna.trial import TrialState

    from benchmark import study as S
    from benchmark.store import ResultsStore

    store = tmp_path / "results.sqlite"
    name = f"pg-{os.getpid()}-{tmp_path.name}"[:60]
    argv = [sys.executable, "-m", "benchmark.study", "--task", "digits", "--regularizer", "zoneout",
            "--trials", "6", "--storage", postgres_url, "--study-name", name, "--store", str(store),
            "--objective", "test_study:slow_run", "--epochs", "1", "--no-prune", "--heartbeat", "2"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]), OMP_NUM_THREADS="1",
               REGBENCH_NATIVE="0")
    # two "machines": independent processes that only share the PostgreSQL storage
    workers = [subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err

    storage = S.open_storage(postgres_url, None)
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    counted = [t for t in trials if S.counted(t)]
    assert len(counted) == 6  # the budget, exactly
    assert all(t.state == TrialState.COMPLETE for t in counted)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    # every counted trial has its own number and its own record in the results store
    frame = ResultsStore(store).dataframe()
    assert sorted(frame["trial"]) == sorted(t.number for t in counted)
    assert len(set(frame["trial"])) == len(frame)
    for trial in counted:
        assert trial.value == pytest.approx(frame[frame["trial"] == trial.number]["best_val_metric"].iloc[0])
    # both processes did work: the study really was shared
    assert len({t.user_attrs["worker"] for t in counted}) == 2
    # surplus trials (a worker that lost the race for the last slot) have no outcome and no record
    for trial in trials:
        if trial not in counted:
            assert trial.state == TrialState.FAIL and "outcome" not in trial.user_attrs
    # the storage URL can also be read back through the CLI's one-line-error path
    result = subprocess.run([sys.executable, "-m", "benchmark.study", "--task", "embedded_text",
                             "--regularizer", "zoneout", "--trials", "1", "--storage", postgres_url,
                             "--study-name", name, "--objective", "tiny_objective:tiny_run"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "belongs to another experiment: task='digits'" in result.stderr


def _server_processes(folder: Path) -> list[int]:
    """The postmaster of the cluster in ``folder`` and its children (backends, background workers)."""
    postmaster = int((folder / "data" / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            children.append(int(stat.parent.name))
    return [postmaster, *children]


def test_a_server_that_stops_answering_ends_the_study_with_one_line(postgres, tmp_path):
    url, folder = postgres
    name = f"pg-stop-{os.getpid()}-{tmp_path.name}"[:60]
    argv = [sys.executable, "-m", "benchmark.study", "--task", "digits", "--regularizer", "zoneout",
            "--trials", "3", "--storage", url, "--study-name", name, "--store", str(tmp_path / "results.sqlite"),
            "--objective", "test_study:slow_run", "--epochs", "1", "--no-prune", "--heartbeat", "0"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]), OMP_NUM_THREADS="1",
               REGBENCH_NATIVE="0", REGBENCH_STORAGE_TIMEOUT="4")
    worker = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stopped: list[int] = []
    try:
        deadline = time.time() + 120
        from benchmark import study as S

        while time.time() < deadline and worker.poll() is None:  # until a trial runs
            time.sleep(0.5)
            try:
                trials = S.load_study(S.open_storage(url, None), name).get_trials(deepcopy=False)
            except S.StudyError:
                continue
            if trials:
                break
        stopped = _server_processes(folder)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        out, err = worker.communicate(timeout=90)  # hung forever before
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        if worker.poll() is None:
            worker.kill()
    lines = [line for line in err.strip().splitlines() if line]
    assert worker.returncode != 0 and "Traceback" not in err, err
    assert len(lines) == 1 and "the study storage postgresql://regbench@" in lines[0], err
