"""Published numbers of the Zoneout paper (Krueger et al. 2016, Tables 1 and 2), as data.

Every figure was measured at full scale on GPUs (see ``SETTINGS``); a leaderboard shows it
beside ours as a reference, never as a row of its own. ``None`` marks a figure the paper
does not give. Values are (valid, test) in the task's metric.
"""

from __future__ import annotations

PAPER = "Krueger et al. 2016, Zoneout, arXiv:1606.01305, Tables 1 and 2"

# task -> the paper's model and training at full scale.
SETTINGS: dict[str, str] = {
    "char_ptb": "1 layer x 1000 LSTM units, Adam lr 0.002, batch 32, sequences of 100, full data, GPU",
    "word_ptb": "2 layers x 1500 LSTM units, SGD (Zaremba et al. large), batch 20, unroll 35, full data, GPU",
    "text8": "1 layer x 2000 LSTM units, Adam lr 0.001, batch 128, sequences of 180, full data, GPU",
    "pmnist": "1 layer x 100 LSTM units, RMSprop lr 0.001, 150 epochs, 784 steps, full data, GPU",
}

METRICS: dict[str, str] = {"char_ptb": "bpc", "word_ptb": "perplexity", "text8": "bpc", "pmnist": "error"}

# task -> regularizer name (as registered here) -> (valid, test)
PUBLISHED: dict[str, dict[str, tuple[float | None, float | None]]] = {
    "char_ptb": {
        "none": (1.466, 1.356),
        "weight_noise": (1.507, 1.344),
        "norm_stabilizer": (1.459, 1.352),
        "stochastic_depth": (1.432, 1.343),
        "recurrent_dropout": (1.396, 1.286),
        "zoneout": (1.362, 1.252),
        "recurrent_batchnorm": (None, 1.32),
    },
    "word_ptb": {
        "none": (120.7, 114.5),
        "recurrent_dropout": (91.6, 87.0),
        "zoneout": (81.4, 77.4),
        "variational_dropout": (None, 73.4),
    },
    "text8": {
        "none": (1.396, 1.408),
        "weight_noise": (1.356, 1.367),
        "norm_stabilizer": (1.382, 1.398),
        "stochastic_depth": (1.337, 1.343),
        "recurrent_dropout": (1.386, 1.401),
        "zoneout": (1.331, 1.336),
        "recurrent_batchnorm": (None, 1.36),
    },
    "pmnist": {
        "none": (0.092, 0.102),
        "recurrent_dropout": (0.083, 0.075),
        "zoneout": (0.063, 0.069),
        "recurrent_batchnorm": (None, 0.046),
    },
}

# Other spellings of the task names that the paper's tables apply to.
ALIASES: dict[str, str] = {
    "ptb_char": "char_ptb", "charptb": "char_ptb", "char-ptb": "char_ptb",
    "ptb_word": "word_ptb", "ptb": "word_ptb", "word-ptb": "word_ptb",
    "permuted_mnist": "pmnist", "mnist": "pmnist", "p_mnist": "pmnist",
}


def paper_task(task: str) -> str | None:
    """The paper's task that ``task`` is a (possibly reduced) version of, or None."""
    key = str(task).lower()
    key = ALIASES.get(key, key)
    return key if key in PUBLISHED else None


def published(task: str, regularizer: str) -> tuple[float | None, float | None] | None:
    """(valid, test) published for ``regularizer`` on ``task``; None when the paper has no figure."""
    key = paper_task(task)
    if key is None:
        return None
    return PUBLISHED[key].get(regularizer)
