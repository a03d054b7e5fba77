"""The compiled twin of the fused loops (``csrc/fused_loops.cpp``), built on first use.

Built once per machine and torch version with ``torch.utils.cpp_extension`` (needs a C++
compiler and ninja; the build is cached under ``$TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``, and rebuilt when the source changes). When it can't be built,
or with ``REGBENCH_NATIVE=0``, the Python loops in ``fused.py`` run instead: same equations,
more time per step. The module also draws the CPU's dropout masks (``bernoulli_mask``, a parallel
Philox sampler keyed from torch's generator); without it masks come from ``torch.rand``, so a
given seed draws other masks.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import warnings
from pathlib import Path
from types import ModuleType

_SOURCE = Path(__file__).with_name("csrc") / "fused_loops.cpp"
_NAME = "regbench_fused_loops"
_lock = threading.Lock()
_state: dict[str, ModuleType | None] = {}


def enabled() -> bool:
    return os.environ.get("REGBENCH_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def loops() -> ModuleType | None:
    """The compiled module, or None where it is disabled or could not be built."""
    if not enabled():
        return None
    if "module" not in _state:
        with _lock:
            if "module" not in _state:
                _state["module"] = _build()
    return _state["module"]


# A build takes about a minute; a lock this old was left by a process killed while building,
# and torch's own lock would make every later process wait on it forever.
_STALE_LOCK_SECONDS = 600

# -fno-trapping-math lets the compiler turn the clamps of the vectorized exp into selects, and
# -fno-math-errno lets it vectorize square roots (the loops never enable floating-point traps nor
# read errno; PyTorch itself is built with both); without them the element-wise loops stay scalar.
_CFLAGS = ["-O3", "-fno-trapping-math", "-fno-math-errno"]


def _remove_stale_lock(cpp_extension) -> None:
    try:
        lock = Path(cpp_extension._get_build_directory(_NAME, verbose=False)) / "lock"
        if lock.exists() and time.time() - lock.stat().st_mtime > _STALE_LOCK_SECONDS:
            lock.unlink()
            warnings.warn(f"regbench: removed a stale build lock {lock} (left by an interrupted build)",
                          RuntimeWarning, stacklevel=4)
    except OSError:
        pass


def _build() -> ModuleType | None:
    try:
        from torch.utils import cpp_extension

        if not _SOURCE.exists():
            raise FileNotFoundError(_SOURCE)
        _remove_stale_lock(cpp_extension)
        print("regbench: compiling the native recurrent loops (once per machine, about a minute)...",
              file=sys.stderr, flush=True) if not _is_built(cpp_extension) else None
        return cpp_extension.load(name=_NAME, sources=[str(_SOURCE)],
                                  extra_cflags=_CFLAGS, verbose=False)
    except Exception as error:  # no compiler, no ninja, unsupported platform: the Python loops work
        warnings.warn(f"regbench: the native recurrent loops could not be built ({type(error).__name__}: "
                      f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}); using the Python "
                      "loops, which compute the same equations more slowly. Set REGBENCH_NATIVE=0 to skip the attempt.",
                      RuntimeWarning, stacklevel=3)
        return None


def _is_built(cpp_extension) -> bool:
    """Whether a build directory for this extension exists already (then loading is quick)."""
    try:
        root = Path(cpp_extension._get_build_directory(_NAME, verbose=False))
    except Exception:
        return False
    return any(root.glob("*.so"))
