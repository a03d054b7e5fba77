"""LightningModules of the benchmark: a language model and a sequence classifier.

Both put a regularized recurrent stack (``regularizers.RegularizedLSTM/GRU/RNN``) between an
input layer and a linear read-out, add the regularizers' penalty (norm stabilizer) to the
training loss, and log one lower-is-better validation metric as ``val_metric`` (bits per
character, perplexity or error rate) and its test counterpart as ``test_metric``, so that
checkpointing, early stopping and Optuna pruning can monitor one name for every task.

A non-finite training loss or validation metric stops training and sets
``module.diverged_reason``; the runner records such a run as ``diverged``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

import regularizers

__all__ = ["RecurrentLanguageModel", "SequenceClassifier", "module_for", "RECURRENT_LAYERS", "VAL_METRIC", "TEST_METRIC"]

VAL_METRIC = "val_metric"
TEST_METRIC = "test_metric"
RECURRENT_LAYERS = {"lstm": regularizers.RegularizedLSTM, "gru": regularizers.RegularizedGRU,
                    "rnn": regularizers.RegularizedRNN}


def _detach(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


class _RegularizedRecurrentModule(LightningModule):
    """What both models share: the recurrent stack, initialisation, optimizer, divergence checks."""

    def __init__(self, *, input_size: int, cell: str, hidden_size: int, num_layers: int,
                 regularizers: list[str], init: str, init_range: float, optimizer: str, lr: float,
                 optimizer_kwargs: dict[str, Any] | None, lr_decay: float, lr_decay_start: int,
                 dropout: float) -> None:
        super().__init__()
        if cell not in RECURRENT_LAYERS:
            raise ValueError(f"unknown cell type {cell!r}; valid: {', '.join(RECURRENT_LAYERS)}")
        self.rnn = RECURRENT_LAYERS[cell](input_size, hidden_size, num_layers=num_layers,
                                          dropout=dropout if num_layers > 1 else 0.0,
                                          regularizers=list(regularizers))
        self.drop = nn.Dropout(dropout)
        self.diverged_reason: str | None = None

    def _initialise(self, init: str, init_range: float) -> None:
        if init == "uniform":  # Zaremba et al.: every parameter U[-r, r]
            for name, parameter in self.named_parameters():
                if ".regularizers." not in name:  # a regularizer's own parameters keep their init
                    nn.init.uniform_(parameter, -init_range, init_range)
        elif init == "orthogonal":  # each gate's recurrent block orthogonal
            for name, parameter in self.rnn.named_parameters():
                if name.startswith("weight_hh"):
                    for block in parameter.data.split(self.rnn.hidden_size, dim=0):
                        nn.init.orthogonal_(block)
        elif init != "default":
            raise ValueError(f"unknown init {init!r}; valid: default, uniform, orthogonal")

    def configure_optimizers(self):
        hp = self.hparams
        kwargs = dict(hp.optimizer_kwargs or {})
        optimizers = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop}
        if hp.optimizer not in optimizers:
            raise ValueError(f"unknown optimizer {hp.optimizer!r}; valid: {', '.join(optimizers)}")
        optimizer = optimizers[hp.optimizer](self.parameters(), lr=hp.lr, **kwargs)
        if hp.lr_decay == 1.0:
            return optimizer
        # Zaremba et al.: full rate for lr_decay_start epochs, then divide by lr_decay every epoch.
        decay, start = hp.lr_decay, hp.lr_decay_start
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: decay ** -max(0, epoch + 1 - start))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}

    def _training_loss(self, task_loss: torch.Tensor) -> torch.Tensor | None:
        """Task loss plus the regularizers' penalty; None (skip the step) and stop if it is not finite."""
        loss = task_loss + regularizers.penalty(self)
        if not torch.isfinite(loss):
            self._diverge(f"non-finite training loss ({loss.item()}) at epoch {self.current_epoch}, "
                          f"step {self.global_step}")
            return None
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def _log_eval_metric(self, name: str, value: torch.Tensor) -> None:
        if not torch.isfinite(value) and name == VAL_METRIC and not self.trainer.sanity_checking:
            self._diverge(f"non-finite validation metric ({value.item()}) at epoch {self.current_epoch}")
        self.log(name, value, prog_bar=True)

    def _diverge(self, reason: str) -> None:
        if self.diverged_reason is None:
            self.diverged_reason = reason
        self.trainer.should_stop = True


