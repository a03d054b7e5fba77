"""The plain-text files: character- and word-level Penn Treebank, and text8.

Read with ``datasets.load_dataset("text", ...)`` (text8 with ``Dataset.from_generator`` in
1M-character chunks) and tokenized with ``.map``, so the processed Arrow data is cached by
``datasets`` (``$HF_DATASETS_CACHE``).
"""

from __future__ import annotations

from pathlib import Path

from .corpora import TextCorpus, char_corpus, char_ptb_lines_to_symbols, map_batched, per_split, rows_to_symbols, \
    word_corpus
from .sources import FILES, check_utf8, combined_checksum

__all__ = ["TEXT8_CHUNK", "load_text_files"]

TEXT8_CHUNK = 1_000_000


def load_text_files(name: str, folder: Path) -> TextCorpus:
    """``name``'s standard files in ``folder`` as a corpus; the checksum is over the raw files."""
    import datasets

    paths = [folder / f for f in FILES[name]]
    for p in paths:
        if p.stat().st_size == 0:
            raise ValueError(f"{p} is empty")
    checksum, _ = combined_checksum(paths)
    source = ", ".join(str(p) for p in paths)
    if name == "text8":
        return _load_text8(paths[0], source, checksum)
    for path in paths:
        check_utf8(path)
    keys = ("train", "validation", "test")
    raw = datasets.load_dataset(
        "text",
        data_files={k: str(p) for k, p in zip(keys, paths)},
        keep_linebreaks=(name == "char_ptb"),
    )
    splits = [raw[k] for k in keys]
    if name == "char_ptb":
        symbols = per_split(paths, splits,
                            lambda ds: map_batched(ds, char_ptb_lines_to_symbols, desc="char_ptb: symbols"))
        return char_corpus(name, symbols, source, checksum, labels=paths)
    return word_corpus(name, splits, "text", source, checksum, labels=paths)


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
    """The first 90 % / next 5 % / last 5 % of the characters, in file order."""
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
        splits.append(map_batched(ds, rows_to_symbols, {"column": "text"}, desc="text8: symbols"))
    return char_corpus("text8", splits, source, checksum)
