"""Checkpoints that make a resumed run the same run, and that are never left half-written.

* :class:`RandomState`, a Lightning callback, saves the global random generators (torch's, which
  also keys the native mask sampler, Python's, NumPy's, CUDA's) in the checkpoint and restores
  them when training resumes; with the DataModules' own shuffling generators (their
  ``state_dict``), an interrupted and resumed run draws the same batches and masks as one run
  in one go.
* :class:`AtomicCheckpointIO`, a Lightning checkpoint plugin, writes a checkpoint to a temporary
  file in the same folder, syncs it and renames it over the old one: a crash or a full disk
  leaves the previous checkpoint whole.
* :func:`unreadable_reason` says why a checkpoint cannot be loaded (None when it can), so that the
  runner can set a damaged one aside and start afresh instead of failing on every rerun.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch import Callback

__all__ = ["RandomState", "AtomicCheckpointIO", "unreadable_reason"]


class RandomState(Callback):
    """Carries the random generators through a checkpoint (see the module docstring)."""

    KEY = "regbench_random_state"

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        states = _collect_rng_states(include_cuda=torch.cuda.is_available())
        if "numpy" in states:  # a plain list: checkpoints load with weights_only=True, which refuses arrays
            name, keys, position, has_gauss, gauss = states["numpy"]
            states["numpy"] = [name, keys.tolist(), position, has_gauss, gauss]
        checkpoint[self.KEY] = states

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        # Lightning restores callbacks before it creates the first data iterator, which (for a
        # loader without its own generator) draws a seed from torch's generator: restored now,
        # the resumed run draws it from the same state as the uninterrupted one did.
        states = checkpoint.get(self.KEY)
        if states is None or trainer.state.fn != "fit":  # testing the best checkpoint draws nothing that counts
            return
        if "numpy" in states:
            import numpy as np

            name, keys, position, has_gauss, gauss = states["numpy"]
            states = {**states, "numpy": (name, np.asarray(keys, dtype=np.uint32), position, has_gauss, gauss)}
        _set_rng_states(states)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose writes replace the old file only once the new one is complete."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _sync_folder(path.parent)  # the rename itself survives a power cut


def _sync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def unreadable_reason(path: str | os.PathLike) -> str | None:
    """Why the checkpoint at ``path`` cannot be loaded the way the trainer loads it; None if it can."""
    try:
        checkpoint = AtomicCheckpointIO().load_checkpoint(path, map_location="cpu")
    except Exception as error:  # truncated, garbage, refused pickle payload, ...
        text = str(error).strip().splitlines()
        return f"{type(error).__name__}: {text[0] if text else ''}"[:300]
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        return "not a Lightning checkpoint (no state_dict)"
    return None
