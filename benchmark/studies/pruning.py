"""The pruning callback: optuna-integration's ``PyTorchLightningPruningCallback``, changed so that
a pruned run ends cleanly and is recorded.

The integration's callback raises ``optuna.TrialPruned`` inside ``trainer.fit``, which would end
the run before the runner writes its record. This one reports the same way, but when the pruner
says stop it sets ``trainer.should_stop`` and remembers the epoch (``pruned_at``); the runner then
finishes and returns its record, and the objective stores it with status ``pruned`` before it
raises ``TrialPruned``. When the pruner may stop a trial is the pruner's business: studies give
``MedianPruner`` ``n_warmup_steps`` = half the epochs (early epochs rank configurations by noise).

Training loops without Lightning (the tests' tiny objective) call :meth:`report` each epoch.
"""

from __future__ import annotations

import math

import optuna
from optuna_integration import PyTorchLightningPruningCallback

__all__ = ["MONITOR", "PruningCallback", "pruning_callback"]

MONITOR = "val_metric"


class PruningCallback(PyTorchLightningPruningCallback):
    """Reports ``monitor`` after every validation epoch; stops the trainer (no exception) when pruned."""

    def __init__(self, trial: optuna.trial.Trial, monitor: str = MONITOR) -> None:
        super().__init__(trial, monitor)
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        try:
            super().on_validation_end(trainer, pl_module)
        except optuna.TrialPruned:  # the integration's way; ours: record the run first
            self.pruned_at = int(pl_module.current_epoch)
            trainer.should_stop = True

    def report(self, epoch: int, value: float | None) -> bool:
        """Report ``value`` for ``epoch`` (a loop without Lightning); True when the trial should stop now."""
        if value is None or math.isnan(value):
            return False
        self._trial.report(float(value), step=int(epoch))
        if self._trial.should_prune():
            self.pruned_at = int(epoch)
            return True
        return False


def pruning_callback(trial, monitor: str = MONITOR) -> PruningCallback:
    """A ``lightning.pytorch.Callback`` that reports ``monitor`` to ``trial``; see :class:`PruningCallback`."""
    return PruningCallback(trial, monitor)
