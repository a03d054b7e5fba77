"""``regbench perf --training``: what a training step of the benchmark's own models costs, end to end,
against a plain PyTorch loop with ``torch.nn.LSTM`` of the same size.

The benchmark's side is the track's LightningModule (``RecurrentLanguageModel`` or
``SequenceClassifier``, its optimizer, gradient clipping, torchmetrics and a CSV logger) trained by
Lightning's Trainer; the plain side is the same embedding or read-out, ``torch.nn.LSTM``, the same
optimizer and clipping in a hand-written loop. Both see the same synthetic batches (the cost of a
step does not depend on the data). A step's cost under the Trainer is the time from one batch's start
to the next (so the start-up of ``fit``, a cost per run and not per step, stays out); each side runs
``repeats`` epochs, alternating, and the medians over their steps are compared.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["TrainingRow", "TRAINING_TRACKS", "measure_training", "format_training"]

TRAINING_TRACKS = ["pmnist/cpu-v1", "char_ptb/cpu-v1"]
_VOCAB = 50  # character-level PTB's vocabulary is about this size
_CLASSES = 10


@dataclass
class TrainingRow:
    track: str
    regularizer: str
    threads: int
    batch_ms: float  # one training step of the benchmark's module under Lightning's Trainer
    plain_ms: float  # one step of the plain PyTorch loop with torch.nn.LSTM
    ratio: float


def _language_model(track: str) -> bool:
    from .tasks import TASKS
    from .tracks import get_track

    return TASKS[get_track(track).task].kind == "language_model"


def _batches(track: str, count: int):
    from .perf import track_shape

    shape = track_shape(track)
    generator = torch.Generator().manual_seed(0)
    if _language_model(track):
        tokens = torch.randint(_VOCAB, (count, shape.batch, shape.steps + 1), generator=generator)
        return shape, [(t[:, :-1], t[:, 1:]) for t in tokens]
    x = torch.rand(count, shape.batch, shape.steps, shape.input_size, generator=generator)
    y = torch.randint(_CLASSES, (count, shape.batch), generator=generator)
    return shape, list(zip(x, y))


def _module(track: str, regularizer: str):
    from .models import module_for
    from .tasks import TASKS
    from .tracks import get_track

    chosen = get_track(track)
    if _language_model(track):
        metric = TASKS[chosen.task].metric.name
        return module_for(chosen.settings, regularizer, vocab_size=_VOCAB, metric=metric), chosen.settings
    return module_for(chosen.settings, regularizer, num_classes=_CLASSES), chosen.settings


def _trainer_steps(track: str, regularizer: str, batches: list) -> list[float]:
    """Seconds of each training step under Lightning's Trainer: the time from the start of one batch to
    the start of the next (the loop, the data, the step, clipping, the optimizer, metrics, logging)."""
    from lightning.pytorch import Callback, Trainer
    from lightning.pytorch.loggers import CSVLogger

    from .runner import quiet_lightning

    class BatchClock(Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            self.starts.append(time.perf_counter())

        def on_train_epoch_end(self, trainer, module) -> None:
            self.starts.append(time.perf_counter())

    quiet_lightning()
    module, settings = _module(track, regularizer)
    clock = BatchClock()
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(max_epochs=1, logger=CSVLogger(folder), enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                          limit_val_batches=0, gradient_clip_val=settings.gradient_clip, accelerator="cpu",
                          devices=1, default_root_dir=folder, callbacks=[clock])
        # batch_size=None: each item already is a batch (a plain list would be taken as several loaders)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*no `val_dataloader`.*")  # validation is left out on purpose
            trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return [later - earlier for earlier, later in zip(clock.starts, clock.starts[1:])]


class _PlainLanguageModel(nn.Module):
    def __init__(self, settings) -> None:
        super().__init__()
        embedding = settings.embedding_size or settings.hidden_size
        self.embedding = nn.Embedding(_VOCAB, embedding)
        self.rnn = nn.LSTM(embedding, settings.hidden_size, settings.num_layers)
        self.decoder = nn.Linear(settings.hidden_size, _VOCAB)

    def forward(self, tokens, state):
        output, state = self.rnn(self.embedding(tokens).transpose(0, 1), state)
        return self.decoder(output).transpose(0, 1), tuple(s.detach() for s in state)


class _PlainClassifier(nn.Module):
    def __init__(self, settings) -> None:
        super().__init__()
        self.rnn = nn.LSTM(1, settings.hidden_size, settings.num_layers)
        self.classifier = nn.Linear(settings.hidden_size, _CLASSES)

    def forward(self, x, state):
        output, _ = self.rnn(x.transpose(0, 1))
        return self.classifier(output[-1]), None


def _plain_steps(track: str, batches: list) -> list[float]:
    """Seconds of each step of a hand-written loop with torch.nn.LSTM on the same batches."""
    from .tracks import get_track

    settings = get_track(track).settings
    language = _language_model(track)
    model = _PlainLanguageModel(settings) if language else _PlainClassifier(settings)
    optimizers = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop}
    optimizer = optimizers[settings.optimizer](model.parameters(), lr=settings.lr, **dict(settings.optimizer_kwargs))
    state, times = None, []
    for inputs, targets in batches:
        start = time.perf_counter()
        logits, state = model(inputs, state)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), settings.gradient_clip)
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def measure_training(tracks=TRAINING_TRACKS, names=("none", "zoneout"), batches: int = 20, repeats: int = 3,
                     progress=None) -> list[TrainingRow]:
    """Per-step cost of the benchmark's module under the Trainer and of the plain loop, per track and
    regularizer: the medians of every step of ``repeats`` alternating epochs of ``batches`` steps (the
    first step of each epoch left out: it pays for lazy initialisation)."""
    rows = []
    for track in tracks:
        _, data = _batches(track, batches + 1)
        for name in names:
            trainer_steps, plain_steps = [], []
            for _ in range(repeats):
                trainer_steps += _trainer_steps(track, name, data)[1:]
                plain_steps += _plain_steps(track, data)[1:]
                if progress is not None:
                    progress.update(1)
            trainer, plain = statistics.median(trainer_steps), statistics.median(plain_steps)
            rows.append(TrainingRow(track, name, torch.get_num_threads(), trainer * 1e3, plain * 1e3, trainer / plain))
    return rows


def format_training(rows: list[TrainingRow]) -> str:
    lines = ["| track | threads | regularizer | Trainer step (ms) | plain nn.LSTM loop step (ms) | × plain |",
             "|---|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.track} | {r.threads} | {r.regularizer} | {r.batch_ms:.1f} | {r.plain_ms:.1f} | "
                     f"{r.ratio:.2f} |")
    return "\n".join(lines)
