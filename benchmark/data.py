"""Data sets for the regularizer benchmark (the tasks of the Zoneout paper).

Text (:func:`load_text`), each returned as one stream of token ids per split:

* ``char_ptb``  character-level Penn Treebank (``ptb.char.{train,valid,test}.txt``);
  every line of the file contributes its characters plus one end-of-line symbol
  ``"\\n"`` (50 symbols on the standard files).
* ``word_ptb``  word-level Penn Treebank (``ptb.{train,valid,test}.txt``):
  whitespace tokens plus one ``<eos>`` per line (10,000 words on the standard files).
* ``text8``     the 100M-character text8 file, split 90M / 5M / 5M in file order
  (in general the first 90 % / next 5 % / last 5 % of the characters).
* ``embedded_text`` the Python documentation topics shipped with every Python
  (``pydoc_data.topics``), character level; needs no files.

Pixel-by-pixel classification (:func:`load_pixels`):

* ``mnist``   the four official idx ``.gz`` files; the last 5,000 of the 60,000
  training images (in general the last ``N // 12``) form the validation split.
* ``digits``  scikit-learn's 8x8 digits (1797 images, embedded in scikit-learn),
  split 1297 / 250 / 250 with a fixed seed.

Where the files are looked for, in order: the ``data_dir`` argument, then the
folder in ``$REGBENCH_DATA_DIR``; each of these may hold the files themselves or a
subfolder named like ``shared/data`` (``ptb/``, ``ptb_char/``, ``mnist/``,
``text8/``). When neither has them, the Hugging Face hub is tried (parquet
repositories only); when that fails too, :class:`DataNotFoundError` says where it
looked and which files to put where.

Local text files are read with ``datasets.load_dataset("text", ...)`` (text8 with
``Dataset.from_generator`` in 1M-character chunks) and tokenized with ``.map``,
so the processed Arrow data is cached by ``datasets`` (``$HF_DATASETS_CACHE``);
a small in-process memo makes repeated loads in one process instant. The tensors
returned from the memo are shared between calls: do not modify them in place.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

__all__ = [
    "source_names",
    "DATA_DIR_ENV",
    "DataNotFoundError",
    "DataFormatError",
    "TextCorpus",
    "PixelDataset",
    "TEXT_DATASETS",
    "PIXEL_DATASETS",
    "load_text",
    "load_pixels",
    "expected_files",
]

DATA_DIR_ENV = "REGBENCH_DATA_DIR"

TEXT_DATASETS: tuple[str, ...] = ("char_ptb", "word_ptb", "text8", "embedded_text")
PIXEL_DATASETS: tuple[str, ...] = ("mnist", "digits")

# Standard file names, in split order (train, valid, test) for text.
_FILES: dict[str, tuple[str, ...]] = {
    "char_ptb": ("ptb.char.train.txt", "ptb.char.valid.txt", "ptb.char.test.txt"),
    "word_ptb": ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
    "text8": ("text8",),
    "mnist": (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ),
    "embedded_text": (),
    "digits": (),
}
# Subfolder names, as in shared/data.
_SUBDIRS: dict[str, str] = {"char_ptb": "ptb_char", "word_ptb": "ptb", "text8": "text8", "mnist": "mnist"}
# Parquet repositories on the Hugging Face hub (no loading scripts).
_HUB_REPOS: dict[str, str] = {
    "char_ptb": "ptb-text-only/ptb_text_only",
    "word_ptb": "ptb-text-only/ptb_text_only",
    "text8": "afmck/text8",
    "mnist": "ylecun/mnist",
}

EOS = "<eos>"
UNK_WORD = "<unk>"
CHAR_EOL = "\n"  # the end-of-line symbol of char_ptb
UNK_CHAR = "\ufffd"  # the unknown symbol of embedded_text (rare characters)
EMBEDDED_MIN_COUNT = 20  # characters seen fewer times in embedded_text's train split become UNK_CHAR
DIGITS_SPLIT = (1297, 250, 250)
DIGITS_SPLIT_SEED = 20160603
TEXT8_CHUNK = 1_000_000
_MAP_BATCH = 4096
SPLITS = ("train", "valid", "test")  # how errors name the splits of data that are not files


class DataNotFoundError(RuntimeError):
    """The data set was found neither in a local folder nor on the hub."""


class DataFormatError(ValueError):
    """A data file is there but cannot be read as what it should hold; the message names the file."""


def _format_error(where, error: BaseException) -> DataFormatError:
    text = " ".join(str(error).split()) or type(error).__name__
    where = str(where)
    return DataFormatError(text[:300] if text.startswith(where) else f"{where}: {text[:300]}")


def _check_utf8(path: Path) -> None:
    """Text files must be UTF-8 text: binary garbage or another encoding is named here, not deep in a loader."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as error:
                raise DataFormatError(f"{path}: not UTF-8 text (byte {offset + error.start}); is it the right "
                                      "file, unpacked?") from None
            offset += len(block)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise DataFormatError(f"{path}: not UTF-8 text (it ends inside a character)") from None
    with open(path, "rb") as file:
        if b"\0" in file.read(1 << 20):
            raise DataFormatError(f"{path}: holds NUL bytes, not text; is it the right file?")


