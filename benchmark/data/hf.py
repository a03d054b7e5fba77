"""Hugging Face ``datasets`` as data sources.

* a pinned hub repository, ``--hub REPO@REVISION``: ``datasets.load_dataset(repo, revision=...)``,
  recorded as the source ``hf://datasets/REPO@REVISION``. An unpinned repository can change under
  a benchmark, so the revision (a commit, tag or branch) is required;
* a local folder saved with ``Dataset(Dict).save_to_disk`` (``dataset_dict.json``): ``load_from_disk``;
* local parquet files named by split, as a hub repository lays them out (``data/train-*.parquet``,
  ``validation-*.parquet``, ...): ``load_dataset("parquet", data_files=...)``;
* when no local data is found, the default (unpinned) hub repository of the data set, as a
  fallback that fails fast offline.

Every form becomes the same corpus or raw arrays as the standard files, through
:func:`text_from_dataset_dict` and :func:`benchmark.data.mnist.mnist_from_dataset_dict`; their
checksums are over the content, so the same data has the same checksum in any form.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
from pathlib import Path

from .corpora import TextCorpus, char_corpus, map_batched, rows_to_symbols, sentences_to_symbols, word_corpus
from .errors import DataFormatError, DataNotFoundError, DataSourceError

__all__ = [
    "HUB_REPOS", "SPLIT_NAMES", "parse_hub", "hub_argument", "hub_source", "load_hub", "load_default_hub",
    "local_dataset_kind", "load_local_dataset", "local_dataset_files", "need_splits", "text_from_dataset_dict",
]

# Parquet repositories on the Hugging Face hub (no loading scripts): the unpinned fallback.
HUB_REPOS: dict[str, str] = {
    "char_ptb": "ptb-text-only/ptb_text_only",
    "word_ptb": "ptb-text-only/ptb_text_only",
    "text8": "afmck/text8",
    "mnist": "ylecun/mnist",
}
# Split name -> the names accepted for it in a dataset or in parquet file names.
SPLIT_NAMES: dict[str, tuple[str, ...]] = {"train": ("train",), "validation": ("validation", "valid", "val", "dev"),
                                           "test": ("test",)}
_HUB_FORM = "REPO@REVISION, e.g. --hub ylecun/mnist@<commit sha> or --hub ptb-text-only/ptb_text_only@main"
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


# --------------------------------------------------------------------------- --hub REPO@REVISION


def parse_hub(spec: str) -> tuple[str, str]:
    """``"owner/name@revision"`` -> ``(repo, revision)``; DataSourceError (saying why, showing the form)."""
    spec = (spec or "").strip()
    if "@" not in spec:
        raise DataSourceError(f"--hub {spec!r} has no revision: a hub repository must be pinned, since its data "
                              f"can change between runs of a benchmark; give {_HUB_FORM}")
    repo, _, revision = spec.rpartition("@")
    if not repo:
        raise DataSourceError(f"--hub {spec!r} has no repository before '@'; give {_HUB_FORM}")
    if not revision or any(c.isspace() for c in revision):
        raise DataSourceError(f"--hub {spec!r} has no usable revision after '@'; give {_HUB_FORM}")
    if not _REPO.match(repo):
        raise DataSourceError(f"--hub {spec!r}: {repo!r} is not a repository name (owner/name); give {_HUB_FORM}")
    return repo, revision


def hub_argument(value: str) -> str:
    """argparse ``type=`` of ``--hub``: the value, checked, so that a bad one is a usage error at once."""
    try:
        parse_hub(value)
    except DataSourceError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value.strip()


def hub_source(repo: str, revision: str) -> str:
    """The recorded data source of a hub repository: it names the revision the data came from."""
    return f"hf://datasets/{repo}@{revision}"


def load_hub(spec: str):
    """``(DatasetDict, source)`` of a pinned hub repository; DataNotFoundError naming the fix on failure."""
    import datasets

    repo, revision = parse_hub(spec)
    try:
        if not _hub_offline():  # offline, datasets may still find it in its cache
            _check_hub_reachable()
        raw = datasets.load_dataset(repo, revision=revision)
    except Exception as error:  # no connection, no such repository or revision, ...
        detail = f"{type(error).__name__}: {error}".splitlines()[0][:300]
        raise DataNotFoundError(f"--hub {spec}: could not load {repo} at revision {revision} ({detail}); check "
                                "the repository and the revision, or download it (save_to_disk or its parquet "
                                "files) and pass the folder as --data-dir") from error
    return raw, hub_source(repo, revision)


def load_default_hub(name: str):
    """``(DatasetDict, source)`` of the unpinned default repository of ``name``; raises on any failure."""
    import datasets

    if _hub_offline():
        raise ConnectionError("offline mode (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE), not tried")
    _check_hub_reachable()
    repo = HUB_REPOS[name]
    try:
        return datasets.load_dataset(repo), f"hf://datasets/{repo}"
    except (ConnectionError, OSError):
        raise
    except Exception:
        # A repository that still carries a loading script in main has the Hub's
        # parquet export under this revision.
        revision = "refs/convert/parquet"
        return datasets.load_dataset(repo, revision=revision), hub_source(repo, revision)


def _hub_offline() -> bool:
    truthy = {"1", "ON", "YES", "TRUE"}
    if any(os.environ.get(v, "").upper() in truthy for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")):
        return True
    try:
        import datasets.config

        return bool(datasets.config.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover
        return False


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


# --------------------------------------------------------------------------- local datasets folders


def _split_of(path: Path, folder: Path) -> str | None:
    """The split a parquet file holds, from its name (``train-00000-of-00001``, ``valid``) or its folder."""
    candidates = [path.stem.split("-")[0].lower(), path.stem.lower()]
    candidates += [part.lower() for part in path.relative_to(folder).parent.parts]
    for split, names in SPLIT_NAMES.items():
        if any(c in names for c in candidates):
            return split
    return None


def _parquet_paths(folder: Path) -> list[Path]:
    """Parquet files in ``folder`` and up to two folders down (``data/``, ``<config>/<split>/``): the
    layouts of hub repositories; no deeper, so that a large parent folder is not walked."""
    return sorted(p for pattern in ("*.parquet", "*/*.parquet", "*/*/*.parquet") for p in folder.glob(pattern)
                  if p.is_file())


def _parquet_files(folder: Path) -> dict[str, list[str]]:
    """Split -> its parquet files under ``folder`` (up to two folders down), or {} when it holds none."""
    files = _parquet_paths(folder)
    if not files:
        return {}
    splits: dict[str, list[str]] = {}
    for path in files:
        split = _split_of(path, folder)
        if split is not None:
            splits.setdefault(split, []).append(str(path))
    if not splits:
        names = ", ".join(p.name for p in files[:5])
        raise DataFormatError(f"{folder}: parquet files whose names name no split ({names}"
                              f"); name them by split, as the hub does: train-*.parquet, validation-*.parquet, "
                              "test-*.parquet")
    # One configuration's files share a folder (data/train-*.parquet) or the folder above their
    # split folders (<config>/train/0000.parquet); more than one such root is several configurations.
    by_split_folder = all(Path(f).parent.name.lower() in SPLIT_NAMES[s] for s, fs in splits.items() for f in fs)
    roots = {Path(f).parent.parent if by_split_folder else Path(f).parent for fs in splits.values() for f in fs}
    if len(roots) > 1:
        raise DataFormatError(f"{folder}: parquet files in several folders ({', '.join(sorted(map(str, roots)))}), "
                              "e.g. several configurations of a repository; pass the folder of one as --data-dir")
    return splits


def local_dataset_kind(folder: Path) -> str | None:
    """``"arrow"`` (a save_to_disk folder), ``"parquet"`` or None (no Hugging Face dataset here)."""
    if not folder.is_dir():
        return None
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        return "arrow"
    if _parquet_paths(folder):
        return "parquet"
    return None


def local_dataset_files(folder: Path, kind: str) -> list[Path]:
    """The files whose size and time key the memo of a local dataset."""
    if kind == "parquet":
        return _parquet_paths(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file())


def load_local_dataset(folder: Path, kind: str):
    """``(DatasetDict with train/validation/test as far as present, source)`` of a local folder."""
    import datasets

    if kind == "arrow":
        try:
            raw = datasets.load_from_disk(str(folder))
        except Exception as error:
            raise DataFormatError(f"{folder}: not a readable save_to_disk folder ({type(error).__name__}: "
                                  f"{str(error).splitlines()[0][:200]})") from None
        if isinstance(raw, datasets.Dataset):
            raise DataFormatError(f"{folder}: one Dataset saved with save_to_disk, without splits; save a "
                                  "DatasetDict with the splits train, validation, test (MNIST: train, test)")
        source = f"{folder} (save_to_disk)"
    else:
        raw = datasets.load_dataset("parquet", data_files=_parquet_files(folder))
        source = f"{folder} (parquet)"
    return datasets.DatasetDict({_canonical(split): ds for split, ds in raw.items()}), source


def _canonical(split: str) -> str:
    for name, names in SPLIT_NAMES.items():
        if split.lower() in names:
            return name
    return split


def need_splits(raw, splits: tuple[str, ...], source: str) -> None:
    missing = [s for s in splits if s not in raw]
    if missing:
        raise DataFormatError(f"{source}: no split {', '.join(map(repr, missing))} (splits: {', '.join(raw)}); "
                              f"name the splits {', '.join(splits)}")


# --------------------------------------------------------------------------- conversion


def _text_column(ds, source: str) -> str:
    for column in ("sentence", "text"):
        if column in ds.column_names:
            return column
    raise DataFormatError(f"{source}: no text column (columns: {', '.join(ds.column_names)}); the text must be "
                          "in a column named 'sentence' (one sentence a row) or 'text'")


def text_from_dataset_dict(name: str, raw, source: str) -> TextCorpus:
    """A DatasetDict (splits train/validation/test; one text column) -> TextCorpus.

    PTB repositories hold one sentence a row (column "sentence" or "text", words separated by
    single spaces, no line ends): word_ptb adds "<eos>" per row, char_ptb derives the
    char-PTB stream exactly as the standard ptb.char files were derived. text8
    repositories hold the text in rows (column "text"), concatenated in order.
    """
    need_splits(raw, ("train", "validation", "test"), source)
    splits = [raw["train"], raw["validation"], raw["test"]]
    column = _text_column(splits[0], source)
    h = hashlib.sha256()
    for split, ds in zip(("train", "validation", "test"), splits):
        h.update(f"{split}\n".encode())
        for row in ds.with_format("arrow")[:].column(_text_column(ds, source)).to_pylist():
            h.update(row.encode("utf-8") + b"\n")
    checksum = h.hexdigest()
    if name == "word_ptb":
        return word_corpus(name, splits, column, source, checksum)
    if name == "char_ptb":
        symbols = [map_batched(ds, sentences_to_symbols, {"column": column}, desc="char_ptb: symbols")
                   for ds in splits]
    else:
        symbols = [map_batched(ds, rows_to_symbols, {"column": column}, desc=f"{name}: symbols") for ds in splits]
    return char_corpus(name, symbols, source, checksum)
