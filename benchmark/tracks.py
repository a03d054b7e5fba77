"""Benchmark tracks: named, versioned settings in which a regularizer has something to do.

A track fixes everything a leaderboard's numbers depend on: the task, the model and its
training (a complete ``TrainingSettings``, the data budget included), the tuning budget
(Optuna trials per regularizer) and the number of fresh seeds each best configuration is run
with. Boards are computed per track, so two numbers on one board always come from the same
setting. A track's definition never changes: a different setting is a new version
(``digits/cpu-v2``), so that a board's name says which experiment it is.

* ``<task>/cpu-v1``: chosen by a pilot (see each track's ``pilot``) so that on a 2-core CPU the
  unregularized baseline is far from chance *and* overfits within the budget: the regime in
  which a regularizer can help at all.
* ``<task>/paper``: the paper's full configuration (GPU-sized).
* ``<task>/smoke``: seconds per run, for tests and the CI. Its numbers are not results: its
  boards say so in a banner and it never enters the cross-task ranking.

    track = get_track("digits/cpu-v1")
    track.settings.hidden_size, track.trials, track.seeds
"""

from __future__ import annotations

from dataclasses import dataclass

from .tasks import TrainingSettings, get_task, resolve_settings

__all__ = ["Track", "TRACKS", "get_track", "track_names", "DEFAULT_TRACK"]


