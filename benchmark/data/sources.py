"""Where local data is looked for: the data set names, their standard files, the candidate folders,
file checksums and the not-found message."""

from __future__ import annotations

import codecs
import hashlib
import os
from pathlib import Path

from .errors import DataFormatError, DataNotFoundError

__all__ = [
    "DATA_DIR_ENV", "TEXT_DATASETS", "PIXEL_DATASETS", "FILES", "SUBDIRS", "SPLITS", "check_name",
    "expected_files", "source_names", "sha256_file", "combined_checksum", "candidate_dirs", "has_files",
    "stat_key", "check_utf8", "not_found",
]

DATA_DIR_ENV = "REGBENCH_DATA_DIR"

TEXT_DATASETS: tuple[str, ...] = ("char_ptb", "word_ptb", "text8", "embedded_text")
PIXEL_DATASETS: tuple[str, ...] = ("mnist", "digits")

# Standard file names, in split order (train, valid, test) for text.
FILES: dict[str, tuple[str, ...]] = {
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
SUBDIRS: dict[str, str] = {"char_ptb": "ptb_char", "word_ptb": "ptb", "text8": "text8", "mnist": "mnist"}
SPLITS = ("train", "valid", "test")  # how errors name the splits of data that are not files


def check_name(name: str, allowed: tuple[str, ...]) -> None:
    if name not in allowed:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(allowed)}")


def expected_files(name: str) -> list[str]:
    """The standard file names ``name`` needs in a local folder ([] for embedded data)."""
    check_name(name, TEXT_DATASETS + PIXEL_DATASETS)
    return list(FILES[name])


def source_names(source: str) -> str:
    """A data source without the folders of the machine that ran it: files by name (the checksum names
    the data); a hub source (``hf://datasets/REPO@REVISION``) stays whole, it names no machine."""
    parts = (part.strip() for part in source.split(","))
    return ", ".join(part if part.startswith("hf://") or os.sep not in part else os.path.basename(part)
                     for part in parts)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def combined_checksum(paths: list[Path]) -> tuple[str, list[str]]:
    """sha256 over "file-name sha256" lines of the raw files; also the per-file digests."""
    digests = [sha256_file(p) for p in paths]
    lines = "".join(f"{p.name} {d}\n" for p, d in zip(paths, digests))
    return hashlib.sha256(lines.encode()).hexdigest(), digests


def candidate_dirs(name: str, data_dir) -> list[Path]:
    """The folders looked in, in order: ``data_dir``, ``$REGBENCH_DATA_DIR``, each also with ``SUBDIRS[name]``."""
    bases: list[Path] = []
    if data_dir is not None:
        bases.append(Path(data_dir).expanduser())
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        bases.append(Path(env).expanduser())
    dirs: list[Path] = []
    for base in bases:
        for d in (base, base / SUBDIRS[name]):
            if d not in dirs:
                dirs.append(d)
    return dirs


def has_files(name: str, folder: Path) -> bool:
    return all((folder / f).is_file() for f in FILES[name])


def stat_key(paths: list[Path]) -> tuple:
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)


def check_utf8(path: Path) -> None:
    """Text files must be UTF-8 text: binary garbage or another encoding is named here, not deep in a loader."""
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


def not_found(name: str, looked: list[Path], hub_repo: str, hub_error: str) -> DataNotFoundError:
    """What was looked for where, and how to fix it."""
    files = FILES[name]
    lines = [f"data set {name!r} not found."]
    if looked:
        lines.append("Looked in these folders (files needed: " + ", ".join(files) + "; or a Hugging Face "
                     "dataset: a save_to_disk folder with dataset_dict.json, or parquet files named by split "
                     "such as train-*.parquet, also under data/):")
        for d in looked:
            if not d.is_dir():
                state = "folder does not exist"
            else:
                missing = [f for f in files if not (d / f).is_file()]
                state = "missing " + ", ".join(missing) + "; no dataset_dict.json, no *.parquet"
            lines.append(f"  {d}  ({state})")
    else:
        lines.append(f"No local folder given (data_dir argument and ${DATA_DIR_ENV} both unset).")
    lines.append(f"Hugging Face hub repository tried: {hub_repo} -> {hub_error}")
    lines.append(
        f"To fix: put {', '.join(files)} into a folder and pass it as data_dir, "
        f"or set {DATA_DIR_ENV} to that folder or to a parent holding it as "
        f"'{SUBDIRS[name]}/' (e.g. {DATA_DIR_ENV}=/path/to/shared/data with "
        f"/path/to/shared/data/{SUBDIRS[name]}/{files[0]}); or load a pinned hub repository with "
        f"--hub REPO@REVISION (e.g. --hub {hub_repo}@<commit>)."
    )
    if name == "text8":
        lines.append("text8 is the file inside text8.zip (100,000,000 characters); unzip it first.")
    return DataNotFoundError("\n".join(lines))