class RecurrentLanguageModel(_RegularizedRecurrentModule):
    """Embedding -> regularized recurrent stack -> linear decoder, trained with truncated BPTT.

    The hidden state is carried, detached, from one training batch to the next and reset at
    the start of every epoch, of validation and of testing. ``metric`` is ``"bpc"``
    (NLL / ln 2) or ``"perplexity"`` (exp NLL), from the token-weighted mean NLL.
    """

    def __init__(self, vocab_size: int, cell: str = "lstm", hidden_size: int = 128, num_layers: int = 1,
                 embedding_size: int | None = None, regularizers: list[str] = (), dropout: float = 0.0,
                 init: str = "default", init_range: float = 0.04, optimizer: str = "adam", lr: float = 0.002,
                 optimizer_kwargs: dict[str, Any] | None = None, lr_decay: float = 1.0, lr_decay_start: int = 0,
                 metric: str = "bpc") -> None:
        embedding_size = embedding_size or hidden_size
        super().__init__(input_size=embedding_size, cell=cell, hidden_size=hidden_size, num_layers=num_layers,
                         regularizers=regularizers, init=init, init_range=init_range, optimizer=optimizer, lr=lr,
                         optimizer_kwargs=optimizer_kwargs, lr_decay=lr_decay, lr_decay_start=lr_decay_start,
                         dropout=dropout)
        if metric not in ("bpc", "perplexity"):
            raise ValueError(f"unknown language-model metric {metric!r}; valid: bpc, perplexity")
        self.save_hyperparameters()
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        self._initialise(init, init_range)
        # NaN must reach val_metric (and mark the run diverged), not be dropped with a warning.
        self.val_nll = MeanMetric(nan_strategy="disable")
        self.test_nll = MeanMetric(nan_strategy="disable")
        self.carried_state: dict[str, Any] = {}  # the detached hidden state per stage

    def forward(self, tokens: torch.Tensor, state=None):
        """``tokens`` (batch, steps) -> logits (batch, steps, vocab) and the final state."""
        embedded = self.drop(self.embedding(tokens)).transpose(0, 1)  # (steps, batch, features)
        output, state = self.rnn(embedded, state)
        return self.decoder(self.drop(output)).transpose(0, 1), state

    def metric_from_nll(self, nll: torch.Tensor) -> torch.Tensor:
        return nll / math.log(2) if self.hparams.metric == "bpc" else torch.exp(nll)

    def _step(self, batch, stage: str) -> torch.Tensor:
        """Mean NLL of one window, starting from (and updating) the carried state of ``stage``."""
        tokens, targets = batch
        logits, state = self(tokens, self.carried_state.get(stage))
        self.carried_state[stage] = _detach(state)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))

    def on_train_epoch_start(self) -> None:
        self.carried_state.pop("train", None)

    def on_validation_epoch_start(self) -> None:
        self.carried_state.pop("val", None)

    def on_test_epoch_start(self) -> None:
        self.carried_state.pop("test", None)

    def training_step(self, batch, batch_idx):
        return self._training_loss(self._step(batch, "train"))

    def validation_step(self, batch, batch_idx) -> None:
        self.val_nll.update(self._step(batch, "val"), weight=batch[1].numel())

    def test_step(self, batch, batch_idx) -> None:
        self.test_nll.update(self._step(batch, "test"), weight=batch[1].numel())

    def on_validation_epoch_end(self) -> None:
        nll = self.val_nll.compute()
        self.val_nll.reset()
        self.log("val_nll", nll)
        self._log_eval_metric(VAL_METRIC, self.metric_from_nll(nll))

    def on_test_epoch_end(self) -> None:
        nll = self.test_nll.compute()
        self.test_nll.reset()
        self.log("test_nll", nll)
        self._log_eval_metric(TEST_METRIC, self.metric_from_nll(nll))


