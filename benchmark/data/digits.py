"""``digits``: scikit-learn's embedded 8x8 digits (1797 images), split 1297 / 250 / 250 with a fixed seed."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

__all__ = ["DIGITS_SPLIT", "DIGITS_SPLIT_SEED", "load_digits_raw"]

DIGITS_SPLIT = (1297, 250, 250)
DIGITS_SPLIT_SEED = 20160603


def load_digits_raw() -> dict:
    """The raw splits of :func:`benchmark.data.load_pixels` (values 0..16)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.asarray(d.data, dtype=np.uint8)  # values 0..16, (1797, 64)
    y = np.asarray(d.target, dtype=np.int64)
    checksum = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED)).numpy()
    n_train, n_valid, _ = DIGITS_SPLIT
    idx = np.split(order, [n_train, n_train + n_valid])
    return {
        "train": (x[idx[0]], y[idx[0]]),
        "valid": (x[idx[1]], y[idx[1]]),
        "test": (x[idx[2]], y[idx[2]]),
        "scale": 16.0,
        "source": "sklearn.datasets.load_digits",
        "checksum": checksum,
    }
