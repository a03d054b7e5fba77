"""The Lightning callback that collects what a run's record reports besides the final metrics."""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch import Callback

__all__ = ["RunHistory"]


class RunHistory(Callback):
    """Validation curve, training throughput and wall time; saved in checkpoints so they survive a resume."""

    def __init__(self, monitor: str = "val_metric") -> None:
        self.monitor = monitor
        self.val_curve: list[float] = []  # the monitored metric after each validation epoch
        # Overfitting shows as the gap between these two: the training loss (mean NLL of the
        # epoch's batches, in training mode, plus any penalty) and the validation NLL, per epoch.
        self.train_loss_curve: list[float] = []
        self.val_nll_curve: list[float] = []
        self._epoch_loss, self._epoch_items = 0.0, 0
        self.items = 0  # training tokens (language models) or samples (classifiers)
        self.train_seconds = 0.0
        self.previous_wall_seconds = 0.0  # of earlier, interrupted sessions of this run
        self.session_start = time.perf_counter()
        self._batch_start: float | None = None

    @property
    def wall_seconds(self) -> float:
        return self.previous_wall_seconds + time.perf_counter() - self.session_start

    @property
    def throughput(self) -> float | None:
        return self.items / self.train_seconds if self.train_seconds > 0 else None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Forward, backward, clipping and the optimizer step; validation is not counted.
        if self._batch_start is not None:
            self.train_seconds += time.perf_counter() - self._batch_start
            self._batch_start = None
        targets = batch[1]  # (batch, steps) token targets or (batch,) labels
        self.items += targets.numel()
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self._epoch_loss += float(loss) * targets.numel()
            self._epoch_items += targets.numel()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._epoch_items:
            self.train_loss_curve.append(self._epoch_loss / self._epoch_items)
        self._epoch_loss, self._epoch_items = 0.0, 0

    def on_validation_end(self, trainer, pl_module) -> None:
        # By now the epoch's logged metrics have reached callback_metrics.
        value = trainer.callback_metrics.get(self.monitor)
        if not trainer.sanity_checking and value is not None:
            self.val_curve.append(float(value))
            nll = trainer.callback_metrics.get("val_nll")
            self.val_nll_curve.append(float(nll) if nll is not None else float("nan"))

    def state_dict(self) -> dict[str, Any]:
        return {"val_curve": list(self.val_curve), "train_loss_curve": list(self.train_loss_curve),
                "val_nll_curve": list(self.val_nll_curve), "items": self.items,
                "train_seconds": self.train_seconds, "wall_seconds": self.wall_seconds,
                "epoch_loss": self._epoch_loss, "epoch_items": self._epoch_items}  # a resume mid-epoch

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.val_curve = list(state_dict["val_curve"])
        self.train_loss_curve = list(state_dict.get("train_loss_curve", []))
        self.val_nll_curve = list(state_dict.get("val_nll_curve", []))
        self._epoch_loss = state_dict.get("epoch_loss", 0.0)
        self._epoch_items = state_dict.get("epoch_items", 0)
        self.items, self.train_seconds = state_dict["items"], state_dict["train_seconds"]
        self.previous_wall_seconds = state_dict["wall_seconds"]
        self.session_start = time.perf_counter()
