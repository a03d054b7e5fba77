"""One benchmark run: validate, load data, train with Lightning, test the best checkpoint, store.

    from benchmark.runner import RunConfig, run_experiment
    record = run_experiment(RunConfig(task="digits", regularizer="zoneout", params={"z_states": 0.1},
                                      seed=1, scale="tiny"),
                            callbacks=[pruning_callback], record_extra={"study": "s", "trial": 3})
    record.status, record.best_val_metric, record.test_metric    # a benchmark.records.RunRecord

Everything that can be wrong with a configuration (task, preset, scale, cell, regularizer,
hyperparameters, missing data) raises ``ValueError`` or ``DataNotFoundError`` from
:func:`plan_run` / :func:`prepare` before any training. The validation metric is logged as
``val_metric`` (lower is better for every task). A run whose loss becomes NaN is returned and
stored with status ``diverged``; an exception during training is stored as ``failed`` and
re-raised; an ``OSError`` (a full disk, an unwritable folder: the environment, not the
configuration) is re-raised without a record. A failed or interrupted (Ctrl-C: nothing stored)
run leaves ``last.ckpt`` in its run directory, and running the same configuration again resumes
from it; the checkpoint carries every random generator (``benchmark.checkpointing``), so the
resumed run is the same run, and its record says ``resumed``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import regularizers
from regularizers import Regularizer

from .records import RunRecord
from .tasks import DEFAULT_PRESET, DEFAULT_SCALE, Task, TrainingSettings, get_task, parse_scale, resolve_settings

# The same classes as benchmark.models.RECURRENT_LAYERS; not imported from there so that
# validating a configuration does not import Lightning.
RECURRENT_LAYERS = {"lstm": regularizers.RegularizedLSTM, "gru": regularizers.RegularizedGRU,
                    "rnn": regularizers.RegularizedRNN}

if TYPE_CHECKING:
    from .history import RunHistory

__all__ = ["RunConfig", "RunPlan", "folder_name", "plan_run", "recorded_hyperparameters", "prepare", "build_model",
           "resume_point", "finished_record", "run_experiment",
           "command_line", "reproduce_options", "write_run_config", "DEFAULT_OUT_DIR", "quiet_lightning"]

DEFAULT_OUT_DIR = "regbench_runs"
FINISHED_MARKER = "record.json"  # written into a run directory when its run is finished
log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    """What the user chose for one run; everything else comes from the task's preset and scale."""

    task: str | None = None  # None: the track's task (one of task and track is needed)
    regularizer: str = "none"  # a registered name or a spec string "zoneout:z_cells=0.5"
    params: dict[str, Any] = field(default_factory=dict)  # hyperparameters; text values are parsed
    seed: int = 0
    cell: str | None = None  # None: the preset's (lstm)
    preset: str = DEFAULT_PRESET
    scale: str | float = DEFAULT_SCALE
    epochs: int | None = None
    hidden_size: int | None = None
    lr: float | None = None
    dropout: float | None = None
    data_dir: str | None = None
    hub: str | None = None  # a pinned Hugging Face hub repository "REPO@REVISION" instead of data_dir
    out_dir: str = DEFAULT_OUT_DIR
    store_path: str | None = None  # None: benchmark.store.default_store_path()
    run_name: str | None = None  # folder under out_dir/task; None: derived from the configuration
    resume: bool | None = None  # None: resume an unfinished run's last.ckpt if there is one
    progress_bar: bool = True
    # A benchmark track (benchmark.tracks) fixes the task and every training setting, so preset,
    # scale and the overrides above (the cell too) must be left at their defaults.
    track: str | None = None


@dataclass
class RunPlan:
    """A validated configuration: the task, the resolved settings and the regularizer."""

    config: RunConfig
    task: Task
    settings: TrainingSettings
    regularizer: Regularizer

    @property
    def scale_label(self) -> str:
        return "" if self.config.track else str(parse_scale(self.config.scale))

    @property
    def setting_label(self) -> str:
        """The track, or preset and scale: the part of a run folder's name that says which setting."""
        return self.config.track.replace("/", "-") if self.config.track else f"{self.config.preset}-{self.scale_label}"

    @property
    def base_run_dir(self) -> Path:
        config = self.config
        if config.run_name:
            name = folder_name(config.run_name)
        else:
            identity = [self.regularizer.spec, asdict(self.settings), config.data_dir]
            if config.hub is not None:  # appended only when set: the folders of earlier runs keep their names
                identity.append(config.hub)
            identity = json.dumps(identity, sort_keys=True)
            digest = hashlib.sha1(identity.encode()).hexdigest()[:8]
            name = f"{self.regularizer.name}-{self.settings.cell}-{self.setting_label}-{digest}-seed{config.seed}"
        return Path(config.out_dir) / self.task.name / name


