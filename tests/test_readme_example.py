"""The README's "Write your own regularizer" example runs as written.

The code is the first ```python block under the heading ``## Write your own regularizer`` in
README.md. It runs in a subprocess in a temporary folder (its benchmark
run writes its results there).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from regularizers import native  # noqa: E402

HEADING = "## Write your own regularizer"
SOURCES = [ROOT / "README.md"]


def section_code() -> tuple[Path, str]:
    for path in SOURCES:
        if not path.exists():
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        starts = [k for k, line in enumerate(lines) if line.strip() == HEADING]
        if not starts:
            continue
        body = []
        for line in lines[starts[0] + 1:]:
            if re.match(r"#{1,2} ", line):  # the next section of the same or a higher level
                break
            body.append(line)
        match = re.search(r"^```python[ \t]*\n(.*?)^```", "\n".join(body) + "\n", flags=re.S | re.M)
        assert match, f"{path.name}: no ```python block under {HEADING!r}"
        return path, match.group(1)
    pytest.fail(f"README.md has no section {HEADING!r}")


def test_the_example_shows_the_whole_protocol():
    path, code = section_code()
    for needed in ("@register(", "hyperparameters", "probability(", "def masks(self, ctx)", "RegularizedLSTM(",
                   ".backward()"):
        assert needed in code, f"{path.name}: the example lost {needed!r}"
    assert len(code.splitlines()) < 60, "the example should stay short"


def test_the_example_runs(tmp_path):
    path, code = section_code()
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["REGBENCH_STORE"] = str(tmp_path / "results.sqlite")
    # The compiled loops where this process has them (built by the earlier tests: here a no-op), as a
    # reader's run would have them: the track trains in 40 s with them, 66 s on the Python loops.
    if native.loops() is None:
        env["REGBENCH_NATIVE"] = "0"  # none here: skip the subprocess's attempt to build them
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"the example in {path.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert "run_experiment" in code, "the example no longer benchmarks the new regularizer on a track"
    last = result.stdout.strip().splitlines()[-1].split()
    assert last[0] == "ok", result.stdout[-2000:]
    assert 0.0 <= float(last[1]) < 0.5  # an error rate on a real track: far from chance (0.9)
    assert (tmp_path / "results.sqlite").exists()
