"""Tasks, DataModules, LightningModules and the runner, on tiny configurations (offline, CPU)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning.pytorch import Callback, Trainer, seed_everything  # noqa: E402

from benchmark import tasks  # noqa: E402
from benchmark.data.datamodules import BPTTWindows, PixelDataModule, TextDataModule, batchify  # noqa: E402
from benchmark.models import RecurrentLanguageModel, SequenceClassifier  # noqa: E402
from benchmark.runner import RunConfig, plan_run, run_experiment  # noqa: E402
from benchmark.store import ResultsStore  # noqa: E402

TINY_TEXT = tasks.TrainingSettings(hidden_size=16, batch_size=8, bptt=20, epochs=2, lr=0.01, limit_train_batches=6,
                                   limit_val_batches=3, limit_test_batches=3)
TINY_PIXELS = tasks.TrainingSettings(hidden_size=8, batch_size=64, epochs=2, lr=0.01, limit_train_batches=4,
                                     limit_val_batches=2, limit_test_batches=2)


@pytest.fixture(autouse=True)
def tiny_tasks(monkeypatch):
    """Two extra tasks that train in about a second: the embedded data, tiny models."""
    registry = dict(tasks.TASKS)
    registry["tiny_text"] = tasks.Task("tiny_text", "language_model", "embedded_text", tasks.BPC, "test",
                                       presets={"paper": TINY_TEXT}, scales={}, needs_download=False)
    registry["tiny_digits"] = tasks.Task("tiny_digits", "classifier", "digits", tasks.ERROR_RATE, "test",
                                         presets={"paper": TINY_PIXELS}, scales={}, permuted=True,
                                         needs_download=False)
    monkeypatch.setattr(tasks, "TASKS", registry)
    torch.set_num_threads(1)


def tiny_config(tmp_path, task="tiny_digits", **changes) -> RunConfig:
    values = dict(task=task, regularizer="none", scale="paper", out_dir=str(tmp_path / "runs"),
                  store_path=str(tmp_path / "results.sqlite"), progress_bar=False)
    values.update(changes)
    return RunConfig(**values)


def quiet_trainer(**kwargs) -> Trainer:
    defaults = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    num_sanity_val_steps=0)
    return Trainer(**{**defaults, **kwargs})


# ---------------------------------------------------------------------------- tasks


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(ValueError) as error:
        tasks.get_task("pennn")
    for name in ("char_ptb", "word_ptb", "text8", "pmnist", "smnist", "digits", "embedded_text"):
        assert name in str(error.value)


def test_paper_presets_hold_the_papers_settings():
    char = tasks.resolve_settings("char_ptb", "paper", "paper")
    assert (char.hidden_size, char.optimizer, char.lr, char.batch_size, char.bptt, char.gradient_clip) == \
        (1000, "adam", 0.002, 32, 100, 1.0)
    word = tasks.resolve_settings("word_ptb", "paper", "paper")
    assert (word.num_layers, word.hidden_size, word.optimizer, word.lr, word.lr_decay, word.lr_decay_start,
            word.gradient_clip, word.batch_size, word.bptt, word.init, word.init_range) == \
        (2, 1500, "sgd", 1.0, 1.15, 14, 10.0, 20, 35, "uniform", 0.04)
    text8 = tasks.resolve_settings("text8", "paper", "paper")
    assert (text8.hidden_size, text8.lr, text8.batch_size, text8.bptt) == (2000, 0.001, 128, 180)
    pixels = tasks.resolve_settings("pmnist", "paper", "paper")
    assert (pixels.hidden_size, pixels.optimizer, pixels.lr, pixels.gradient_clip) == (100, "rmsprop", 0.001, 1.0)


def test_numeric_scale_shrinks_hidden_size_batches_and_epochs():
    settings = tasks.resolve_settings("char_ptb", "paper", 0.1)
    assert settings.hidden_size == 100 and settings.limit_train_batches == 0.1 and settings.epochs == 5
    assert settings.lr == 0.002  # a scale never changes the recipe
    assert tasks.resolve_settings("char_ptb", "paper", "small", epochs=1).epochs == 1
    for bad in ("huge", "0", "1.5", "-1"):
        with pytest.raises(ValueError):
            tasks.parse_scale(bad)


# ---------------------------------------------------------------------- datamodules


def test_batches_are_contiguous_streams_in_order():
    stream = torch.arange(1003)
    windows = BPTTWindows(stream, streams=4, bptt=7)
    rows = batchify(stream, 4)
    assert rows.shape == (4, 250) and torch.equal(rows[1], torch.arange(250, 500))
    inputs = torch.cat([windows[i][0] for i in range(len(windows))], dim=1)
    targets = torch.cat([windows[i][1] for i in range(len(windows))], dim=1)
    assert torch.equal(inputs, rows[:, :-1]) and torch.equal(targets, rows[:, 1:])
    loader = TextDataModule("embedded_text", batch_size=4, bptt=7).train_dataloader()
    first, second = list(zip(range(2), loader))[0][1], list(zip(range(2), loader))[1][1]
    assert torch.equal(first[1][:, -1], second[0][:, 0])  # batch k+1 starts where batch k's targets end


def test_pixel_datamodule_shapes():
    datamodule = PixelDataModule("digits", batch_size=16, permuted=True)
    x, y = next(iter(datamodule.train_dataloader()))
    assert x.shape == (16, 64, 1) and y.shape == (16,) and datamodule.num_classes == 10


# --------------------------------------------------------------------------- models


class LossRecorder(Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


@pytest.mark.parametrize("kind", ["language_model", "classifier"])
def test_training_lowers_the_loss(kind):
    seed_everything(0)
    if kind == "language_model":
        datamodule = TextDataModule("embedded_text", batch_size=8, bptt=20)
        model = RecurrentLanguageModel(datamodule.vocab_size, hidden_size=32, lr=0.01,
                                       regularizers=["zoneout:z_cells=0.5,z_states=0.05"])
        loaders = {"datamodule": datamodule}
    else:  # sequences whose level (0, 0.5 or 1, plus noise) is their class: learnable in a few steps
        labels = torch.randint(0, 3, (256,))
        x = labels.float().view(-1, 1, 1) / 2 + 0.3 * torch.randn(256, 12, 1)
        dataset = torch.utils.data.TensorDataset(x, labels)
        loaders = {"train_dataloaders": torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=True)}
        model = SequenceClassifier(3, hidden_size=16, optimizer="adam", lr=0.02,
                                   regularizers=["norm_stabilizer:beta=1"])
    recorder = LossRecorder()
    quiet_trainer(max_steps=25, limit_val_batches=0, callbacks=[recorder], gradient_clip_val=1.0).fit(
        model, **loaders)
    assert len(recorder.losses) == 25
    assert sum(recorder.losses[-5:]) / 5 < 0.8 * sum(recorder.losses[:5]) / 5


def test_norm_stabilizer_penalty_is_part_of_the_training_loss():
    seed_everything(0)
    model = SequenceClassifier(10, hidden_size=8, regularizers=["norm_stabilizer:beta=1000"])
    x, y = torch.rand(4, 12, 1), torch.tensor([0, 1, 2, 3])
    task_loss = torch.nn.functional.cross_entropy(model(x), y)
    model.log = lambda *args, **kwargs: None  # no trainer attached
    assert model._training_loss(task_loss) > task_loss + 1e-3


def test_hidden_state_is_carried_across_batches_detached_and_reset_each_epoch():
    seed_everything(0)
    datamodule = TextDataModule("embedded_text", batch_size=4, bptt=10)
    model = RecurrentLanguageModel(datamodule.vocab_size, hidden_size=8, lr=0.01)
    calls = []  # (training?, initial state, final state) of every forward of the recurrent layer
    forward = model.rnn.forward

    def spy(x, hx=None):
        output, state = forward(x, hx)
        calls.append((model.training, hx, state))
        return output, state

    model.rnn.forward = spy
    quiet_trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=2).fit(model, datamodule=datamodule)
    training = [(hx, state) for is_training, hx, state in calls if is_training]
    evaluation = [(hx, state) for is_training, hx, state in calls if not is_training]
    assert len(training) == 6 and len(evaluation) == 4
    for epoch in range(2):
        batches = training[3 * epoch: 3 * epoch + 3]
        assert batches[0][0] is None  # reset at the start of every epoch
        for (_, final), (initial, _) in zip(batches, batches[1:]):
            for carried, previous in zip(initial, final):
                assert torch.equal(carried, previous) and not carried.requires_grad
    assert evaluation[0][0] is None and evaluation[2][0] is None  # reset at every validation
    assert torch.equal(evaluation[1][0][0], evaluation[0][1][0])


def test_bpc_and_perplexity_follow_their_formulas():
    """A decoder that outputs zeros predicts every symbol with probability 1/V: NLL = ln V."""
    datamodule = TextDataModule("embedded_text", batch_size=4, bptt=10)
    vocab = datamodule.vocab_size
    for metric, expected in (("bpc", math.log2(vocab)), ("perplexity", float(vocab))):
        model = RecurrentLanguageModel(vocab, hidden_size=8, metric=metric)
        torch.nn.init.zeros_(model.decoder.weight)
        torch.nn.init.zeros_(model.decoder.bias)
        result = quiet_trainer(limit_val_batches=3).validate(model, datamodule=datamodule, verbose=False)[0]
        assert result["val_metric"] == pytest.approx(expected, rel=1e-5)
        assert result["val_nll"] == pytest.approx(math.log(vocab), rel=1e-5)
    model = RecurrentLanguageModel(vocab, hidden_size=8, metric="bpc")
    assert float(model.metric_from_nll(torch.tensor(0.75))) == pytest.approx(0.75 / math.log(2))


def test_error_rate_is_one_minus_accuracy():
    model = SequenceClassifier(3, hidden_size=4)
    model.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value))
    logged = {}
    model.val_accuracy.update(torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0], [0, 0, 1.0]]),
                              torch.tensor([0, 1, 2, 0]))
    model._log_eval_metric = lambda name, value: logged.__setitem__(name, float(value))
    model.on_validation_epoch_end()
    assert logged["val_metric"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- runner


def test_bad_configurations_fail_before_training(tmp_path):
    from regularizers import UnknownRegularizerError

    with pytest.raises(UnknownRegularizerError, match="Available"):
        plan_run(tiny_config(tmp_path, regularizer="zonout"))
    with pytest.raises(ValueError, match="out of range"):
        plan_run(tiny_config(tmp_path, regularizer="zoneout", params={"z_states": "1.5"}))
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        plan_run(tiny_config(tmp_path, regularizer="zoneout", params={"rate": 0.1}))
    with pytest.raises(ValueError, match="does not support GRU"):
        plan_run(tiny_config(tmp_path, regularizer="rnndrop", cell="gru"))
    with pytest.raises(ValueError, match="no preset"):
        plan_run(tiny_config(tmp_path, preset="huge"))


def test_the_same_seed_gives_the_same_metrics(tmp_path):
    runs = [run_experiment(tiny_config(tmp_path, regularizer="zoneout", seed=seed, run_name=f"r{i}"), store=False)
            for i, seed in enumerate((3, 3, 4))]
    assert runs[0].status == "ok" and len(runs[0].val_curve) == 2
    assert runs[0].val_curve == runs[1].val_curve and runs[0].test_metric == runs[1].test_metric
    assert runs[0].val_curve != runs[2].val_curve


def test_a_run_is_stored_with_everything_the_leaderboard_needs(tmp_path):
    record = run_experiment(tiny_config(tmp_path, task="tiny_text", regularizer="zoneout", params={"z_states": 0.1}),
                            record_extra={"study": "s1", "trial": 7})
    frame = ResultsStore(tmp_path / "results.sqlite").dataframe()
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["id"] == record.id and row["status"] == "ok" and row["task"] == "tiny_text"
    assert row["hyperparameters"]["z_states"] == 0.1 and row["spec"].startswith("zoneout:")
    assert row["metric"] == "bpc" and row["direction"] == "min" and row["throughput_unit"] == "chars/s"
    assert row["best_val_metric"] == min(row["val_curve"]) and len(row["val_curve"]) == 2
    assert row["test_metric"] > 0 and row["throughput"] > 0 and row["wall_time_s"] > 0
    assert row["study"] == "s1" and row["trial"] == 7 and row["command"].startswith("regbench run")
    assert len(row["data_checksum"]) == 64 and row["torch_version"] and row["git_commit"]
    assert (Path(row["run_dir"]) / "checkpoints" / "last.ckpt").exists()
    assert (Path(row["run_dir"]) / "csv" / "version_0" / "metrics.csv").exists()
    assert list((Path(row["run_dir"]) / "tensorboard" / "version_0").glob("events.out.tfevents.*"))


class PoisonWeights(Callback):
    """Makes the recurrent weights NaN before the third training batch."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 2:
            with torch.no_grad():
                pl_module.rnn.weight_hh_l0.fill_(float("nan"))


