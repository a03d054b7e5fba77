"""The compiled twin of the fused loops (the sources in ``csrc/``), built on first use.

Built with ``torch.utils.cpp_extension`` (needs a C++ compiler and ninja) into a folder under
``$TORCH_EXTENSIONS_DIR`` (by default ``~/.cache/torch_extensions``) named after what is built:
a digest of the sources, the compiler flags, and the torch (version and folder) and Python. Checkouts and
environments that build the same thing share one build; any that differ get their own folder,
so they never rebuild each other's. The sources are copied into that folder and compiled from
there, so the build does not depend on where the checkout lives. Every build prints a notice.
When it can't be built, or with ``REGBENCH_NATIVE=0``, the Python loops in ``fused.py`` run
instead: same equations, more time per step. The compiled library registers its functions as
dispatcher operators, ``torch.ops.regbench.*`` (``csrc/ops.cpp``; their fake implementations are in
``native_ops.py``), and ``loops()`` returns them under the Python loops' names. The library also
draws the CPU's dropout masks (``bernoulli_mask``, a parallel Philox sampler keyed from torch's
generator); without it masks come from ``torch.rand``, so a given seed draws other masks.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .native_ops import Operators

_CSRC = Path(__file__).with_name("csrc")
# Every file of the build, headers included: an edit of any of them is another build folder.
_SOURCES = sorted([*_CSRC.glob("*.cpp"), *_CSRC.glob("*.h")])
_NAME = "regbench_fused_loops"
_lock = threading.Lock()
_state: dict[str, Operators | None] = {}


def enabled() -> bool:
    return os.environ.get("REGBENCH_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def loops() -> Operators | None:
    """The compiled loops as dispatcher operators (``torch.ops.regbench.*``, under the names of the
    Python loops, with their fake implementations: see ``native_ops.py``), or None where they are
    disabled or could not be built."""
    if not enabled():
        return None
    if "module" not in _state:
        with _lock:
            if "module" not in _state:
                # Loading the library registers the operators (csrc/ops.cpp's TORCH_LIBRARY).
                _state["module"] = None if _build() is None else _operators()
    return _state["module"]


def _operators() -> Operators | None:
    try:
        from . import native_ops

        return native_ops.operators()
    except Exception as error:  # a library without the operators (an older build), a torch without torch.library
        warnings.warn(f"regbench: the native loops' operators could not be registered ({type(error).__name__}: "
                      f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}); using the Python loops.",
                      RuntimeWarning, stacklevel=4)
        return None


# A build takes about a minute; a lock this old was left by a process killed while building,
# and torch's own lock would make every later process wait on it forever.
_STALE_LOCK_SECONDS = 600

# -fno-trapping-math lets the compiler turn the clamps of the vectorized exp into selects, and
# -fno-math-errno lets it vectorize square roots (the loops never enable floating-point traps nor
# read errno; PyTorch itself is built with both); without them the element-wise loops stay scalar.
_CFLAGS = ["-O3", "-fno-trapping-math", "-fno-math-errno"]


def _openmp_flags() -> list[str]:
    """-fopenmp where torch runs its threads with OpenMP (Linux builds): ATen's at::parallel_for is
    inline, and its ``#pragma omp parallel`` only runs in parallel when the extension is compiled with
    OpenMP; without it every parallel_for of the loops ran on one thread. Linked with -fopenmp, the
    library asks for libgomp.so.1, which resolves to the copy torch has already loaded (one runtime,
    one thread count: torch.set_num_threads applies)."""
    import torch

    return ["-fopenmp"] if sys.platform.startswith("linux") and torch.backends.openmp.is_available() else []


def build_directory() -> Path:
    """Where the loops of these sources, these flags and this torch and Python are built."""
    import torch
    from torch.utils import cpp_extension

    key = hashlib.sha256()
    # The torch folder too: its headers' paths are in the build file, so two environments with
    # the same torch version would otherwise make ninja rebuild each other's build.
    flags = "\0".join(_CFLAGS + _openmp_flags()).encode()
    for part in (*(_source_part(source) for source in _SOURCES), flags, torch.__version__.encode(),
                 str(Path(torch.__file__).parent).encode(), sys.implementation.cache_tag.encode(),
                 sys.platform.encode()):
        key.update(hashlib.sha256(part).digest())
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
    return Path(root) / f"{_NAME}_{key.hexdigest()[:16]}"


def _source_part(source: Path) -> bytes:
    """A source's name and content: a renamed file is another build too."""
    return source.name.encode() + b"\0" + source.read_bytes()


def _remove_stale_lock(folder: Path) -> None:
    try:
        lock = folder / "lock"
        if lock.exists() and time.time() - lock.stat().st_mtime > _STALE_LOCK_SECONDS:
            lock.unlink()
            warnings.warn(f"regbench: removed a stale build lock {lock} (left by an interrupted build)",
                          RuntimeWarning, stacklevel=4)
    except OSError:
        pass


def _copy_sources(folder: Path) -> list[Path]:
    """The sources inside the build folder (each written once, atomically; their content is in the
    folder's name), headers next to the files that include them. Returns the ``.cpp`` copies."""
    copies = []
    for source in _SOURCES:
        copy = folder / source.name
        if not copy.exists():
            temporary = folder / f".{source.name}.{os.getpid()}.tmp"
            temporary.write_bytes(source.read_bytes())
            os.replace(temporary, copy)
        if copy.suffix == ".cpp":
            copies.append(copy)
    return copies


def _build() -> ModuleType | None:
    try:
        from torch.utils import cpp_extension

        if not any(source.suffix == ".cpp" for source in _SOURCES):
            raise FileNotFoundError(f"no C++ sources in {_CSRC}")
        folder = build_directory()
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale_lock(folder)
        sources = _copy_sources(folder)
        if not any(folder.glob("*.so")):
            print(f"regbench: compiling the native recurrent loops into {folder} (about a minute; once for "
                  "these sources, torch and Python)...", file=sys.stderr, flush=True)
        return cpp_extension.load(name=folder.name, sources=[str(source) for source in sources],
                                  extra_cflags=_CFLAGS + _openmp_flags(), extra_ldflags=_openmp_flags(),
                                  build_directory=str(folder), verbose=False)
    except Exception as error:  # no compiler, no ninja, unsupported platform: the Python loops work
        warnings.warn(f"regbench: the native recurrent loops could not be built ({type(error).__name__}: "
                      f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}); using the Python "
                      "loops, which compute the same equations more slowly. Set REGBENCH_NATIVE=0 to skip the attempt.",
                      RuntimeWarning, stacklevel=3)
        return None
