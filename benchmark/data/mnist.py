"""MNIST: the four official idx ``.gz`` files, or a Hugging Face dataset with "image" and "label".

Both give the same raw arrays: the last ``N // 12`` training images (5,000 of 60,000) are the
validation split.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np

from .errors import DataFormatError, format_error
from .sources import FILES, combined_checksum

__all__ = ["read_idx", "mnist_split", "load_mnist_files", "mnist_from_dataset_dict"]


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx file (gzip) as a uint8 array; magic 2049 (labels) or 2051 (images)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    if magic != 0x800 + ndim:
        raise ValueError(f"{path}: idx magic number {magic}, expected {0x800 + ndim}")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    arr = np.frombuffer(data, dtype=np.uint8, offset=offset)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {arr.size} values, header says {dims}")
    return arr.reshape(dims)


def mnist_split(train_x, train_y, test_x, test_y, source, checksum) -> dict:
    """The raw splits of :func:`benchmark.data.load_pixels` (x flat uint8, y int64)."""
    n = train_x.shape[0]
    n_valid = n // 12  # 5,000 of 60,000
    cut = n - n_valid
    return {
        "train": (train_x[:cut], train_y[:cut]),
        "valid": (train_x[cut:], train_y[cut:]),
        "test": (test_x, test_y),
        "scale": 255.0,
        "source": source,
        "checksum": checksum,
    }


def load_mnist_files(folder: Path) -> dict:
    paths = [folder / f for f in FILES["mnist"]]
    checksum, _ = combined_checksum(paths)
    arrays = []
    for path, ndim in zip(paths, (3, 1, 3, 1)):
        try:
            arrays.append(read_idx(path, ndim))
        except (OSError, EOFError, ValueError) as error:  # not gzip, truncated, wrong magic number
            raise format_error(path, error) from None
    train_x, train_y, test_x, test_y = arrays
    if train_x.shape[0] != train_y.shape[0] or test_x.shape[0] != test_y.shape[0]:
        raise ValueError(f"{folder}: image and label counts differ")
    flat = lambda x: x.reshape(x.shape[0], -1)  # noqa: E731
    return mnist_split(
        flat(train_x), train_y.astype(np.int64), flat(test_x), test_y.astype(np.int64),
        ", ".join(str(p) for p in paths), checksum,
    )


def mnist_from_dataset_dict(raw, source: str) -> dict:
    """A DatasetDict (splits train/test; columns "image" (28x28 Image), "label"); the checksum is
    over the decoded arrays, so the same images give the same checksum in any form."""
    for split in ("train", "test"):
        missing = [c for c in ("image", "label") if c not in raw[split].column_names]
        if missing:
            raise DataFormatError(f"{source}: split {split!r} has no column {', '.join(map(repr, missing))} "
                                  f"(columns: {', '.join(raw[split].column_names)}); MNIST needs 'image' and "
                                  "'label'")

    def arrays(ds):
        cols = ds.with_format("numpy")[:]
        x = np.asarray(cols["image"], dtype=np.uint8).reshape(len(ds), -1)
        return x, np.asarray(cols["label"], dtype=np.int64)

    train_x, train_y = arrays(raw["train"])
    test_x, test_y = arrays(raw["test"])
    h = hashlib.sha256()
    for arr in (train_x, train_y, test_x, test_y):
        h.update(np.ascontiguousarray(arr).tobytes())
    return mnist_split(train_x, train_y, test_x, test_y, source, h.hexdigest())
