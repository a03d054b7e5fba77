"""The ``regbench`` command run inside the test process: a bad-input case fails before any training,
so a subprocess's 6-7 s of imports would be most of its time. What the user sees is the same:
``main`` returns the exit status (argparse's own errors exit with it), and an exception that
escapes it is a traceback, which fails the test."""

import pytest


def regbench_in_process(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``regbench ARGV``."""
    from benchmark.cli import main

    capsys.readouterr()  # drop what came before
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def offline_cli(monkeypatch, tmp_path):
    """The environment `regbench` sees in the subprocess tests: offline, no store or data folder
    set, run from an empty folder."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("REGBENCH_DATA_DIR", raising=False)
    monkeypatch.delenv("REGBENCH_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path
