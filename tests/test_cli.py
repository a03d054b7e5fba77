"""The ``regbench`` command, run as ``python -m benchmark`` in a subprocess (offline)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import regularizers  # noqa: E402
from benchmark.store import ResultsStore  # noqa: E402
from in_process import offline_cli, regbench_in_process  # noqa: E402,F401 (offline_cli: a fixture)


def regbench(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("REGBENCH_DATA_DIR", None)
    env.pop("REGBENCH_STORE", None)
    return subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


BAD_INPUTS = {
    "unknown task": (["run", "--task", "penn"], "valid tasks: char_ptb"),
    "unknown regularizer": (["run", "--task", "digits", "--regularizer", "zonout"], "Did you mean 'zoneout'"),
    "unknown hyperparameter": (["run", "--task", "digits", "--regularizer", "zoneout", "--set", "rate=0.1"],
                               "unknown hyperparameter 'rate'"),
    "out of range": (["run", "--task", "digits", "--regularizer", "zoneout", "--set", "z_cells=1.5"],
                     "out of range"),
    "not a number": (["run", "--task", "digits", "--regularizer", "zoneout", "--set", "z_cells=half"],
                     "expects float"),
    "unsupported cell": (["run", "--task", "digits", "--regularizer", "rnndrop", "--cell", "gru"],
                         "does not support GRU"),
    "missing data": (["run", "--task", "char_ptb", "--regularizer", "none", "--data-dir", "empty"],
                     "data set 'char_ptb' not found"),
    "bad scale": (["run", "--task", "digits", "--scale", "huge"], "unknown scale 'huge'"),
    "unknown option": (["run", "--epoch", "3"], "unrecognized arguments"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_no_traceback(case, offline_cli, capsys):
    args, expected = BAD_INPUTS[case]
    (offline_cli / "empty").mkdir()
    code, out, err = regbench_in_process(args, capsys)
    assert code == 2, err
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], err
    assert not (offline_cli / "regbench_runs").exists()  # nothing started


def test_a_bad_input_is_exit_2_and_one_line_from_the_real_command_too(tmp_path):
    result = regbench(*BAD_INPUTS["unknown regularizer"][0], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Did you mean 'zoneout'" in lines[0] and "Traceback" not in result.stdout


def test_list_shows_every_task_regularizer_and_default(tmp_path):
    result = regbench("list", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for task in ("char_ptb", "word_ptb", "text8", "pmnist", "smnist", "digits", "embedded_text"):
        assert task in text
    blocks = text.split("\n\n")  # one block per regularizer: its title line, then its table
    for name in regularizers.available():
        block = next((b for b in blocks if f"\n  {name}  [cells" in "\n" + b), None)
        assert block is not None, f"{name} missing"
        for key, spec in regularizers.get(name).hyperparameters.items():
            line = next((line for line in block.splitlines() if line.strip().startswith(key + " ")), None)
            assert line is not None, f"{name}.{key} missing"
            default = spec.default
            shown = ("true" if default else "false") if isinstance(default, bool) else \
                f"{default:g}" if isinstance(default, float) else str(default)
            assert shown in line.split() and spec.describe_range() in line


def test_run_trains_stores_and_writes_leaderboards(tmp_path):
    args = ("run", "--task", "digits", "--regularizer", "zoneout", "--set", "z_states=0.1", "--seeds", "2",
            "--scale", "0.05", "--epochs", "1", "--store", "results.sqlite", "--out", "runs",
            "--leaderboards", "boards", "--workers", "2")
    result = regbench(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "[2/2] digits zoneout:" in result.stdout
    frame = ResultsStore(tmp_path / "results.sqlite").dataframe()
    assert sorted(frame["seed"]) == [0, 1] and set(frame["status"]) == {"ok"}
    assert all(h["z_states"] == 0.1 for h in frame["hyperparameters"])
    assert all((Path(tmp_path / d) / "checkpoints" / "last.ckpt").exists() for d in frame["run_dir"])
    assert any((tmp_path / "boards").iterdir())
    # The same command again only completes what is missing: nothing here.
    again = regbench(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "2 of 2 run(s) already finished" in again.stdout and "[1/" not in again.stdout
    assert len(ResultsStore(tmp_path / "results.sqlite")) == 2


def test_no_arguments_is_the_default_track_with_every_regularizer():
    from benchmark.cli import build_parser
    from benchmark.run_command import build_configs
    from benchmark.tracks import DEFAULT_TRACK, get_track

    parser, _ = build_parser()
    configs = build_configs(parser.parse_args(["run"]))
    track = get_track(DEFAULT_TRACK)
    assert track.task == "digits" and not track.smoke  # embedded data, and a real result
    assert {c.track for c in configs} == {DEFAULT_TRACK} and {c.task for c in configs} == {"digits"}
    assert {c.regularizer for c in configs} == set(regularizers.available())
    assert {c.seed for c in configs} == set(range(track.seeds))
    assert len(configs) == track.seeds * len(regularizers.available())
    gru = build_configs(parser.parse_args(["run", "--cell", "gru"]))
    assert {c.regularizer for c in gru} == {n for n in regularizers.available()
                                            if "gru" in regularizers.get(n).cell_types}


def _in_process(argv, tmp_path, monkeypatch, capsys):
    """``regbench ARGV`` in this process (no interpreter start-up): exit code and stderr."""
    from benchmark.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REGBENCH_STORE", raising=False)
    code = main(argv)
    return code, capsys.readouterr().err


def _garbage_store(tmp_path):
    (tmp_path / "garbage.sqlite").write_bytes(b"\x00\xffnot a database" * 100)


def _truncated_store(tmp_path):
    store = ResultsStore(tmp_path / "full.sqlite")
    for seed in range(300):
        store.append({"task": "digits", "regularizer": "none", "seed": seed, "status": "ok",
                      "val_curve": [0.5] * 50, "reason": "x" * 200})
    with sqlite3.connect(tmp_path / "full.sqlite") as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = (tmp_path / "full.sqlite").read_bytes()
    (tmp_path / "truncated.sqlite").write_bytes(data[: len(data) // 2])


BAD_PLACES = {
    "garbage store": (_garbage_store, ["--store", "garbage.sqlite"], "cannot use the results store garbage.sqlite"),
    "truncated store": (_truncated_store, ["--store", "truncated.sqlite"], "cannot use the results store truncated"),
    "store is a folder": (lambda p: (p / "folder").mkdir(), ["--store", "folder"], "cannot use the results store folder"),
    "out is a file": (lambda p: (p / "file").write_text("x"), ["--out", "file/runs"], "--out file/runs cannot be written"),
    "leaderboards is a file": (lambda p: (p / "file").write_text("x"), ["--leaderboards", "file"],
                               "--leaderboards file cannot be written"),
}


@pytest.mark.parametrize("case", list(BAD_PLACES))
def test_an_unusable_output_place_is_one_line_before_any_training(case, tmp_path, monkeypatch, capsys):
    make, options, expected = BAD_PLACES[case]
    make(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and not p.name.endswith(("-shm", "-wal"))}
    argv = ["run", "--task", "digits", "--regularizer", "none", "--scale", "tiny", "--epochs", "1", *options]
    code, err = _in_process(argv, tmp_path, monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
    assert {name: (tmp_path / name).read_bytes() for name in before} == before  # nothing overwritten
    assert not list(tmp_path.glob("**/record.json")) and not list(tmp_path.glob("**/*.ckpt"))  # nothing trained


@pytest.mark.parametrize("make", [_garbage_store, _truncated_store])
def test_leaderboard_of_a_damaged_store_is_one_line(make, tmp_path, monkeypatch, capsys):
    make(tmp_path)
    name = "garbage.sqlite" if make is _garbage_store else "truncated.sqlite"
    code, err = _in_process(["leaderboard", "--store", name, "--out", "boards"], tmp_path, monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot use the results store" in err, err


def test_a_data_file_of_garbage_is_one_line(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        (folder / f"ptb.char.{split}.txt").write_text("a b \n")
    (folder / "ptb.char.valid.txt").write_bytes(bytes(range(256)) * 4)
    code, err = _in_process(["run", "--task", "char_ptb", "--regularizer", "none", "--data-dir", "data"],
                            tmp_path, monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "ptb.char.valid.txt: not UTF-8 text" in err


@pytest.mark.parametrize("argv, expected", [
    (["run", "--task", "digits", "--first-seed", "-1"], "--first-seed must be 0 or more, got -1"),
    (["run", "--task", "digits", "--threads", "0"], "--threads must be at least 1, got 0"),
    (["run", "--task", "digits", "--threads", "-1"], "--threads must be at least 1, got -1"),
    (["run", "--task", "digits", "--regularizer", "none", "--hidden-size", "3000000"], "choose a smaller --hidden-size"),
    (["study", "--task", "digits", "--regularizer", "zoneout", "--trials", "1", "--seed", "-1"],
     "--seed must be in [0, 4294967295], got -1"),
    (["study", "--task", "digits", "--regularizer", "zoneout", "--trials", "1", "--startup-trials", "-1"],
     "--startup-trials must be 0 or more"),
    (["study", "--task", "digits", "--regularizer", "zoneout", "--trials", "1", "--study-name", ""],
     "--study-name must not be empty"),
])
def test_bad_numbers_are_one_line_before_any_work(argv, expected, tmp_path, monkeypatch, capsys):
    code, err = _in_process(argv, tmp_path, monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
    assert not list(tmp_path.glob("**/*.sqlite")) and not list(tmp_path.glob("**/*.ckpt"))


def test_a_run_another_process_finished_since_the_command_started_is_taken_not_repeated(tmp_path):
    """Two identical commands started minutes apart: by the time the second reaches a configuration
    the first has finished it, so the second takes that record instead of storing a duplicate."""
    from benchmark.runner import RunConfig, run_experiment
    from benchmark.suite import run_all

    config = RunConfig(track="digits/smoke", out_dir=str(tmp_path / "runs"), store_path=str(tmp_path / "r.sqlite"),
                       progress_bar=False)
    first = run_experiment(config)  # "the other process"
    [second] = run_all([config], skip_finished=True)
    assert second.stored and second.id == first.id
    assert len(ResultsStore(tmp_path / "r.sqlite")) == 1
    [again] = run_all([config], skip_finished=False)  # --rerun: a new attempt on purpose
    assert again.id not in (None, first.id) and len(ResultsStore(tmp_path / "r.sqlite")) == 2