def _per_split(labels, splits, convert) -> list:
    """``convert`` of every split; a ValueError names the split's file (or name)."""
    out = []
    for label, split in zip(labels, splits):
        try:
            out.append(convert(split))
        except DataFormatError:
            raise
        except ValueError as error:
            raise _format_error(label, error) from None
    return out


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


def source_names(source: str) -> str:
    """A data source without the folders of the machine that ran it: files by name (the checksum names the data)."""
    return ", ".join(os.path.basename(part.strip()) if os.sep in part else part.strip() for part in source.split(","))


def expected_files(name: str) -> list[str]:
    """The standard file names ``name`` needs in a local folder ([] for embedded data)."""
    _check_name(name, TEXT_DATASETS + PIXEL_DATASETS)
    return list(_FILES[name])


# --------------------------------------------------------------------------- helpers


def _check_name(name: str, allowed: tuple[str, ...]) -> None:
    if name not in allowed:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(allowed)}")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _combined_checksum(paths: list[Path]) -> tuple[str, list[str]]:
    """sha256 over "file-name sha256" lines of the raw files; also the per-file digests."""
    digests = [_sha256_file(p) for p in paths]
    lines = "".join(f"{p.name} {d}\n" for p, d in zip(paths, digests))
    return hashlib.sha256(lines.encode()).hexdigest(), digests


def _candidate_dirs(name: str, data_dir) -> list[Path]:
    bases: list[Path] = []
    if data_dir is not None:
        bases.append(Path(data_dir).expanduser())
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        bases.append(Path(env).expanduser())
    dirs: list[Path] = []
    for base in bases:
        for d in (base, base / _SUBDIRS[name]):
            if d not in dirs:
                dirs.append(d)
    return dirs


def _find_local(name: str, data_dir) -> tuple[Path | None, list[Path]]:
    """The first candidate folder holding all of ``name``'s files, and all folders looked in."""
    dirs = _candidate_dirs(name, data_dir)
    for d in dirs:
        if all((d / f).is_file() for f in _FILES[name]):
            return d.resolve(), dirs
    return None, dirs


def _not_found(name: str, looked: list[Path], hub_error: str) -> DataNotFoundError:
    files = _FILES[name]
    lines = [f"data set {name!r} not found."]
    if looked:
        lines.append("Looked in these folders (files needed: " + ", ".join(files) + "):")
        for d in looked:
            if not d.is_dir():
                state = "folder does not exist"
            else:
                missing = [f for f in files if not (d / f).is_file()]
                state = "missing " + ", ".join(missing)
            lines.append(f"  {d}  ({state})")
    else:
        lines.append(f"No local folder given (data_dir argument and ${DATA_DIR_ENV} both unset).")
    lines.append(f"Hugging Face hub repository tried: {_HUB_REPOS[name]} -> {hub_error}")
    lines.append(
        f"To fix: put {', '.join(files)} into a folder and pass it as data_dir, "
        f"or set {DATA_DIR_ENV} to that folder or to a parent holding it as "
        f"'{_SUBDIRS[name]}/' (e.g. {DATA_DIR_ENV}=/path/to/shared/data with "
        f"/path/to/shared/data/{_SUBDIRS[name]}/{files[0]})."
    )
    if name == "text8":
        lines.append("text8 is the file inside text8.zip (100,000,000 characters); unzip it first.")
    return DataNotFoundError("\n".join(lines))


def _stat_key(paths: list[Path]) -> tuple:
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)


_MEMO: dict[tuple, object] = {}
_MEMO_LOCK = threading.Lock()


def _memo_get(key):
    with _MEMO_LOCK:
        return _MEMO.get(key)


def _memo_put(key, value) -> None:
    with _MEMO_LOCK:
        _MEMO[key] = value


# ------------------------------------------------------------- tokenizing (.map fns)
# Module-level functions with their parameters in fn_kwargs, so that datasets'
# fingerprints (and hence its cache) are stable across processes.