def test_a_nan_run_is_recorded_as_diverged_and_does_not_raise(tmp_path):
    record = run_experiment(tiny_config(tmp_path), callbacks=[PoisonWeights()])
    assert record.status == "diverged" and "non-finite" in record.reason
    assert record.test_metric is None
    assert ResultsStore(tmp_path / "results.sqlite").dataframe()["status"].tolist() == ["diverged"]


class InterruptAtEpoch(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt


class CountEpochs(Callback):
    def __init__(self):
        self.epochs = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.epochs.append(trainer.current_epoch)


def test_an_interrupted_run_stores_nothing_and_resumes_from_its_last_checkpoint(tmp_path):
    config = tiny_config(tmp_path, epochs=3)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, callbacks=[InterruptAtEpoch(2)])
    store = ResultsStore(tmp_path / "results.sqlite")
    assert len(store) == 0
    counter = CountEpochs()
    record = run_experiment(config, callbacks=[counter])
    assert counter.epochs == [2]  # only the missing epoch was trained
    assert record.status == "ok" and record.epochs == 3 and len(record.val_curve) == 3
    assert Path(record.run_dir) == tmp_path / "runs" / "tiny_digits" / Path(record.run_dir).name
    assert len(store) == 1
    # A finished run is not resumed: the same configuration again is a new attempt in a new folder.
    again = run_experiment(config)
    assert again.run_dir == record.run_dir + "-2" and len(store) == 2
    with pytest.raises(ValueError, match="nothing to resume"):
        run_experiment(tiny_config(tmp_path, epochs=3, resume=True))