# ------------------------------------------------------------------------- validation

_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._+=-]+")
_MAX_FOLDER_NAME = 120


def folder_name(name: str) -> str:
    """``name`` as one folder name that stays where it is put: no separators, no ``..``, no
    leading dot or dash. Names that had to change get a digest of the original, so that two
    names never share a folder. ValueError for a name with no letter or digit to keep."""
    safe = _UNSAFE_CHARACTERS.sub("_", name).strip("._-")
    if not any(character.isalnum() for character in safe):
        raise ValueError(f"{name!r} cannot be a folder name: give a name with letters or digits")
    if safe != name or len(safe) > _MAX_FOLDER_NAME:
        safe = f"{safe[:_MAX_FOLDER_NAME]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return safe


def _regularizer_params(task: Task, config: RunConfig, cls: type[Regularizer], spec_params: dict[str, str],
                        cell: str) -> dict[str, Any]:
    """The spec's values and ``config.params``; when neither sets any, the paper's values for this
    kind of task (LSTM only; they can be a combination, like pMNIST's shared zoneout mask)."""
    given = {**spec_params, **config.params}
    chosen: dict[str, Any] = {}
    if cell == "lstm" and not given:
        chosen.update(task.paper_hyperparameters.get(cls.name, {}))
    for key, value in given.items():
        if key not in cls.hyperparameters:
            valid = ", ".join(cls.hyperparameters) or "none"
            raise ValueError(f"{cls.name}: unknown hyperparameter {key!r}; valid: {valid}")
        spec = cls.hyperparameters[key]
        if not spec.applies_to(cell):  # whatever its value: the layer would ignore it
            valid = ", ".join(k for k, h in cls.hyperparameters.items() if h.applies_to(cell))
            raise ValueError(f"{cls.name}: {key} applies to {', '.join(t.upper() for t in spec.cell_types)} layers "
                             f"only, not {cell.upper()}; drop it (valid here: {valid})")
        chosen[key] = cls.hyperparameters[key].parse(key, value) if isinstance(value, str) else value
    return chosen


def _build_regularizer(task: Task, config: RunConfig, cell: str) -> Regularizer:
    name, spec_params = regularizers.parse_spec(config.regularizer)
    cls = regularizers.get(name)  # UnknownRegularizerError lists the valid names
    if cell not in cls.cell_types:
        raise ValueError(f"regularizer {name!r} does not support {cell.upper()} cells; it supports: "
                         f"{', '.join(cls.cell_types)} (choose one with --cell)")
    instance = cls(**_regularizer_params(task, config, cls, spec_params, cell))
    # Checks that need a layer (e.g. zoneout's z_cells on a GRU) run on a throwaway one now,
    # not minutes later when the real model is built.
    RECURRENT_LAYERS[cell](2, 2, regularizers=[regularizers.build(instance.spec)])
    return instance


def _track_settings(config: RunConfig) -> tuple[Task, TrainingSettings]:
    """The task and settings of ``config.track``; a track's settings are not overridden."""
    from .tracks import get_track

    track = get_track(config.track)
    if config.task is not None and config.task != track.task:
        raise ValueError(f"track {track.name!r} is a {track.task} track, not {config.task}; "
                         "leave out the task or choose one of its tracks")
    overridden = [name.replace("_", "-") for name in ("epochs", "hidden_size", "lr", "dropout", "cell")
                  if getattr(config, name) is not None and not (name == "cell" and config.cell == track.settings.cell)]
    if overridden:
        raise ValueError(f"a track fixes its settings, so --{', --'.join(overridden)} cannot be changed on "
                         f"{track.name}; leave {'it' if len(overridden) == 1 else 'them'} out, or use "
                         "--task with --preset/--scale instead of --track")
    return get_task(track.task), track.settings


MAX_SEED = 2**32 - 1  # NumPy's generator, which seed_everything seeds, takes no more (and no negative)
_GATES = {"lstm": 4, "gru": 3, "rnn": 1}
_BYTES_PER_PARAMETER = 16  # float32 weight, gradient and Adam's two moments


