"""A regularizer from another package, found through the ``regbench.regularizers`` entry points.

``tests/plugin_example`` is a tiny installable package. It is installed (offline, no build
isolation) into a temporary folder, and discovery runs in a subprocess, so that this test
process's registry stays as it is.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = Path(__file__).resolve().parent / "plugin_example"


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    if importlib.util.find_spec("pip") is None:
        pytest.skip("pip is not available in this Python, so the example plugin cannot be installed")
    base = tmp_path_factory.mktemp("plugin")
    source = base / "source"  # a copy: building in place would leave build/ and *.egg-info in the repo
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = base / "site"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "--target", str(target), str(source)],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"
    return target


def run_python(code: str, *paths: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), str(ROOT)])
    # discovery is under test here, not the loops: skip building the compiled loops in the child
    env.setdefault("REGBENCH_NATIVE", "0")
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            env=env, cwd=str(ROOT), timeout=300)
    assert result.returncode == 0, f"subprocess failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_entry_points_register_the_plugin_and_a_layer_uses_it(installed_plugin):
    report = run_python("""
        import json, warnings
        from importlib import metadata
        import torch
        import regularizers as R

        entry_points = {ep.name: ep.value for ep in metadata.entry_points(group=R.ENTRY_POINT_GROUP)}
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # loading a good plugin warns about nothing
            names = R.available()
        hidden_noise, gaussian_dropout = R.get("hidden_noise"), R.get("gaussian_dropout")

        torch.manual_seed(0)
        layer = R.RegularizedLSTM(3, 4, regularizers=["hidden_noise:sigma=0.5", "gaussian_dropout:p=0.2"])
        x = torch.randn(6, 2, 3)
        out = layer(x)[0]
        out.sum().backward()
        plain = torch.nn.LSTM(3, 4)
        plain.load_state_dict(layer.state_dict())
        layer.eval()
        print(json.dumps({
            "entry_points": entry_points,
            "available": names,
            "hidden_noise": [hidden_noise.name, hidden_noise.__module__, hidden_noise.search_space.__name__],
            "gaussian_dropout": [gaussian_dropout.name, gaussian_dropout.__module__],
            "spec": layer.regularizers[0].spec,
            "train_differs": not torch.allclose(out, plain(x)[0], atol=1e-4),
            "eval_equals_plain": torch.allclose(layer(x)[0], plain(x)[0], atol=1e-6),
            "grads": all(p.grad is not None and torch.isfinite(p.grad).all().item() for p in layer.parameters()),
        }))
    """, installed_plugin)
    assert report["entry_points"] == {"hidden_noise": "regbench_plugin_example.hidden_noise:HiddenNoise",
                                      "gaussian_dropout": "regbench_plugin_example.gaussian_dropout"}
    assert {"hidden_noise", "gaussian_dropout", "zoneout"} <= set(report["available"])
    # a class entry point is registered under the entry point's name; a module registers itself
    assert report["hidden_noise"][:2] == ["hidden_noise", "regbench_plugin_example.hidden_noise"]
    assert report["gaussian_dropout"] == ["gaussian_dropout", "regbench_plugin_example.gaussian_dropout"]
    assert report["spec"] == "hidden_noise:sigma=0.5"
    assert report["train_differs"] and report["eval_equals_plain"] and report["grads"]


def test_reload_plugins_sees_a_plugin_installed_after_import(installed_plugin):
    report = run_python(f"""
        import importlib, json, sys
        import regularizers as R

        before = R.available()
        sys.path.insert(0, {str(installed_plugin)!r})
        importlib.invalidate_caches()
        cached = R.available()  # entry points are read once ...
        R.reload_plugins()  # ... until asked again
        print(json.dumps({{"before": before, "cached": cached, "after": R.available()}}))
    """)
    assert "hidden_noise" not in report["before"] and "hidden_noise" not in report["cached"]
    assert {"hidden_noise", "gaussian_dropout"} <= set(report["after"])
    assert set(report["before"]) <= set(report["after"])


def test_a_broken_plugin_warns_and_the_rest_still_works(installed_plugin, tmp_path):
    # A second distribution whose entry point cannot be imported: written as bare metadata.
    dist_info = tmp_path / "broken_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[regbench.regularizers]\nbroken = broken_plugin.missing_module\n")
    report = run_python("""
        import json, warnings
        import regularizers as R

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            names = R.available()
        print(json.dumps({"available": names, "warnings": [str(w.message) for w in caught]}))
    """, installed_plugin, tmp_path)
    assert "hidden_noise" in report["available"] and "zoneout" in report["available"]
    assert "broken" not in report["available"]
    assert any("broken" in message and "broken_plugin.missing_module" in message for message in report["warnings"])


def test_the_example_package_is_not_built_in_place():
    assert not (EXAMPLE / "build").exists() and not list(EXAMPLE.glob("*.egg-info")), \
        "build artefacts in tests/plugin_example: install from a copy"