def test_word_ptb_schedule_and_initialisation_follow_zaremba():
    settings = tasks.resolve_settings("word_ptb", "paper", "paper", hidden_size=8)
    model = RecurrentLanguageModel(50, hidden_size=8, num_layers=2, init=settings.init, init_range=settings.init_range,
                                   optimizer=settings.optimizer, lr=settings.lr, lr_decay=settings.lr_decay,
                                   lr_decay_start=settings.lr_decay_start, metric="perplexity")
    assert all(p.abs().max() <= 0.04 for p in model.parameters())
    configured = model.configure_optimizers()
    optimizer, schedule = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.SGD) and configured["lr_scheduler"]["interval"] == "epoch"
    rates = []
    for _ in range(17):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[:14] == [1.0] * 14  # 14 epochs at the full rate
    assert rates[14:] == pytest.approx([1 / 1.15, 1 / 1.15 ** 2, 1 / 1.15 ** 3])


@pytest.mark.parametrize("task", ["tiny_digits", "tiny_text"])
def test_a_resumed_run_is_the_same_run_as_an_uninterrupted_one(tmp_path, task, regularizer="zoneout"):
    # Shuffled batches, dropout masks and the native mask sampler all draw from generators that
    # the checkpoint must carry: a resumed run reproduces the uninterrupted one exactly.
    straight = run_experiment(tiny_config(tmp_path, task=task, regularizer=regularizer, epochs=3,
                                          run_name="straight", dropout=0.2), store=False)
    config = tiny_config(tmp_path, task=task, regularizer=regularizer, epochs=3, run_name="resumed", dropout=0.2)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, callbacks=[InterruptAtEpoch(1)], store=False)
    torch.manual_seed(12345)  # whatever the process did in between must not matter
    resumed = run_experiment(config, store=False)
    assert resumed.val_curve == straight.val_curve
    assert resumed.test_metric == straight.test_metric
    assert resumed.resumed is True and straight.resumed is False