def _check_memory(task: Task, settings: TrainingSettings) -> None:
    """Refuse a model whose parameters alone cannot fit in this machine's memory, before allocating
    it (allocating first would stall the machine or be killed). A lower bound: vocabulary-sized
    layers and activations, known only once data is loaded, come on top."""
    h, gates = settings.hidden_size, _GATES[settings.cell]
    first_input = (settings.embedding_size or h) if task.kind == "language_model" else 1
    parameters = sum(gates * h * ((first_input if layer == 0 else h) + h + 2) for layer in range(settings.num_layers))
    needed = parameters * _BYTES_PER_PARAMETER
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on this platform: no check
        return
    if needed > available:
        raise ValueError(f"hidden size {h} x {settings.num_layers} layer(s) needs at least {needed / 2**30:,.1f} GiB "
                         f"(its {parameters:,} parameters with gradients and optimizer state); this machine has "
                         f"{available / 2**30:,.1f} GiB: choose a smaller --hidden-size")


def recorded_hyperparameters(plan: RunPlan) -> tuple[dict[str, Any], str]:
    """The hyperparameters and spec a record shows: those that act on the plan's cell (a GRU has no
    cell state, so zoneout's z_cells is not one of its hyperparameters)."""
    cell, regularizer = plan.settings.cell, plan.regularizer
    applies = {k for k, h in regularizer.hyperparameters.items() if h.applies_to(cell)}
    name, raw = regularizers.parse_spec(regularizer.spec)
    kept = [f"{k}={v}" for k, v in raw.items() if k in applies]
    return ({k: v for k, v in regularizer.params.items() if k in applies},
            f"{name}:{','.join(kept)}" if kept else name)


def plan_run(config: RunConfig) -> RunPlan:
    """Validate ``config`` without loading data; raises ValueError with a one-line message."""
    if config.track is not None:
        task, settings = _track_settings(config)
        config.task = task.name
    elif config.task is None:
        raise ValueError("a run needs a task or a track")
    else:
        task = get_task(config.task)
        settings = resolve_settings(task, config.preset, config.scale, epochs=config.epochs, cell=config.cell,
                                    hidden_size=config.hidden_size, lr=config.lr, dropout=config.dropout)
    if settings.cell not in RECURRENT_LAYERS:
        raise ValueError(f"unknown cell type {settings.cell!r}; valid: {', '.join(RECURRENT_LAYERS)}")
    for name in ("epochs", "hidden_size"):
        if getattr(settings, name) < 1:
            raise ValueError(f"{name} must be a positive integer, got {getattr(settings, name)}")
    if not 0 <= settings.dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {settings.dropout}")
    if not settings.lr > 0:
        raise ValueError(f"the learning rate must be positive, got {settings.lr}")
    if config.run_name is not None:
        folder_name(config.run_name)  # ValueError for a name that cannot be a folder
    if not 0 <= config.seed <= MAX_SEED:
        raise ValueError(f"the seed must be in [0, {MAX_SEED}], got {config.seed}")
    _check_memory(task, settings)
    return RunPlan(config, task, settings, _build_regularizer(task, config, settings.cell))


def prepare(plan: RunPlan):
    """The task's DataModule with its data loaded (raises DataNotFoundError when missing)."""
    from .data.datamodules import PixelDataModule, TextDataModule

    task, settings, data_dir, hub = plan.task, plan.settings, plan.config.data_dir, plan.config.hub
    if task.kind == "language_model":
        datamodule = TextDataModule(task.dataset, settings.batch_size, settings.bptt, data_dir,
                                    train_subset=settings.train_subset, hub=hub)
    else:
        datamodule = PixelDataModule(task.dataset, settings.batch_size, task.permuted, data_dir,
                                     shuffle_seed=plan.config.seed, train_subset=settings.train_subset,
                                     image_side=settings.image_side, hub=hub)
    datamodule.setup()
    return datamodule


def build_model(plan: RunPlan, datamodule):
    from .models import module_for

    if plan.task.kind == "language_model":
        return module_for(plan.settings, plan.regularizer.spec, vocab_size=datamodule.vocab_size,
                          metric=plan.task.metric.name)
    return module_for(plan.settings, plan.regularizer.spec, num_classes=datamodule.num_classes)


# ---------------------------------------------------------------------------- running


