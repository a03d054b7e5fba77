"""Benchmark tracks: definitions frozen per version, the data budget, runs on a track and their records."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark import tracks  # noqa: E402
from benchmark.runner import RunConfig, command_line, plan_run  # noqa: E402
from benchmark.tasks import TrainingSettings  # noqa: E402

# A track's definition never changes: a different setting is a new version. If one of these
# fails, the definition was edited: restore it and add "<task>/cpu-v2" (or the like) instead.
FROZEN = {
    "digits/cpu-v1": "5dc8c3e53e524223",
    "digits/quick-v1": "6fa34a16b405e613",
    "pmnist/cpu-v1": "e5ffab1126aa5989",
    "char_ptb/cpu-v1": "dbd767aed08c38fa",
    "char_ptb/paper": "41de955ed82fc0dd",
    "word_ptb/paper": "f8ddea44b6a202dc",
    "text8/paper": "df7897958c60bc2e",
    "pmnist/paper": "3dba28e9a74421b6",
}


def _digest(track: tracks.Track) -> str:
    # Only what differs from TrainingSettings' defaults: a setting added later (at its default) leaves
    # every existing track as it was.
    defaults = asdict(TrainingSettings())
    settings = {k: v for k, v in asdict(track.settings).items() if v != defaults[k]}
    definition = {"settings": settings, "trials": track.trials, "seeds": track.seeds}
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_track_definitions_are_frozen(name):
    assert _digest(tracks.get_track(name)) == FROZEN[name], (
        f"{name} changed: a track's definition is never edited; add a new version instead")


def test_every_track_plans_and_names_its_task():
    for name, track in tracks.TRACKS.items():
        task, label = name.split("/")
        assert track.task == task and track.label == label and track.seeds >= 2
        plan = plan_run(RunConfig(track=name, regularizer="none"))
        assert plan.task.name == task and plan.settings.epochs == track.settings.epochs
        assert plan.settings.train_subset == track.settings.train_subset
    assert tracks.DEFAULT_TRACK in tracks.TRACKS and not tracks.get_track(tracks.DEFAULT_TRACK).smoke


def test_unknown_track_and_overrides_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="unknown track 'digits/v9'; valid tracks: digits/cpu-v1"):
        tracks.get_track("digits/v9")
    with pytest.raises(ValueError, match="a track fixes its settings, so --epochs, --lr cannot be changed"):
        plan_run(RunConfig(track="digits/cpu-v1", epochs=3, lr=0.1))
    with pytest.raises(ValueError, match="so --cell cannot be changed on digits/cpu-v1"):
        plan_run(RunConfig(track="digits/cpu-v1", cell="gru"))  # a GRU row must not land on an LSTM board
    assert plan_run(RunConfig(track="digits/cpu-v1", cell="lstm")).settings.cell == "lstm"
    with pytest.raises(ValueError, match="is a digits track, not char_ptb"):
        plan_run(RunConfig(track="digits/cpu-v1", task="char_ptb"))


def test_a_track_run_is_named_and_recorded_by_its_track(tmp_path):
    from benchmark.runner import run_experiment

    config = RunConfig(track="digits/smoke", regularizer="zoneout", seed=3, out_dir=str(tmp_path / "runs"),
                       store_path=str(tmp_path / "r.sqlite"), progress_bar=False)
    plan = plan_run(config)
    assert "digits-smoke" in plan.base_run_dir.name
    assert command_line(plan).startswith("regbench run --track digits/smoke --regularizer zoneout:")
    assert "--preset" not in command_line(plan) and "--scale" not in command_line(plan)
    record = run_experiment(config)
    assert record.track == "digits/smoke" and record.preset is None and record.scale is None
    assert len(record.train_loss_curve) == len(record.val_nll_curve) == record.epochs == 6


def test_image_side_averages_blocks_before_the_permutation():
    from benchmark.data import load_pixels

    full = load_pixels("digits", permuted=False)
    small = load_pixels("digits", permuted=False, image_side=4)
    assert small.seq_len == 16
    image = full.train_x[0, :, 0].view(8, 8)
    expected = image.view(4, 2, 4, 2).mean(dim=(1, 3)).flatten()
    torch.testing.assert_close(small.train_x[0, :, 0], expected)
    permuted = load_pixels("digits", permuted=True, seed=5, image_side=4)
    torch.testing.assert_close(permuted.train_x[0, :, 0], expected[permuted.permutation])
    with pytest.raises(ValueError, match="image_side 3 does not divide the images' side of 8 pixels"):
        load_pixels("digits", image_side=3)


def test_train_subset_keeps_the_first_examples_and_tokens():
    from benchmark.data.datamodules import PixelDataModule, TextDataModule

    pixels = PixelDataModule("digits", batch_size=10, permuted=True, train_subset=30)
    assert len(pixels.train_dataloader().dataset) == 30
    torch.testing.assert_close(pixels.train_dataloader().dataset.tensors[0], pixels.pixels.train_x[:30])
    assert len(pixels.val_dataloader().dataset) == len(pixels.pixels.valid_x)  # validation is never cut
    text = TextDataModule("embedded_text", batch_size=4, bptt=10, train_subset=1000)
    assert torch.equal(text.train_tokens, text.corpus.train[:1000])
    assert len(text.train_dataloader()) == -(-(1000 // 4 - 1) // 10)