def test_a_native_build_is_not_counted_as_training_time(tmp_path, monkeypatch):
    import time

    from regularizers import native

    def slow_build():  # stands in for a first compilation of the native loops
        time.sleep(3)
        return None

    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setattr(native, "_build", slow_build)
    started = time.perf_counter()
    record = run_experiment(tiny_config(tmp_path, regularizer="zoneout", epochs=1), store=False)
    elapsed = time.perf_counter() - started
    assert record.status == "ok"
    assert record.wall_time_s <= elapsed - 3  # the build happened outside the recorded time


def test_a_damaged_last_checkpoint_is_set_aside_and_the_run_starts_afresh(tmp_path, capsys):
    config = tiny_config(tmp_path, epochs=2)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, callbacks=[InterruptAtEpoch(1)])
    last = next((tmp_path / "runs" / "tiny_digits").glob("*/checkpoints/last.ckpt"))
    last.write_bytes(last.read_bytes()[:200])  # a crash mid-write, a full disk
    capsys.readouterr()
    counter = CountEpochs()
    record = run_experiment(config, callbacks=[counter])
    assert record.status == "ok" and counter.epochs == [0, 1] and record.resumed is False
    out = capsys.readouterr().err  # a logged warning (benchmark.runner's logger): stderr
    assert "unreadable" in out and "afresh" in out, out
    assert [p.name.startswith("last.ckpt.damaged") for p in last.parent.glob("last.ckpt.damaged*")] == [True]
    assert ResultsStore(tmp_path / "results.sqlite").dataframe()["status"].tolist() == ["ok"]