def quiet_lightning() -> None:
    """Silence Lightning's start-up chatter and the warnings that do not apply to these runs."""
    # Imported first: on import Lightning sets its loggers to INFO when the root logger has no
    # handler, which would undo the levels set here.
    import lightning.pytorch  # noqa: F401

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # In-memory tensors: worker processes would only add start-up time.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*The number of training batches.*is smaller than the logging interval.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")


def resume_point(plan: RunPlan) -> tuple[Path, Path | None]:
    """The run directory to use and the checkpoint to resume from (None: start fresh).

    Attempts of one configuration live in ``base``, ``base-2``, ``base-3``, ...; a finished
    attempt holds ``record.json``. An unfinished one with ``checkpoints/last.ckpt`` is resumed
    unless ``resume`` is False; ``resume=True`` insists on a checkpoint.
    """
    base, resume = plan.base_run_dir, plan.config.resume
    attempt = 1
    while True:
        run_dir = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
        last = run_dir / "checkpoints" / "last.ckpt"
        if not (run_dir / FINISHED_MARKER).exists():
            if last.exists() and resume is not False:
                return run_dir, last
            if resume:
                raise ValueError(f"nothing to resume: no unfinished run with a last.ckpt at {base}")
            if not run_dir.exists() or not last.exists():
                return run_dir, None
        attempt += 1


def finished_record(plan: RunPlan) -> RunRecord | None:
    """The record of the latest finished attempt of this configuration, if any (from its record.json)."""
    from .store import upgrade_row

    base, record, attempt = plan.base_run_dir, None, 1
    while True:
        run_dir = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
        if not run_dir.exists():
            return record
        marker = run_dir / FINISHED_MARKER
        if marker.exists():
            record = RunRecord.from_dict(upgrade_row(json.loads(marker.read_text())))
        attempt += 1


def _readable_or_set_aside(run_dir: Path, checkpoint: Path | None) -> Path | None:
    """``checkpoint`` if it loads; a damaged one (a crash mid-write, a full disk) is renamed aside
    and the run starts afresh, instead of failing on every rerun."""
    from .checkpointing import unreadable_reason

    damage = None if checkpoint is None else unreadable_reason(checkpoint)
    if damage is None:
        return checkpoint
    aside = checkpoint.with_name(f"{checkpoint.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(checkpoint, aside)
    log.warning("regbench: %s is unreadable (%s); starting %s afresh, the damaged file kept as %s",
                checkpoint, damage, run_dir.name, aside.name)
    return None


def _batch_limit(limit: int | float, loader) -> int | float:
    """A fraction of the batches as a count, at least one (Lightning refuses a fraction that rounds to 0)."""
    if isinstance(limit, float) and limit < 1:
        return max(1, int(len(loader()) * limit))
    return limit


def _make_trainer(plan: RunPlan, datamodule, run_dir: Path, history: RunHistory, callbacks: Iterable):
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from .checkpointing import AtomicCheckpointIO, RandomState

    s = plan.settings
    # Both at the end of the epoch, so that a resume starts the next one. save_last=True would
    # refresh last.ckpt only in epochs that improve the metric, hence a checkpoint of its own.
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best-{epoch}", monitor="val_metric",
                                 mode="min", save_top_k=1, save_on_train_epoch_end=True)
    last = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1,
                           save_on_train_epoch_end=True, enable_version_counter=False)
    all_callbacks = [checkpoint, last, history, RandomState(), *callbacks]
    if s.early_stopping_patience:
        all_callbacks.append(EarlyStopping(monitor="val_metric", mode="min", patience=s.early_stopping_patience))
    limits = {f"limit_{split}_batches": _batch_limit(limit, loader)
              for split, limit, loader in (("train", s.limit_train_batches, datamodule.train_dataloader),
                                           ("val", s.limit_val_batches, datamodule.val_dataloader),
                                           ("test", s.limit_test_batches, datamodule.test_dataloader))
              if limit is not None}
    # version_0, version_1, ...: one per session, so that a resumed run keeps the logs of the first.
    loggers = [CSVLogger(run_dir, name="csv"), TensorBoardLogger(run_dir, name="tensorboard")]
    trainer = pl.Trainer(
        default_root_dir=run_dir, max_epochs=s.epochs, gradient_clip_val=s.gradient_clip,
        callbacks=all_callbacks, logger=loggers, deterministic=True, num_sanity_val_steps=0,
        enable_model_summary=False, enable_progress_bar=plan.config.progress_bar, log_every_n_steps=10,
        plugins=[AtomicCheckpointIO()], **limits)
    return trainer, checkpoint