def _ptb_char_lines_to_symbols(batch):
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


def _sentences_to_symbols(batch):
    """Hub PTB sentences -> the char-PTB symbol stream (spaces as '_', one EOL a line)."""
    return {"symbols": ["".join(s.strip().replace(" ", "_") + CHAR_EOL for s in batch["sentence"])]}


def _rows_to_symbols(batch, column):
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


def _map(ds, fn, fn_kwargs=None, remove=None, desc=None):
    return ds.map(
        fn,
        batched=True,
        batch_size=_MAP_BATCH,
        fn_kwargs=fn_kwargs or {},
        remove_columns=remove if remove is not None else ds.column_names,
        desc=desc,
    )


def _char_corpus(name, splits, source, checksum, min_count: int = 0, labels=SPLITS) -> TextCorpus:
    """splits: train/valid/test datasets with a "symbols" column -> TextCorpus; ``labels`` name
    them in errors (their files, when read from files)."""
    train_text = "".join(_symbol_strings(splits[0]))
    if min_count > 0:
        from collections import Counter

        counts = Counter(train_text)
        kept = {c for c, k in counts.items() if k >= min_count}
        unk = UNK_CHAR
        vocab = sorted(kept | {UNK_CHAR})
    else:
        unk = None
        vocab = sorted(set(train_text))
    del train_text
    kwargs = {"vocab": vocab, "unk": unk, "dtype": _id_dtype(len(vocab))}
    tensors = _per_split(labels, splits, lambda ds: _ids_tensor(_map(ds, _symbols_to_ids, kwargs, desc=f"{name}: ids")))
    return TextCorpus(name, "char", vocab, *tensors, source=source, checksum=checksum)


def _word_corpus(name, splits, column, source, checksum, labels=SPLITS) -> TextCorpus:
    train_lines = splits[0].with_format("arrow")[:].column(column).to_pylist()
    words = set()
    for line in train_lines:
        words.update(line.split())
    words.add(EOS)
    vocab = sorted(words)
    unk = UNK_WORD if UNK_WORD in words else None
    kwargs = {"column": column, "vocab": vocab, "unk": unk, "dtype": _id_dtype(len(vocab))}
    tensors = _per_split(labels, splits,
                         lambda ds: _ids_tensor(_map(ds, _lines_to_word_ids, kwargs, desc=f"{name}: ids")))
    return TextCorpus(name, "word", vocab, *tensors, source=source, checksum=checksum)


# ----------------------------------------------------------------------- local text


def _load_text_files(name: str, folder: Path) -> TextCorpus:
    import datasets

    paths = [folder / f for f in _FILES[name]]
    for p in paths:
        if p.stat().st_size == 0:
            raise ValueError(f"{p} is empty")
    checksum, _ = _combined_checksum(paths)
    source = ", ".join(str(p) for p in paths)
    if name == "text8":
        return _load_text8(paths[0], source, checksum)
    for path in paths:
        _check_utf8(path)
    keys = ("train", "validation", "test")
    raw = datasets.load_dataset(
        "text",
        data_files={k: str(p) for k, p in zip(keys, paths)},
        keep_linebreaks=(name == "char_ptb"),
    )
    splits = [raw[k] for k in keys]
    if name == "char_ptb":
        symbols = _per_split(paths, splits, lambda ds: _map(ds, _ptb_char_lines_to_symbols, desc="char_ptb: symbols"))
        return _char_corpus(name, symbols, source, checksum, labels=paths)
    return _word_corpus(name, splits, "text", source, checksum, labels=paths)


def _text8_chunks(path: str, start: int, stop: int, sha256: str):
    # sha256 is unused here; it is in gen_kwargs so that the cache is keyed on the content.
    with open(path, "rb") as f:
        f.seek(start)
        pos = start
        while pos < stop:
            block = f.read(min(TEXT8_CHUNK, stop - pos))
            if not block:
                break
            pos += len(block)
            yield {"text": block.decode("latin-1")}


def _load_text8(path: Path, source: str, checksum: str) -> TextCorpus:
    import datasets

    n = path.stat().st_size
    bounds = [0, int(n * 0.90), int(n * 0.95), n]
    features = datasets.Features({"text": datasets.Value("string")})
    splits = []
    for k in range(3):
        ds = datasets.Dataset.from_generator(
            _text8_chunks,
            features=features,
            gen_kwargs={"path": str(path), "start": bounds[k], "stop": bounds[k + 1], "sha256": checksum},
        )
        splits.append(_map(ds, _rows_to_symbols, {"column": "text"}, desc="text8: symbols"))
    return _char_corpus("text8", splits, source, checksum)


