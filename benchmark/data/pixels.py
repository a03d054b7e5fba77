""":func:`load_pixels`: images as pixel sequences, optionally shrunk and permuted."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .digits import load_digits_raw
from .errors import DataSourceError
from .hf import need_splits
from .loading import load_from_sources
from .memo import memoized
from .mnist import load_mnist_files, mnist_from_dataset_dict
from .sources import PIXEL_DATASETS, check_name

__all__ = ["PixelDataset", "load_pixels"]


@dataclass
class PixelDataset:
    name: str
    train_x: torch.Tensor  # (N, T, 1) float32 in [0, 1]
    train_y: torch.Tensor  # (N,) int64
    valid_x: torch.Tensor
    valid_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    permutation: torch.Tensor | None  # x_permuted = x_pixel_order[:, permutation]
    source: str
    checksum: str

    @property
    def seq_len(self) -> int:
        return int(self.train_x.shape[1])


def _mnist_dataset(raw, source: str) -> dict:
    need_splits(raw, ("train", "test"), source)
    return mnist_from_dataset_dict(raw, source)


def load_pixels(name: str, data_dir=None, permuted: bool = True, seed: int = 0,
                image_side: int | None = None, hub: str | None = None) -> PixelDataset:
    """Pixel-by-pixel classification data, x of shape (N, T, 1) in [0, 1].

    ``mnist``: T = 784; validation = the last 5,000 of the 60,000 training images,
    test = the 10,000 test images. ``digits``: T = 64, split 1297 / 250 / 250 by a
    fixed seed (independent of ``seed``). ``image_side`` shrinks every (square) image to
    ``image_side`` x ``image_side`` pixels by averaging blocks (it must divide the side: MNIST's
    28 into 14 gives T = 196). With ``permuted`` the pixels of every
    image are reordered by ``torch.randperm(T, generator=Generator().manual_seed(seed))``
    (the same for all splits: ``x = x_pixel_order[:, permutation]``); otherwise
    they are in reading order and ``permutation`` is None. ``hub``: a pinned hub repository,
    ``"REPO@REVISION"`` (MNIST).
    """
    check_name(name, PIXEL_DATASETS)
    if name == "digits":
        if hub is not None:
            raise DataSourceError("digits is embedded data: --hub does not apply to it (leave it out)")
        raw = memoized((name,), load_digits_raw)
    else:
        raw = load_from_sources(name, data_dir, hub, load_mnist_files, _mnist_dataset)

    side = math.isqrt(raw["train"][0].shape[1])
    if image_side is not None and (image_side < 1 or side % image_side):
        raise ValueError(f"{name}: image_side {image_side} does not divide the images' side of {side} pixels")
    block = side // image_side if image_side else 1
    T = (side // block) ** 2
    perm = torch.randperm(T, generator=torch.Generator().manual_seed(seed)) if permuted else None

    def pixels(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.array(x, dtype=np.float32, order="C")).div_(raw["scale"])
        if block > 1:  # the mean of each block x block square, in reading order
            t = torch.nn.functional.avg_pool2d(t.view(-1, 1, side, side), block).flatten(1)
        if perm is not None:
            t = t[:, perm]
        return t.contiguous().unsqueeze(-1)

    out = {}
    for split in ("train", "valid", "test"):
        x, y = raw[split]
        out[f"{split}_x"] = pixels(x)
        out[f"{split}_y"] = torch.from_numpy(np.asarray(y, dtype=np.int64).copy())
    return PixelDataset(
        name=name, num_classes=10, permutation=perm, source=raw["source"], checksum=raw["checksum"], **out
    )
