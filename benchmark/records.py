"""The record of one run: the one type the runner writes, the store keeps and the leaderboard reads.

Every fact of a run has one name, the same in the runner, in the store's columns, in
``record.json`` in the run's folder and in the leaderboard's DataFrame:

    record = run_experiment(RunConfig(task="digits", regularizer="zoneout", scale="tiny"))
    record.status, record.best_val_metric, record.test_metric, record.val_curve

A record is ``ok`` (trained to the end, tested), ``pruned`` (a tuning trial the pruner stopped
early: its curve is real, its test metric is missing), ``diverged`` (the loss became NaN) or
``failed`` (an exception; ``reason`` and, from a study, ``traceback`` say which).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

__all__ = ["RunRecord", "STATUSES", "Status", "FIELDS", "JSON_FIELDS"]

Status = Literal["ok", "pruned", "diverged", "failed"]
STATUSES: tuple[str, ...] = typing.get_args(Status)


@dataclass
class RunRecord:
    """One run. Fields left at ``None`` are unknown (e.g. the test metric of a pruned trial)."""

    # What ran
    task: str
    regularizer: str  # the registered name
    status: Status
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # those that act on the run's cell
    spec: str = ""  # e.g. "zoneout:z_cells=0.5,z_states=0.05"
    cell: str | None = None  # lstm | gru | rnn
    seed: int | None = None
    track: str | None = None  # the benchmark track (benchmark.tracks); None for an ad-hoc run
    preset: str | None = None  # None on a track, which fixes every setting
    scale: str | None = None  # tiny | small | paper | a number; None on a track
    settings: dict[str, Any] | None = None  # the resolved training settings (hidden size, lr, ...)
    # The data
    dataset: str | None = None
    data_source: str | None = None
    data_checksum: str | None = None
    # The result (the metric's direction is "min" for every task: lower is better)
    metric: str | None = None  # bpc | perplexity | error_rate
    direction: str | None = None
    best_val_metric: float | None = None
    test_metric: float | None = None  # on the test split, with the weights of the best validation epoch
    best_epoch: int | None = None
    epochs: int | None = None  # epochs trained
    val_curve: list[float] | None = None  # the validation metric after each epoch
    train_loss_curve: list[float] | None = None  # mean training loss of each epoch, in training mode
    val_nll_curve: list[float] | None = None  # validation NLL after each epoch: with the above, the gap
    wall_time_s: float | None = None
    throughput: float | None = None  # training tokens or samples per second
    throughput_unit: str | None = None  # chars/s | words/s | samples/s
    reason: str | None = None  # why it was pruned, diverged or failed
    traceback: str | None = None  # of a failure inside a study
    # Where it ran from
    study: str | None = None  # the Optuna study, if any
    trial: int | None = None  # the Optuna trial number; None for a study's reruns of its best trial
    rerun_of_trial: int | None = None  # a rerun of a study's best configuration: that trial's number
    command: str | None = None  # the command that reproduces the run
    resumed: bool = False  # continued from the checkpoint of an interrupted attempt
    run_dir: str | None = None
    torch_version: str | None = None
    lightning_version: str | None = None
    regbench_version: str | None = None
    git_commit: str | None = None
    created_at: str | None = None  # ISO 8601, UTC; set by the store
    id: int | None = None  # the store's row id; set once stored

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"a run's status is one of {', '.join(STATUSES)}, not {self.status!r}")

    @property
    def stored(self) -> bool:
        """Whether a store holds this record already (e.g. one another process ran and stored)."""
        return self.id is not None

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain data, NaN and infinities as None (JSON has neither)."""
        return {name: _finite(getattr(self, name)) for name in FIELDS}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunRecord:
        """A record from a mapping with these field names; ValueError names unknown keys."""
        unknown = sorted(set(values) - set(FIELDS))
        if unknown:
            raise ValueError(f"not fields of a run record: {', '.join(unknown)}; the fields are "
                             f"{', '.join(FIELDS)}")
        return cls(**{name: _missing_as_none(value) for name, value in values.items()})

    def replace(self, **changes: Any) -> RunRecord:
        return dataclasses.replace(self, **changes)


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RunRecord))
# Fields holding lists or dicts: JSON text in the store.
JSON_FIELDS: tuple[str, ...] = ("hyperparameters", "settings", "val_curve", "train_loss_curve", "val_nll_curve")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _missing_as_none(value: Any) -> Any:
    """pandas gives NaN for a missing number in an object column; a record says None."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