@lru_cache(maxsize=1)
def _provenance() -> dict[str, str]:
    import lightning
    import torch

    from . import __version__

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                                capture_output=True, text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {"torch_version": torch.__version__, "lightning_version": lightning.__version__,
            "regbench_version": __version__, "git_commit": commit}


def _data_identity(datamodule) -> tuple[str, str]:
    data = getattr(datamodule, "corpus", None) or getattr(datamodule, "pixels", None)
    return data.source, data.checksum


def _record(plan: RunPlan, datamodule, run_dir: Path, history: dict[str, Any], status: str,
            reason: str | None, test_metric: float | None, epochs: int, resumed: bool) -> RunRecord:
    """``history``: ``RunHistory.state_dict()`` taken after training (testing restores the best
    checkpoint, callbacks' states included)."""
    source, checksum = _data_identity(datamodule)
    hyperparameters, spec = recorded_hyperparameters(plan)
    curve = history["val_curve"]
    throughput = history["items"] / history["train_seconds"] if history["train_seconds"] > 0 else None
    finite = [(v, i) for i, v in enumerate(curve) if v == v and abs(v) != float("inf")]
    best_value, best_epoch = min(finite) if finite else (None, None)
    return RunRecord(
        task=plan.task.name, regularizer=plan.regularizer.name, status=status,
        hyperparameters=hyperparameters, spec=spec, cell=plan.settings.cell,
        seed=plan.config.seed, track=plan.config.track,
        preset=None if plan.config.track else plan.config.preset, scale=plan.scale_label or None,
        settings=asdict(plan.settings),
        dataset=plan.task.dataset, data_source=source, data_checksum=checksum,
        metric=plan.task.metric.name, direction=plan.task.metric.direction,
        best_val_metric=best_value, test_metric=test_metric, best_epoch=best_epoch, epochs=epochs,
        val_curve=curve, train_loss_curve=history["train_loss_curve"], val_nll_curve=history["val_nll_curve"],
        wall_time_s=round(history["wall_seconds"], 3), throughput=throughput,
        throughput_unit=plan.task.throughput_unit, reason=reason,
        command=command_line(plan), resumed=resumed, run_dir=str(run_dir), **_provenance())


def reproduce_options(plan: RunPlan) -> dict[str, Any]:
    """The ``regbench run`` options that repeat this run, by destination name: the one source of
    the reproduce command (:func:`command_line`) and of the run folder's ``config.yaml``."""
    c = plan.config
    options: dict[str, Any] = ({"track": [c.track]} if c.track else
                               {"task": [c.task], "preset": c.preset, "scale": plan.scale_label})
    options.update(regularizer=[recorded_hyperparameters(plan)[1]], seeds=1, first_seed=c.seed,
                   cell=plan.settings.cell)
    for name in ("epochs", "hidden_size", "lr", "dropout", "data_dir", "hub"):
        if getattr(c, name) is not None:
            options[name] = getattr(c, name)
    return options


def command_line(plan: RunPlan) -> str:
    """The ``regbench run`` command that repeats this run (the leaderboards show it)."""
    from .commands import regbench_command

    return regbench_command("run", reproduce_options(plan))


def write_run_config(plan: RunPlan, run_dir: Path) -> Path:
    """``run_dir/config.yaml``: the run's full configuration as a ``regbench run --config`` file
    (the reproduce options, the output folder and the store), so that
    ``regbench run --config run_dir/config.yaml`` repeats this run in the same run folder."""
    import yaml

    options = reproduce_options(plan)
    options["out"] = plan.config.out_dir
    if plan.config.store_path is not None:
        options["store"] = plan.config.store_path
    path = run_dir / "config.yaml"
    run_dir.mkdir(parents=True, exist_ok=True)
    header = f"# {command_line(plan)}\n# repeat with: regbench run --config {path}\n"
    path.write_text(header + yaml.safe_dump(options, sort_keys=False))
    return path


def _test_best(trainer, model, datamodule, checkpoint) -> float | None:
    best = checkpoint.best_model_path or None
    results = trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False)
    value = results[0].get("test_metric") if results else None
    return None if value is None else float(value)