# ---------------------------------------------------------------------- embedded text


def _embedded_text() -> str:
    from pydoc_data.topics import topics

    return "".join(topics[k].strip("\n") + "\n\n" for k in sorted(topics))


def _load_embedded_text() -> TextCorpus:
    import datasets

    text = _embedded_text()
    checksum = hashlib.sha256(text.encode("utf-8")).hexdigest()
    n = len(text)
    a, b = int(n * 0.90), int(n * 0.95)
    step = 100_000
    splits = []
    for part in (text[:a], text[a:b], text[b:]):
        rows = [part[i : i + step] for i in range(0, len(part), step)] or [""]
        splits.append(datasets.Dataset.from_dict({"symbols": rows}))
    return _char_corpus(
        "embedded_text", splits, "pydoc_data.topics.topics (Python documentation topics)", checksum,
        min_count=EMBEDDED_MIN_COUNT,
    )


# ------------------------------------------------------------------------------ hub


def _hub_offline() -> bool:
    truthy = {"1", "ON", "YES", "TRUE"}
    if any(os.environ.get(v, "").upper() in truthy for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")):
        return True
    try:
        import datasets.config

        return bool(datasets.config.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover
        return False


def _hub_load(name: str):
    """``datasets.load_dataset`` of the parquet hub repository of ``name``; raises on any failure."""
    import datasets

    if _hub_offline():
        raise ConnectionError("offline mode (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE), not tried")
    _check_hub_reachable()
    repo = _HUB_REPOS[name]
    try:
        return datasets.load_dataset(repo)
    except (ConnectionError, OSError):
        raise
    except Exception:
        # A repository that still carries a loading script in main has the Hub's
        # parquet export under this revision.
        return datasets.load_dataset(repo, revision="refs/convert/parquet")


def _check_hub_reachable(timeout: float = 3.0) -> None:
    """Fail fast (instead of minutes of retries) when the hub's host cannot be reached."""
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return  # the proxy resolves the host; let datasets try
    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except Exception:  # pragma: no cover
        endpoint = "https://huggingface.co"
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(f"cannot reach {host}:{port} ({e})") from e


def _hub_text(name: str) -> TextCorpus:
    return _text_from_hub_dataset(name, _hub_load(name), f"hf://datasets/{_HUB_REPOS[name]}")


def _text_from_hub_dataset(name: str, raw, source: str) -> TextCorpus:
    """A hub DatasetDict (splits train/validation/test; one text column) -> TextCorpus.

    PTB repositories hold one sentence a row (column "sentence", words separated by
    single spaces, no line ends): word_ptb adds "<eos>" per row, char_ptb derives the
    char-PTB stream exactly as the standard ptb.char files were derived. text8
    repositories hold the text in rows (column "text"), concatenated in order.
    """
    splits = [raw["train"], raw["validation"], raw["test"]]
    column = "sentence" if "sentence" in splits[0].column_names else "text"
    h = hashlib.sha256()
    for split, ds in zip(("train", "validation", "test"), splits):
        h.update(f"{split}\n".encode())
        for row in ds.with_format("arrow")[:].column(column).to_pylist():
            h.update(row.encode("utf-8") + b"\n")
    checksum = h.hexdigest()
    if name == "word_ptb":
        return _word_corpus(name, splits, column, source, checksum)
    if name == "char_ptb":
        symbols = [_map(ds, _sentences_to_symbols, desc="char_ptb: symbols") for ds in splits]
    else:
        symbols = [_map(ds, _rows_to_symbols, {"column": column}, desc=f"{name}: symbols") for ds in splits]
    return _char_corpus(name, symbols, source, checksum)


def _hub_mnist() -> dict:
    return _mnist_from_hub_dataset(_hub_load("mnist"), f"hf://datasets/{_HUB_REPOS['mnist']}")


def _mnist_from_hub_dataset(raw, source: str) -> dict:
    """A hub DatasetDict (splits train/test; columns "image" (28x28 Image), "label")."""

    def arrays(ds):
        cols = ds.with_format("numpy")[:]
        x = np.asarray(cols["image"], dtype=np.uint8).reshape(len(ds), -1)
        return x, np.asarray(cols["label"], dtype=np.int64)

    train_x, train_y = arrays(raw["train"])
    test_x, test_y = arrays(raw["test"])
    h = hashlib.sha256()
    for arr in (train_x, train_y, test_x, test_y):
        h.update(np.ascontiguousarray(arr).tobytes())
    return _mnist_split(train_x, train_y, test_x, test_y, source, h.hexdigest())


def _with_fallback(name: str, data_dir, local: Callable, hub: Callable):
    folder, looked = _find_local(name, data_dir)
    if folder is not None:
        return local(folder)
    try:
        return hub()
    except Exception as e:  # offline, no connection, repo layout changed, ...
        raise _not_found(name, looked, f"{type(e).__name__}: {e}".splitlines()[0][:300]) from e


# ------------------------------------------------------------------------ public API


def load_text(name: str, data_dir: str | os.PathLike | None = None) -> TextCorpus:
    """Load a text corpus as id streams; see the module docstring for the data sets.

    The vocabulary is built from the training split and sorted; a valid/test symbol
    outside it is an error, except for word-level data with ``<unk>`` in the
    vocabulary (mapped to ``<unk>``) and ``embedded_text`` (mapped to ``UNK_CHAR``).
    """
    _check_name(name, TEXT_DATASETS)
    if name == "embedded_text":
        key = (name,)
        hit = _memo_get(key)
        if hit is None:
            hit = _load_embedded_text()
            _memo_put(key, hit)
        return replace(hit, vocab=list(hit.vocab))

    def local(folder: Path) -> TextCorpus:
        key = (name, _stat_key([folder / f for f in _FILES[name]]))
        hit = _memo_get(key)
        if hit is None:
            hit = _load_text_files(name, folder)
            _memo_put(key, hit)
        return replace(hit, vocab=list(hit.vocab))

    def hub() -> TextCorpus:
        key = (name, "hub")
        hit = _memo_get(key)
        if hit is None:
            hit = _hub_text(name)
            _memo_put(key, hit)
        return replace(hit, vocab=list(hit.vocab))

    return _with_fallback(name, data_dir, local, hub)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
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


def _mnist_split(train_x, train_y, test_x, test_y, source, checksum) -> dict:
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


def _local_mnist(folder: Path) -> dict:
    paths = [folder / f for f in _FILES["mnist"]]
    checksum, _ = _combined_checksum(paths)
    arrays = []
    for path, ndim in zip(paths, (3, 1, 3, 1)):
        try:
            arrays.append(_read_idx(path, ndim))
        except (OSError, EOFError, ValueError) as error:  # not gzip, truncated, wrong magic number
            raise _format_error(path, error) from None
    train_x, train_y, test_x, test_y = arrays
    if train_x.shape[0] != train_y.shape[0] or test_x.shape[0] != test_y.shape[0]:
        raise ValueError(f"{folder}: image and label counts differ")
    flat = lambda x: x.reshape(x.shape[0], -1)  # noqa: E731
    return _mnist_split(
        flat(train_x), train_y.astype(np.int64), flat(test_x), test_y.astype(np.int64),
        ", ".join(str(p) for p in paths), checksum,
    )


def _digits() -> dict:
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


def load_pixels(name: str, data_dir=None, permuted: bool = True, seed: int = 0,
                image_side: int | None = None) -> PixelDataset:
    """Pixel-by-pixel classification data, x of shape (N, T, 1) in [0, 1].

    ``mnist``: T = 784; validation = the last 5,000 of the 60,000 training images,
    test = the 10,000 test images. ``digits``: T = 64, split 1297 / 250 / 250 by a
    fixed seed (independent of ``seed``). ``image_side`` shrinks every (square) image to
    ``image_side`` x ``image_side`` pixels by averaging blocks (it must divide the side: MNIST's
    28 into 14 gives T = 196). With ``permuted`` the pixels of every
    image are reordered by ``torch.randperm(T, generator=Generator().manual_seed(seed))``
    (the same for all splits: ``x = x_pixel_order[:, permutation]``); otherwise
    they are in reading order and ``permutation`` is None.
    """
    _check_name(name, PIXEL_DATASETS)
    if name == "digits":
        key = (name,)
        raw = _memo_get(key)
        if raw is None:
            raw = _digits()
            _memo_put(key, raw)
    else:

        def local(folder: Path) -> dict:
            key = (name, _stat_key([folder / f for f in _FILES[name]]))
            hit = _memo_get(key)
            if hit is None:
                hit = _local_mnist(folder)
                _memo_put(key, hit)
            return hit

        def hub() -> dict:
            hit = _memo_get((name, "hub"))
            if hit is None:
                hit = _hub_mnist()
                _memo_put((name, "hub"), hit)
            return hit

        raw = _with_fallback(name, data_dir, local, hub)

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
