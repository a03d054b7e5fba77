"""Lightning DataModules of the benchmark tasks (over :func:`load_text` and :func:`load_pixels`).

Language models train with truncated backpropagation through time and carry the hidden
state from one batch to the next (Lightning 2 no longer does this). That only makes sense
if batch k+1 continues batch k, so :class:`TextDataModule` cuts every split into ``batch``
parallel streams and walks them in ``bptt`` windows, in order, without shuffling.
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .pixels import load_pixels
from .text import load_text

__all__ = ["batchify", "BPTTWindows", "TextDataModule", "PixelDataModule"]


def batchify(stream: torch.Tensor, streams: int) -> torch.Tensor:
    """Cut a 1-D token stream into ``streams`` contiguous rows of equal length (the tail is dropped).

    Row ``b`` holds tokens ``[b * n, (b + 1) * n)`` where ``n = len(stream) // streams``.
    """
    length = stream.numel() // streams
    if length < 2:
        raise ValueError(f"a stream of {stream.numel()} tokens is too short for {streams} parallel streams")
    return stream[: streams * length].view(streams, length).long()


class BPTTWindows(Dataset):
    """Window ``i`` of the batchified streams: inputs ``(streams, bptt)`` and next-token targets.

    Consecutive windows are consecutive in every row, so the final hidden state of window i
    is the right initial state of window i + 1. The last window may be shorter.
    """

    def __init__(self, stream: torch.Tensor, streams: int, bptt: int) -> None:
        self.data = batchify(stream, streams)
        self.bptt = bptt
        # Targets are the inputs shifted by one, so the last token of each row is a target only.
        self.count = -(-(self.data.size(1) - 1) // bptt)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.count:
            raise IndexError(index)
        start = index * self.bptt
        stop = min(start + self.bptt, self.data.size(1) - 1)
        return self.data[:, start:stop], self.data[:, start + 1 : stop + 1]


class TextDataModule(LightningDataModule):
    """Contiguous TBPTT batches of a text corpus from :func:`benchmark.data.load_text`."""

    def __init__(self, dataset: str, batch_size: int, bptt: int, data_dir: str | None = None,
                 train_subset: int | None = None, hub: str | None = None) -> None:
        super().__init__()
        self.dataset, self.batch_size, self.bptt, self.data_dir = dataset, batch_size, bptt, data_dir
        self.hub = hub  # a pinned hub repository "REPO@REVISION" instead of data_dir
        self.train_subset = train_subset  # None: the whole training split; else its first N tokens
        self.corpus = None

    def setup(self, stage: str | None = None) -> None:
        if self.corpus is None:  # Lightning calls setup for every stage; load once
            self.corpus = load_text(self.dataset, self.data_dir, hub=self.hub)

    @property
    def train_tokens(self) -> torch.Tensor:
        self.setup()
        return self.corpus.train if self.train_subset is None else self.corpus.train[: self.train_subset]

    @property
    def vocab_size(self) -> int:
        self.setup()
        return self.corpus.vocab_size

    def _loader(self, split: str) -> DataLoader:
        self.setup()
        stream = self.train_tokens if split == "train" else getattr(self.corpus, split)
        windows = BPTTWindows(stream, self.batch_size, self.bptt)
        # batch_size=None: each dataset item already is a whole batch; never shuffle (state is carried).
        return DataLoader(windows, batch_size=None, shuffle=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


class PixelDataModule(LightningDataModule):
    """Pixel-by-pixel images ``(batch, steps, 1)`` and labels from :func:`benchmark.data.load_pixels`.

    ``permutation_seed`` fixes the pixel order of permuted tasks; it is the same for every run
    so that runs with different training seeds solve the same task.
    """

    def __init__(self, dataset: str, batch_size: int, permuted: bool, data_dir: str | None = None,
                 permutation_seed: int = 0, shuffle_seed: int = 0, train_subset: int | None = None,
                 image_side: int | None = None, hub: str | None = None) -> None:
        super().__init__()
        self.dataset, self.batch_size, self.permuted, self.data_dir = dataset, batch_size, permuted, data_dir
        self.hub = hub  # a pinned hub repository "REPO@REVISION" instead of data_dir
        self.permutation_seed, self.shuffle_seed = permutation_seed, shuffle_seed
        self.train_subset, self.image_side = train_subset, image_side  # None: every image, full size
        self.pixels = None
        # One generator for the whole run, saved in checkpoints (state_dict), so that a resumed
        # run shuffles its remaining epochs as the uninterrupted run does.
        self.shuffling = torch.Generator().manual_seed(shuffle_seed)

    def setup(self, stage: str | None = None) -> None:
        if self.pixels is None:
            self.pixels = load_pixels(self.dataset, self.data_dir, permuted=self.permuted, seed=self.permutation_seed,
                                      image_side=self.image_side, hub=self.hub)

    @property
    def num_classes(self) -> int:
        self.setup()
        return self.pixels.num_classes

    def _dataset(self, split: str) -> TensorDataset:
        self.setup()
        x, y = getattr(self.pixels, f"{split}_x"), getattr(self.pixels, f"{split}_y")
        if split == "train" and self.train_subset is not None:  # a fixed subset: the first N images
            x, y = x[: self.train_subset], y[: self.train_subset]
        return TensorDataset(x, y)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset("train"), batch_size=self.batch_size, shuffle=True, generator=self.shuffling)

    def state_dict(self) -> dict:
        return {"shuffling": self.shuffling.get_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        # Lightning restores this before it creates the first iterator of the resumed run.
        self.shuffling.set_state(state_dict["shuffling"])

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset("valid"), batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset("test"), batch_size=self.batch_size)
