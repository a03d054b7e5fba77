"""Config files in (``regbench run --config``), ``config.yaml`` out of every run, and a rerun from it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark.cli import build_parser, main  # noqa: E402
from benchmark.cli.config import expand_config  # noqa: E402
from benchmark.run_command import build_configs  # noqa: E402
from benchmark.store import ResultsStore  # noqa: E402


def _configs(argv):
    parser, _ = build_parser()
    return build_configs(parser.parse_args([argv[0], *expand_config(parser.subcommand_parsers[argv[0]], argv[1:])]))


def test_a_config_file_is_the_same_as_its_options_and_the_command_line_wins(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"task": "digits", "regularizer": ["zoneout"], "set": ["z_states=0.1"],
                                    "seeds": 2, "scale": 0.05, "epochs": 1, "data-dir": "somewhere",
                                    "rerun": True}))
    from_file = _configs(["run", "--config", str(path)])
    by_hand = _configs(["run", "--task", "digits", "--regularizer", "zoneout", "--set", "z_states=0.1",
                        "--seeds", "2", "--scale", "0.05", "--epochs", "1", "--data-dir", "somewhere"])
    assert from_file == by_hand
    overridden = _configs(["run", "--config", str(path), "--epochs", "3", "--task", "pmnist"])
    assert {c.epochs for c in overridden} == {3} and {c.task for c in overridden} == {"pmnist"}


@pytest.mark.parametrize("text, expected", [
    ("epoch: 3\n", "unknown option 'epoch'"),
    ("- just\n- a list\n", "must be a mapping"),
    ("seeds: [1, 2]\n", "takes one value"),
    ("seeds: many\n", "invalid int value"),
])
def test_a_bad_config_file_is_one_line_exit_2(text, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(SystemExit) if "invalid" in expected else _no_exit():
        code = main(["run", "--config", "bad.yaml"])
        assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and lines[0].startswith("regbench run: error:"), lines
    assert not (tmp_path / "regbench_runs").exists()


class _no_exit:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_missing_config_file_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["study", "--config", "nowhere.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("regbench study: error: --config nowhere.yaml cannot be read")


def test_each_run_saves_config_yaml_and_running_it_repeats_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REGBENCH_STORE", raising=False)
    (tmp_path / "run.yaml").write_text("task: digits\nregularizer: zoneout\nset: [z_states=0.1]\nscale: 0.05\n"
                                       "epochs: 1\nstore: results.sqlite\nout: runs\nno_leaderboard: true\n")
    assert main(["run", "--config", "run.yaml"]) == 0
    [record] = ResultsStore(tmp_path / "results.sqlite").records()
    saved = Path(record.run_dir) / "config.yaml"
    assert saved.exists()
    options = yaml.safe_load(saved.read_text())
    assert options["task"] == ["digits"] and options["seeds"] == 1 and options["out"] == "runs"
    assert options["store"] == "results.sqlite" and options["regularizer"] == [record.spec]
    capsys.readouterr()
    # The same configuration, hence the same run folder: already finished, its record reused.
    first = _configs(["run", "--config", "run.yaml"])
    again = _configs(["run", "--config", str(saved)])
    from benchmark.runner import plan_run

    assert [plan_run(c).base_run_dir for c in again] == [plan_run(c).base_run_dir for c in first]
    assert main(["run", "--config", str(saved), "--no-leaderboard"]) == 0
    assert "1 of 1 run(s) already finished" in capsys.readouterr().out
    assert len(ResultsStore(tmp_path / "results.sqlite")) == 1


def test_a_study_takes_a_config_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump({
        "task": "digits", "regularizer": "zoneout", "trials": 2, "storage": f"sqlite:///{tmp_path}/s.sqlite",
        "store": str(tmp_path / "r.sqlite"), "objective": "tiny_objective:tiny_run", "heartbeat": 0}))
    assert main(["study", "--config", "study.yaml"]) == 0, capsys.readouterr().err
    import optuna

    study = optuna.load_study(study_name="digits-zoneout", storage=f"sqlite:///{tmp_path}/s.sqlite")
    assert len(study.trials) == 2
