""":func:`load_text`: a text corpus as id streams, from whichever source has it."""

from __future__ import annotations

import os
from dataclasses import replace

from .corpora import TextCorpus
from .embedded_text import load_embedded_text
from .errors import DataSourceError
from .hf import text_from_dataset_dict
from .loading import load_from_sources
from .memo import memoized
from .sources import TEXT_DATASETS, check_name
from .text_files import load_text_files

__all__ = ["load_text"]


def load_text(name: str, data_dir: str | os.PathLike | None = None, hub: str | None = None) -> TextCorpus:
    """Load a text corpus as id streams; see :mod:`benchmark.data` for the data sets and sources.

    The vocabulary is built from the training split and sorted; a valid/test symbol
    outside it is an error, except for word-level data with ``<unk>`` in the
    vocabulary (mapped to ``<unk>``) and ``embedded_text`` (mapped to ``UNK_CHAR``).
    ``hub`` is a pinned hub repository, ``"REPO@REVISION"``.
    """
    check_name(name, TEXT_DATASETS)
    if name == "embedded_text":
        if hub is not None:
            raise DataSourceError("embedded_text is embedded data: --hub does not apply to it (leave it out)")
        corpus = memoized((name,), load_embedded_text)
    else:
        corpus = load_from_sources(name, data_dir, hub, lambda folder: load_text_files(name, folder),
                                   lambda raw, source: text_from_dataset_dict(name, raw, source))
    return replace(corpus, vocab=list(corpus.vocab))  # the memo's vocabulary stays as it is