def test_a_checkpoint_write_that_fails_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    from benchmark import checkpointing

    path = tmp_path / "last.ckpt"
    io = checkpointing.AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
    before = path.read_bytes()

    def full_disk(obj, file):
        file.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpointing.torch, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert checkpointing.unreadable_reason(path) is None
    path.write_bytes(before[:100])
    assert checkpointing.unreadable_reason(path)


def test_the_same_run_started_twice_at_once_is_run_and_stored_once(tmp_path):
    import threading

    config = tiny_config(tmp_path, epochs=1)
    records, errors = [], []

    def start():
        try:
            records.append(run_experiment(config))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors and len(records) == 2
    frame = ResultsStore(tmp_path / "results.sqlite").dataframe()
    assert frame["status"].tolist() == ["ok"]  # one row: the second waited and took the first's record
    assert records[0].id == records[1].id == frame["id"].iloc[0]
    assert len(list((tmp_path / "runs" / "tiny_digits").glob("*/record.json"))) == 1
    # The waiting one's record is the other's, read back from its record.json: the same facts, and
    # stored already, so that callers which store records skip it.
    assert records[0] == records[1] and records[0] is not records[1] and all(r.stored for r in records)


@pytest.mark.parametrize("name", ["../../../x", "/tmp/elsewhere", "a/../../b", "..\\\\x", ".hidden", "-rf"])
def test_a_run_name_never_leaves_the_output_folder(tmp_path, name):
    from benchmark.runner import folder_name

    folder = plan_run(tiny_config(tmp_path, run_name=name)).base_run_dir
    out = (tmp_path / "runs").resolve()
    assert folder.resolve().parent == out / "tiny_digits"
    assert not folder.name.startswith((".", "-")) and "/" not in folder.name and "\\\\" not in folder.name
    assert folder_name("a/b") != folder_name("a_b")  # distinct names keep distinct folders
    assert folder_name("digits-zoneout-trial3") == "digits-zoneout-trial3"  # safe names are kept


@pytest.mark.parametrize("name", ["..", "/", "../..", "  ", "***"])
def test_a_run_name_that_cannot_be_a_folder_is_refused(tmp_path, name):
    with pytest.raises(ValueError, match="cannot be a folder name"):
        plan_run(tiny_config(tmp_path, run_name=name))


@pytest.mark.parametrize("given", [{"regularizer": "zoneout:z_cells=0.5"}, {"regularizer": "zoneout:z_cells=0"},
                                   {"regularizer": "zoneout", "params": {"z_cells": "0.3"}}])
def test_a_hyperparameter_that_does_not_apply_to_the_cell_is_refused_whatever_its_value(tmp_path, given):
    with pytest.raises(ValueError, match="z_cells applies to LSTM layers only, not GRU"):
        plan_run(tiny_config(tmp_path, cell="gru", **given))


def test_a_hyperparameter_that_does_not_apply_to_the_cell_is_not_recorded(tmp_path):
    record = run_experiment(tiny_config(tmp_path, cell="gru", regularizer="zoneout:z_states=0.1", epochs=1))
    assert "z_cells" not in record.hyperparameters and record.hyperparameters["z_states"] == 0.1
    assert "z_cells" not in record.spec and "z_cells" not in record.command
    row = ResultsStore(tmp_path / "results.sqlite").dataframe().iloc[0]
    assert "z_cells" not in row["hyperparameters"] and "z_cells" not in row["spec"]
    lstm = plan_run(tiny_config(tmp_path, regularizer="zoneout:z_states=0.1"))
    assert "z_cells" in lstm.regularizer.params  # an LSTM records it


class FullDisk(Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise OSError(28, "No space left on device")


def test_an_environment_error_is_not_stored_as_a_failed_run(tmp_path):
    with pytest.raises(OSError, match="No space left"):
        run_experiment(tiny_config(tmp_path), callbacks=[FullDisk()])
    assert len(ResultsStore(tmp_path / "results.sqlite")) == 0
    record = run_experiment(tiny_config(tmp_path))  # fixed: the same command resumes
    assert record.status == "ok" and record.resumed is True