@dataclass(frozen=True)
class Track:
    name: str  # "<task>/<label>", e.g. "digits/cpu-v1"
    settings: TrainingSettings
    trials: int  # Optuna trials per regularizer with tunable hyperparameters (equal budget); 0: no
    # study, every regularizer at the paper's hyperparameters for the task (or its defaults)
    seeds: int  # fresh seeds of each best configuration (and of the baseline)
    description: str
    smoke: bool = False  # smoke scale: for tests only, never a result
    pilot: str = ""  # what the pilot measured when the track was chosen (markdown), shown on its board

    @property
    def task(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def label(self) -> str:
        return self.name.split("/", 1)[1]


TRACKS: dict[str, Track] = {}
DEFAULT_TRACK = "digits/quick-v1"  # the track of `regbench run` with no arguments


def _add(track: Track) -> None:
    get_task(track.task)  # a track names a registered task
    if track.name in TRACKS:
        raise ValueError(f"track {track.name!r} is defined twice; a changed setting is a new version")
    TRACKS[track.name] = track


def track_names() -> list[str]:
    return list(TRACKS)


def get_track(name: str) -> Track:
    try:
        return TRACKS[name]
    except KeyError:
        raise ValueError(f"unknown track {name!r}; valid tracks: {', '.join(TRACKS)} "
                         "(`regbench list` describes them)") from None


# ---------------------------------------------------------------------------- the tracks

# What the pilots measured (one CPU process per run, 2 cores shared with other work, 2026-12-01).
# Chance is an error rate of 0.9 on the ten-class tasks.
_DIGITS_PILOT = (
    "the unregularized 1x100 LSTM, RMSprop lr 0.005, 60 epochs, 2 seeds: best validation error 0.080 and "
    "0.080 (test 0.080 and 0.064), against 0.9 for chance; its validation NLL bottoms out at epochs 24 and "
    "39 (0.39, 0.34) and ends at 0.73 and 0.44 while the training loss falls to 0.036 and 0.043: it "
    "overfits. lr 0.002 over 80 epochs was no better (validation 0.088, 0.092). Zoneout at the paper's "
    "pMNIST setting (0.15, shared mask): validation 0.080 and 0.084, test 0.076 and 0.080. 29-76 s a run.")
_DIGITS_QUICK_PILOT = (
    "the same runs as digits/cpu-v1's pilot after 20 epochs: the baseline's validation error 0.168 and "
    "0.176 (chance 0.9), its validation NLL already above its minimum (0.55, 0.48 against a training loss "
    "of 0.32, 0.30).")
_PMNIST_PILOT = (
    "the paper's unregularized 1x100 LSTM with RMSprop (decay 0.5), 1 seed each. At 14x14 (196 steps) it "
    "learns too slowly for a CPU budget: lr 0.002 on 10,000 images reached validation error 0.237 after "
    "16 epochs; lr 0.005 on 5,000 images 0.197 after 40 epochs (test 0.218), still improving, no overfitting "
    "(final training loss 0.44, validation NLL 0.65), 515 s. At 7x7 (49 steps), lr 0.005, 10,000 images, "
    "60 epochs: best validation error 0.079, test 0.091 (the paper's full-scale baseline: 0.092 / 0.102); "
    "validation NLL bottoms out at epoch 43 (0.31) and ends at 0.42 against a training loss of 0.089: it "
    "overfits. 421 s under load.")
_CHAR_PTB_PILOT = (
    "the unregularized 1x256 LSTM with the paper's Adam (lr 0.002), BPTT 100, batch 32, 1 seed each. On the "
    "first 500,000 training characters, 20 epochs: best validation 1.883 bpc at epoch 15 (test 1.843), the "
    "validation NLL flat from there (1.305 nats) against a training loss of 1.08: barely overfitting, and "
    "806 s a run under load, too long for the budget. On the first 250,000 characters, 30 epochs (validation "
    "on its first 40 windows): best validation 2.024 bpc at epoch 17 (test 1.960; a unigram model of PTB "
    "is above 4 bpc); the validation NLL bottoms out at 1.403 there and rises to 1.422 at epoch 25 and 1.431 "
    "at 30 while the training loss falls to 1.081 and 1.042: it overfits. 482 s for 30 epochs under load.")

_add(Track(
    "digits/cpu-v1",
    resolve_settings("digits", "paper", "paper").replace(hidden_size=100, batch_size=32, lr=0.005, epochs=60),
    trials=6, seeds=5,
    description="8x8 digits (embedded), 64 permuted pixels, 1x100 LSTM, RMSprop, 60 epochs on 1,297 images",
    pilot=_DIGITS_PILOT))
_add(Track(
    "digits/quick-v1",
    resolve_settings("digits", "paper", "paper").replace(hidden_size=100, batch_size=32, lr=0.005, epochs=20),
    trials=0, seeds=3,
    description="digits/cpu-v1 cut to 20 epochs with the paper's hyperparameters (no tuning): "
                "the default `regbench run`, a few minutes on 2 cores",
    pilot=_DIGITS_QUICK_PILOT))
_add(Track(
    "pmnist/cpu-v1",
    resolve_settings("pmnist", "paper", "paper").replace(image_side=7, train_subset=10_000, lr=0.005,
                                                          epochs=60),
    trials=4, seeds=5,
    description="permuted MNIST with images averaged down to 7x7 (49 steps), the paper's 1x100 LSTM and "
                "RMSprop (lr 0.005), the first 10,000 training images, 60 epochs; full validation and test splits",
    pilot=_PMNIST_PILOT))
_add(Track(
    "char_ptb/cpu-v1",
    resolve_settings("char_ptb", "paper", "paper").replace(hidden_size=256, train_subset=250_000, epochs=25,
                                                            limit_val_batches=40, early_stopping_patience=None),
    trials=4, seeds=5,
    description="character-level PTB, the first 250,000 training characters, 1x256 LSTM, the paper's Adam "
                "(lr 0.002), BPTT 100, 25 epochs; validation on the first 40 windows of each of the 32 "
                "streams (128,000 characters), test on the whole test split",
    pilot=_CHAR_PTB_PILOT))

for _task in ("char_ptb", "word_ptb", "text8", "pmnist"):
    _add(Track(f"{_task}/paper", resolve_settings(_task, "paper", "paper"), trials=20, seeds=5,
               description=f"the Zoneout paper's configuration of {_task} (GPU-sized; see shared/REFERENCE.md)"))
for _task in ("digits", "embedded_text", "char_ptb", "pmnist"):
    _preset = "cpu" if _task in ("digits", "embedded_text") else "paper"
    _add(Track(f"{_task}/smoke", resolve_settings(_task, _preset, "tiny"), trials=2, seeds=2,
               description=f"{_task} at the tiny scale: seconds per run, for tests; not a result", smoke=True))
