"""The task registry: which data, model, training settings and metric each benchmark task uses.

A task has named *presets* (``paper``: the configuration of the Zoneout paper, see
shared/REFERENCE.md; the embedded tasks also have ``cpu``, the default suite's, with a larger
learning rate so that they learn within seconds) and named *scales* that shrink a preset for a CPU. A scale changes only
how much compute a run gets (hidden size, batches per epoch, epochs), never the optimizer or
the data, so that a reduced-scale run is the paper's experiment made smaller:

* ``paper``  the preset unchanged;
* ``small``  minutes per epoch on a laptop CPU;
* ``tiny``   seconds per run (the default suite);
* a number ``s`` in (0, 1]: hidden size x s, s of the training batches per epoch, epochs x s.

    settings = resolve_settings("char_ptb", preset="paper", scale="small")
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

__all__ = [
    "Metric", "Task", "TrainingSettings", "TASKS", "SCALE_NAMES", "DEFAULT_PRESET", "DEFAULT_SCALE",
    "get_task", "task_names", "resolve_settings", "parse_scale",
]

DEFAULT_PRESET = "paper"
DEFAULT_SCALE = "small"
SCALE_NAMES = ("tiny", "small", "paper")


@dataclass(frozen=True)
class Metric:
    name: str  # "bpc" | "perplexity" | "error_rate"
    description: str
    direction: str = "min"  # every task's validation metric is lower-is-better


BPC = Metric("bpc", "bits per character = NLL / ln 2")
PERPLEXITY = Metric("perplexity", "perplexity = exp(NLL per word)")
ERROR_RATE = Metric("error_rate", "error rate = 1 - accuracy")


@dataclass(frozen=True)
class TrainingSettings:
    """Everything that defines a run apart from the task, the regularizer and the seed."""

    cell: str = "lstm"
    hidden_size: int = 100
    num_layers: int = 1
    embedding_size: int | None = None  # language models; None = hidden_size
    dropout: float = 0.0  # non-recurrent dropout (Zaremba et al.): embeddings, between layers, outputs
    init: str = "default"  # "default" (U[-1/sqrt(h), 1/sqrt(h)]) | "uniform" (U[-init_range, init_range]) | "orthogonal"
    init_range: float = 0.04
    optimizer: str = "adam"  # "adam" | "sgd" | "rmsprop"
    lr: float = 0.001
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    lr_decay: float = 1.0  # divide the learning rate by this every epoch from lr_decay_start on
    lr_decay_start: int = 0  # epochs at the full learning rate
    gradient_clip: float | None = 1.0  # max global gradient norm
    batch_size: int = 32
    bptt: int = 100  # language models: truncated-BPTT window
    epochs: int = 10
    limit_train_batches: int | float | None = None  # None = the whole training split every epoch
    limit_val_batches: int | float | None = None
    limit_test_batches: int | float | None = None
    early_stopping_patience: int | None = None  # epochs without improvement of the validation metric
    # The data budget: train on the first N training tokens (language models) or images
    # (classifiers) only, so that a small CPU model overfits; None = the whole training split.
    train_subset: int | None = None
    image_side: int | None = None  # classifiers: images shrunk to side x side pixels (MNIST 28 -> 14)

    def replace(self, **changes: Any) -> "TrainingSettings":
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise ValueError(f"unknown training setting(s): {', '.join(unknown)}")
        return replace(self, **changes)


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # "language_model" | "classifier"
    dataset: str  # a name for benchmark.data.load_text / load_pixels
    metric: Metric
    description: str
    presets: dict[str, TrainingSettings]
    scales: dict[str, dict[str, Any]]  # named scale -> settings it overrides
    permuted: bool = False  # classifiers: pixels in one fixed random order
    needs_download: bool = True
    # The paper's regularizer hyperparameters for this kind of task, used (with LSTM cells) when
    # the user sets none of that regularizer's hyperparameters.
    paper_hyperparameters: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def throughput_unit(self) -> str:
        if self.kind == "classifier":
            return "samples/s"
        return "words/s" if self.dataset == "word_ptb" else "chars/s"


# ---------------------------------------------------------------------------- presets

_CHAR_PTB = TrainingSettings(
    hidden_size=1000, optimizer="adam", lr=0.002, gradient_clip=1.0, batch_size=32, bptt=100,
    epochs=50, early_stopping_patience=5)
_WORD_PTB = TrainingSettings(
    hidden_size=1500, num_layers=2, init="uniform", init_range=0.04, optimizer="sgd", lr=1.0,
    lr_decay=1.15, lr_decay_start=14, gradient_clip=10.0, batch_size=20, bptt=35, epochs=55)
_TEXT8 = TrainingSettings(
    hidden_size=2000, init="orthogonal", optimizer="adam", lr=0.001, gradient_clip=1.0, batch_size=128,
    bptt=180, epochs=50, early_stopping_patience=3)
_PIXELS = TrainingSettings(
    hidden_size=100, optimizer="rmsprop", lr=0.001, optimizer_kwargs={"alpha": 0.5}, gradient_clip=1.0,
    batch_size=100, epochs=150)

# The embedded tasks' "cpu" presets (the default suite's) learn within seconds: the paper's
# recipe with a 5x (Adam) / 10x (RMSprop) larger learning rate.
_DIGITS_CPU = _PIXELS.replace(batch_size=32, lr=0.01)
_TEXT_CPU = _CHAR_PTB.replace(lr=0.01)

_PAPER_ZONEOUT_CHAR = {"zoneout": {"z_cells": 0.5, "z_states": 0.05}, "recurrent_dropout": {"p": 0.25},
                       "weight_noise": {"sigma": 0.075}, "norm_stabilizer": {"beta": 50.0},
                       "stochastic_depth": {"p": 0.05}}
_PAPER_PIXELS = {"zoneout": {"z_cells": 0.15, "z_states": 0.15, "shared_mask": True},
                 "recurrent_dropout": {"p": 0.5}}

TASKS: dict[str, Task] = {}


def _add(task: Task) -> None:
    TASKS[task.name] = task


_add(Task(
    "char_ptb", "language_model", "char_ptb", BPC,
    "character-level Penn Treebank (Mikolov), 1x1000 LSTM",
    presets={"paper": _CHAR_PTB},
    scales={"small": {"hidden_size": 256, "limit_train_batches": 200, "limit_val_batches": 40, "epochs": 3},
            "tiny": {"hidden_size": 64, "limit_train_batches": 20, "limit_val_batches": 5,
                     "limit_test_batches": 5, "epochs": 2}},
    paper_hyperparameters=_PAPER_ZONEOUT_CHAR))
_add(Task(
    "word_ptb", "language_model", "word_ptb", PERPLEXITY,
    "word-level Penn Treebank (10k words), 2x1500 LSTM (Zaremba et al. large)",
    presets={"paper": _WORD_PTB},
    scales={"small": {"hidden_size": 200, "limit_train_batches": 300, "limit_val_batches": 50, "epochs": 3},
            "tiny": {"hidden_size": 32, "limit_train_batches": 20, "limit_val_batches": 5,
                     "limit_test_batches": 5, "epochs": 2}},
    paper_hyperparameters={"zoneout": {"z_cells": 0.25, "z_states": 0.025}}))
_add(Task(
    "text8", "language_model", "text8", BPC,
    "text8 (first 90M/5M/5M characters of Wikipedia), 1x2000 LSTM",
    presets={"paper": _TEXT8},
    scales={"small": {"hidden_size": 256, "limit_train_batches": 100, "limit_val_batches": 20, "epochs": 3},
            "tiny": {"hidden_size": 64, "limit_train_batches": 10, "limit_val_batches": 3,
                     "limit_test_batches": 3, "epochs": 2}},
    paper_hyperparameters=_PAPER_ZONEOUT_CHAR))
_add(Task(
    "pmnist", "classifier", "mnist", ERROR_RATE,
    "permuted sequential MNIST (784 steps, one fixed pixel permutation), 1x100 LSTM",
    presets={"paper": _PIXELS},
    scales={"small": {"hidden_size": 64, "limit_train_batches": 100, "limit_val_batches": 20, "epochs": 3},
            "tiny": {"hidden_size": 32, "limit_train_batches": 5, "limit_val_batches": 2,
                     "limit_test_batches": 2, "epochs": 1}},
    permuted=True, paper_hyperparameters=_PAPER_PIXELS))
_add(Task(
    "smnist", "classifier", "mnist", ERROR_RATE,
    "sequential MNIST (784 steps in reading order), 1x100 LSTM",
    presets={"paper": _PIXELS},
    scales={"small": {"hidden_size": 64, "limit_train_batches": 100, "limit_val_batches": 20, "epochs": 3},
            "tiny": {"hidden_size": 32, "limit_train_batches": 5, "limit_val_batches": 2,
                     "limit_test_batches": 2, "epochs": 1}},
    permuted=False, paper_hyperparameters=_PAPER_PIXELS))
# Embedded tasks: no download. Their "paper" preset is the paper's setting of the analogous
# task (pMNIST for digits, char-PTB for text).
_add(Task(
    "digits", "classifier", "digits", ERROR_RATE,
    "scikit-learn 8x8 digits, pixels one at a time in a fixed random order (64 steps); embedded",
    presets={"paper": _PIXELS.replace(batch_size=32), "cpu": _DIGITS_CPU},
    scales={"small": {"hidden_size": 100, "epochs": 30},
            "tiny": {"hidden_size": 48, "epochs": 6}},
    permuted=True, needs_download=False, paper_hyperparameters=_PAPER_PIXELS))
_add(Task(
    "embedded_text", "language_model", "embedded_text", BPC,
    "character-level Python documentation topics (pydoc_data, ~420k characters); embedded",
    presets={"paper": _CHAR_PTB, "cpu": _TEXT_CPU},
    scales={"small": {"hidden_size": 256, "epochs": 3},
            "tiny": {"hidden_size": 64, "bptt": 50, "limit_train_batches": 60, "epochs": 3}},
    needs_download=False, paper_hyperparameters=_PAPER_ZONEOUT_CHAR))


# ---------------------------------------------------------------------------- lookups


def task_names() -> list[str]:
    return list(TASKS)


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}") from None


def parse_scale(scale: str | float | int) -> str | float:
    """A named scale, or a number in (0, 1]; raises ValueError otherwise."""
    if isinstance(scale, str) and scale in SCALE_NAMES:
        return scale
    try:
        factor = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"unknown scale {scale!r}; use one of {', '.join(SCALE_NAMES)} "
                         "or a number in (0, 1]") from None
    if not 0 < factor <= 1:
        raise ValueError(f"scale {factor:g} is out of range; a numeric scale must be in (0, 1]")
    return "paper" if factor == 1 else factor


def _scaled_by_factor(settings: TrainingSettings, factor: float) -> dict[str, Any]:
    return {
        "hidden_size": max(8, round(settings.hidden_size * factor)),
        "limit_train_batches": factor if settings.limit_train_batches is None else settings.limit_train_batches,
        "epochs": max(1, math.ceil(settings.epochs * factor)),
    }


def resolve_settings(task: str | Task, preset: str = DEFAULT_PRESET, scale: str | float = DEFAULT_SCALE,
                     **overrides: Any) -> TrainingSettings:
    """The training settings of ``task`` under ``preset`` shrunk by ``scale``, then ``overrides``
    (keys of TrainingSettings whose value is not None)."""
    task = task if isinstance(task, Task) else get_task(task)
    if preset not in task.presets:
        raise ValueError(f"task {task.name!r} has no preset {preset!r}; presets: {', '.join(task.presets)}")
    settings = task.presets[preset]
    scale = parse_scale(scale)
    if isinstance(scale, float):
        settings = settings.replace(**_scaled_by_factor(settings, scale))
    elif scale != "paper":
        settings = settings.replace(**task.scales[scale])
    return settings.replace(**{k: v for k, v in overrides.items() if v is not None})