def run_experiment(config: RunConfig, callbacks: Iterable = (), store=None,
                   record_extra: dict[str, Any] | None = None) -> RunRecord:
    """Train one configuration, evaluate its best checkpoint on test, append the record to the store.

    ``callbacks`` are extra Lightning callbacks (e.g. an Optuna pruning callback monitoring
    ``val_metric``). ``store``: a ``ResultsStore``, None for the default one (``config.store_path``
    or ``benchmark.store.default_store_path()``), or False to store nothing. ``record_extra``
    (record fields, e.g. ``{"study": name, "trial": 3}``) is set on the record. Returns the record.
    A configuration and seed is run by one process at a time; a process that finds another one
    running it waits, and returns that run's record (already stored: its ``stored`` is true)
    when it finished it.
    """
    quiet_lightning()
    plan = plan_run(config)
    datamodule = prepare(plan)
    with _exclusive(plan) as finished_meanwhile:
        if finished_meanwhile is not None:
            return finished_meanwhile
        return _train(plan, datamodule, callbacks, store, record_extra)


@contextmanager
def _exclusive(plan: RunPlan):
    """Hold the configuration's lock: one process at a time runs a configuration and seed.

    Yields None, or the record of the run that another process finished while this one waited
    for it (then this process has nothing left to do). The lock is a file next to the run
    directories, held with an OS lock that dies with its process (``filelock``).
    """
    from filelock import FileLock, Timeout

    base = plan.base_run_dir
    base.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(base.with_name(f"{base.name}.lock"))
    before = finished_record(plan)
    waited = False
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("regbench: another process is running %s; waiting for it to finish", base.name)
        lock.acquire()
        waited = True
    try:
        after = finished_record(plan) if waited else None
        if after is not None and (before is None or after.run_dir != before.run_dir):
            log.info("regbench: %s was finished by the other process; taking its record", base.name)
            yield after
        else:
            yield None
    finally:
        lock.release()


def _train(plan: RunPlan, datamodule, callbacks: Iterable, store, record_extra: dict[str, Any] | None):
    from lightning.pytorch import seed_everything

    from .history import RunHistory
    from .store import ResultsStore

    config = plan.config
    run_dir, resume_from = resume_point(plan)
    resume_from = _readable_or_set_aside(run_dir, resume_from)
    write_run_config(plan, run_dir)
    if store is None:
        store = ResultsStore(config.store_path)
    # A first compilation of the native loops takes about a minute: do it before the clock
    # starts, so that it never counts as training time.
    from regularizers import native

    native.loops()
    seed_everything(config.seed, workers=True, verbose=False)
    model = build_model(plan, datamodule)
    history = RunHistory()
    trainer, checkpoint = _make_trainer(plan, datamodule, run_dir, history, callbacks)
    if resume_from is not None:
        log.info("regbench: resuming %s from %s", run_dir, resume_from.name)
    status, reason, test_metric, failure = "ok", None, None, None
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
        trained = history.state_dict()  # before testing restores the best checkpoint's callback states
        fit_end, epochs = time.perf_counter(), trainer.current_epoch
        if model.diverged_reason:
            status, reason = "diverged", model.diverged_reason
        else:
            test_metric = _test_best(trainer, model, datamodule, checkpoint)
    except SystemExit:
        # Lightning turns Ctrl-C into SystemExit(1); give callers the KeyboardInterrupt back.
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    except OSError:
        # The machine's fault, not the configuration's (a full disk, an unwritable folder): no
        # record; last.ckpt lets the same command resume once the cause is fixed.
        raise
    except Exception as error:  # recorded as failed, then re-raised for the caller to see
        status, reason = "failed", f"{type(error).__name__}: {error}".splitlines()[0][:500]
        trained, epochs, failure = history.state_dict(), trainer.current_epoch, error
        fit_end = time.perf_counter()
    trained["wall_seconds"] += time.perf_counter() - fit_end  # plus testing
    record = _record(plan, datamodule, run_dir, trained, status, reason, test_metric, epochs,
                     resumed=resume_from is not None)
    for name, value in (record_extra or {}).items():
        if not hasattr(record, name):
            raise ValueError(f"record_extra: {name!r} is not a field of a run record")
        setattr(record, name, value)
    if store is not False:
        store.append(record)  # sets record.id
    if failure is not None:
        # No finished marker: the next attempt of this configuration resumes from last.ckpt.
        raise failure
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / FINISHED_MARKER).write_text(json.dumps(record.to_dict(), indent=1, default=str))
    return record
