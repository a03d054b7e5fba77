"""Text as token ids: :class:`TextCorpus` and the ``datasets.map`` tokenizers that build it.

The map functions are module-level with their parameters in ``fn_kwargs``, so that the
fingerprints of ``datasets`` (and hence its cache) are stable across processes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from .errors import DataFormatError, format_error
from .sources import SPLITS

__all__ = ["TextCorpus", "EOS", "UNK_WORD", "CHAR_EOL", "UNK_CHAR", "per_split", "map_batched",
           "char_ptb_lines_to_symbols", "sentences_to_symbols", "rows_to_symbols", "char_corpus", "word_corpus"]

EOS = "<eos>"
UNK_WORD = "<unk>"
CHAR_EOL = "\n"  # the end-of-line symbol of char_ptb
UNK_CHAR = "\ufffd"  # the unknown symbol of embedded_text (rare characters)
_MAP_BATCH = 4096


@dataclass
class TextCorpus:
    name: str
    level: str  # "char" | "word"
    vocab: list[str]  # index -> symbol
    train: torch.Tensor  # 1-D int64 token ids
    valid: torch.Tensor
    test: torch.Tensor
    source: str
    checksum: str

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


def per_split(labels, splits, convert) -> list:
    """``convert`` of every split; a ValueError names the split's file (or name)."""
    out = []
    for label, split in zip(labels, splits):
        try:
            out.append(convert(split))
        except DataFormatError:
            raise
        except ValueError as error:
            raise format_error(label, error) from None
    return out


def map_batched(ds, fn, fn_kwargs=None, remove=None, desc=None):
    return ds.map(fn, batched=True, batch_size=_MAP_BATCH, fn_kwargs=fn_kwargs or {},
                  remove_columns=remove if remove is not None else ds.column_names, desc=desc)


def char_ptb_lines_to_symbols(batch):
    """char PTB file lines (with line breaks) -> symbol stream, one row per batch.

    A line holds each character followed by one space (and, after the first line,
    starts with the space that followed the previous newline), so its characters
    are the even positions once that leading space is removed.
    """
    out = []
    for line in batch["text"]:
        eol = line.endswith("\n")
        if eol:
            line = line[:-1]
        if line.startswith(" "):
            line = line[1:]
        if line[1::2].strip(" "):
            raise ValueError(f"not in char-PTB format (characters separated by spaces): {line[:60]!r}")
        out.append(line[::2] + CHAR_EOL if eol else line[::2])
    return {"symbols": ["".join(out)]}


def sentences_to_symbols(batch, column="sentence"):
    """PTB sentences (one a row) -> the char-PTB symbol stream (spaces as '_', one EOL a line)."""
    return {"symbols": ["".join(s.strip().replace(" ", "_") + CHAR_EOL for s in batch[column])]}


def rows_to_symbols(batch, column):
    return {"symbols": ["".join(batch[column])]}


def _symbols_to_ids(batch, vocab, unk, dtype):
    codes_vocab = np.array([ord(c) for c in vocab], dtype=np.uint32)  # vocab is sorted
    text = "".join(batch["symbols"])
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    pos = np.searchsorted(codes_vocab, codes)
    np.minimum(pos, len(vocab) - 1, out=pos)
    bad = codes_vocab[pos] != codes
    if bad.any():
        if unk is None:
            unknown = sorted({chr(c) for c in codes[bad].tolist()})
            raise ValueError(f"symbols not in the training vocabulary: {unknown[:20]!r}")
        pos[bad] = vocab.index(unk)
    return {"ids": [pos.astype(dtype)]}


def _lines_to_word_ids(batch, column, vocab, unk, dtype):
    index = {w: i for i, w in enumerate(vocab)}
    unk_id = index.get(unk) if unk is not None else None
    ids = []
    for line in batch[column]:
        for w in line.split():
            i = index.get(w, unk_id)
            if i is None:
                raise ValueError(f"word {w!r} not in the training vocabulary (and no {UNK_WORD} in it)")
            ids.append(i)
        ids.append(index[EOS])
    return {"ids": [np.asarray(ids, dtype=dtype)]}


def _id_dtype(n: int) -> str:
    return "uint8" if n <= 256 else "int32"


def _ids_tensor(ds) -> torch.Tensor:
    """The concatenated "ids" lists of a mapped dataset as one int64 tensor."""
    table = ds.with_format("arrow")[:]
    parts = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in table.column("ids").chunks]
    arr = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(arr.astype(np.int64))


def _symbol_strings(ds) -> list[str]:
    return ds.with_format("arrow")[:].column("symbols").to_pylist()


def char_corpus(name, splits, source, checksum, min_count: int = 0, labels=SPLITS) -> TextCorpus:
    """splits: train/valid/test datasets with a "symbols" column -> TextCorpus; ``labels`` name
    them in errors (their files, when read from files). Symbols seen fewer than ``min_count``
    times in train become ``UNK_CHAR``."""
    train_text = "".join(_symbol_strings(splits[0]))
    if min_count > 0:
        counts = Counter(train_text)
        kept = {c for c, k in counts.items() if k >= min_count}
        unk = UNK_CHAR
        vocab = sorted(kept | {UNK_CHAR})
    else:
        unk = None
        vocab = sorted(set(train_text))
    del train_text
    kwargs = {"vocab": vocab, "unk": unk, "dtype": _id_dtype(len(vocab))}
    tensors = per_split(labels, splits,
                        lambda ds: _ids_tensor(map_batched(ds, _symbols_to_ids, kwargs, desc=f"{name}: ids")))
    return TextCorpus(name, "char", vocab, *tensors, source=source, checksum=checksum)


def word_corpus(name, splits, column, source, checksum, labels=SPLITS) -> TextCorpus:
    """splits: train/valid/test datasets with one line of words a row in ``column`` -> TextCorpus."""
    train_lines = splits[0].with_format("arrow")[:].column(column).to_pylist()
    words = set()
    for line in train_lines:
        words.update(line.split())
    words.add(EOS)
    vocab = sorted(words)
    unk = UNK_WORD if UNK_WORD in words else None
    kwargs = {"column": column, "vocab": vocab, "unk": unk, "dtype": _id_dtype(len(vocab))}
    tensors = per_split(labels, splits,
                        lambda ds: _ids_tensor(map_batched(ds, _lines_to_word_ids, kwargs, desc=f"{name}: ids")))
    return TextCorpus(name, "word", vocab, *tensors, source=source, checksum=checksum)
