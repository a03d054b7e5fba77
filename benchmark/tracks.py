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

_DIGITS_PILOT = ""
_DIGITS_QUICK_PILOT = ""
_PMNIST_PILOT = ""
_CHAR_PTB_PILOT = ""

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
    resolve_settings("pmnist", "paper", "paper").replace(image_side=14, train_subset=10_000, lr=0.002,
                                                          epochs=30),
    trials=4, seeds=5,
    description="permuted MNIST at 14x14 (196 steps), the paper's 1x100 LSTM and RMSprop, "
                "the first 10,000 training images, 30 epochs",
    pilot=_PMNIST_PILOT))
_add(Track(
    "char_ptb/cpu-v1",
    resolve_settings("char_ptb", "paper", "paper").replace(hidden_size=256, train_subset=500_000, epochs=20,
                                                            early_stopping_patience=None),
    trials=4, seeds=5,
    description="character-level PTB, the first 500,000 training characters, 1x256 LSTM, Adam, "
                "BPTT 100, 20 epochs; full validation and test splits",
    pilot=_CHAR_PTB_PILOT))

for _task in ("char_ptb", "word_ptb", "text8", "pmnist"):
    _add(Track(f"{_task}/paper", resolve_settings(_task, "paper", "paper"), trials=20, seeds=5,
               description=f"the Zoneout paper's configuration of {_task} (GPU-sized; see shared/REFERENCE.md)"))
for _task in ("digits", "embedded_text", "char_ptb", "pmnist"):
    _preset = "cpu" if _task in ("digits", "embedded_text") else "paper"
    _add(Track(f"{_task}/smoke", resolve_settings(_task, _preset, "tiny"), trials=2, seeds=2,
               description=f"{_task} at the tiny scale: seconds per run, for tests; not a result", smoke=True))