class SequenceClassifier(_RegularizedRecurrentModule):
    """Regularized recurrent layer over a sequence of features, linear read-out of the last state."""

    def __init__(self, num_classes: int, input_size: int = 1, cell: str = "lstm", hidden_size: int = 100,
                 num_layers: int = 1, regularizers: list[str] = (), dropout: float = 0.0, init: str = "default",
                 init_range: float = 0.04, optimizer: str = "rmsprop", lr: float = 0.001,
                 optimizer_kwargs: dict[str, Any] | None = None, lr_decay: float = 1.0,
                 lr_decay_start: int = 0) -> None:
        super().__init__(input_size=input_size, cell=cell, hidden_size=hidden_size, num_layers=num_layers,
                         regularizers=regularizers, init=init, init_range=init_range, optimizer=optimizer, lr=lr,
                         optimizer_kwargs=optimizer_kwargs, lr_decay=lr_decay, lr_decay_start=lr_decay_start,
                         dropout=dropout)
        self.save_hyperparameters()
        self.classifier = nn.Linear(hidden_size, num_classes)
        self._initialise(init, init_range)
        self.val_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.test_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.val_nll = MeanMetric(nan_strategy="disable")  # beside the training loss: the overfitting gap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (batch, steps, features) -> logits (batch, classes)."""
        output, _ = self.rnn(x.transpose(0, 1))
        return self.classifier(self.drop(output[-1]))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self._training_loss(F.cross_entropy(self(x), y))

    def validation_step(self, batch, batch_idx) -> None:
        x, y = batch
        logits = self(x)
        self.val_accuracy.update(logits, y)
        self.val_nll.update(F.cross_entropy(logits, y), weight=y.numel())

    def test_step(self, batch, batch_idx) -> None:
        x, y = batch
        self.test_accuracy.update(self(x), y)

    def on_validation_epoch_end(self) -> None:
        accuracy = self.val_accuracy.compute()
        self.val_accuracy.reset()
        self.log("val_nll", self.val_nll.compute())
        self.val_nll.reset()
        self._log_eval_metric(VAL_METRIC, 1 - accuracy)

    def on_test_epoch_end(self) -> None:
        accuracy = self.test_accuracy.compute()
        self.test_accuracy.reset()
        self._log_eval_metric(TEST_METRIC, 1 - accuracy)


def module_for(settings, regularizer: str, *, vocab_size: int | None = None, num_classes: int | None = None,
               metric: str = "bpc") -> _RegularizedRecurrentModule:
    """The benchmark's module for a task's settings (``tasks.TrainingSettings``) and one regularizer spec: a
    language model over ``vocab_size`` tokens (reporting ``metric``), or else a classifier of pixel
    sequences into ``num_classes``. The runner and ``regbench perf --training`` both build theirs here."""
    s = settings
    common = dict(cell=s.cell, hidden_size=s.hidden_size, num_layers=s.num_layers, regularizers=[regularizer],
                  dropout=s.dropout, init=s.init, init_range=s.init_range, optimizer=s.optimizer, lr=s.lr,
                  optimizer_kwargs=dict(s.optimizer_kwargs), lr_decay=s.lr_decay, lr_decay_start=s.lr_decay_start)
    if vocab_size is not None:
        return RecurrentLanguageModel(vocab_size, embedding_size=s.embedding_size, metric=metric, **common)
    if num_classes is None:
        raise ValueError("module_for needs vocab_size (a language model) or num_classes (a classifier)")
    return SequenceClassifier(num_classes, input_size=1, **common)
