"""The ``regbench`` command, run as ``python -m benchmark`` in a subprocess (offline)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import regularizers  # noqa: E402
from benchmark.store import ResultsStore  # noqa: E402


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
def test_bad_input_is_one_line_exit_2_and_no_traceback(case, tmp_path):
    args, expected = BAD_INPUTS[case]
    (tmp_path / "empty").mkdir()
    result = regbench(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not (tmp_path / "regbench_runs").exists()  # nothing started


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
