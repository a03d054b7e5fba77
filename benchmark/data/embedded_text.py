"""``embedded_text``: the Python documentation topics shipped with every Python (``pydoc_data``),
character level, split 90 / 5 / 5 % in order; needs no files."""

from __future__ import annotations

import hashlib

from .corpora import TextCorpus, char_corpus

__all__ = ["EMBEDDED_MIN_COUNT", "embedded_text", "load_embedded_text"]

EMBEDDED_MIN_COUNT = 20  # characters seen fewer times in the train split become UNK_CHAR


def embedded_text() -> str:
    """The whole text: every topic, in sorted order, separated by a blank line."""
    from pydoc_data.topics import topics

    return "".join(topics[k].strip("\n") + "\n\n" for k in sorted(topics))


def load_embedded_text() -> TextCorpus:
    import datasets

    text = embedded_text()
    checksum = hashlib.sha256(text.encode("utf-8")).hexdigest()
    n = len(text)
    a, b = int(n * 0.90), int(n * 0.95)
    step = 100_000
    splits = []
    for part in (text[:a], text[a:b], text[b:]):
        rows = [part[i : i + step] for i in range(0, len(part), step)] or [""]
        splits.append(datasets.Dataset.from_dict({"symbols": rows}))
    return char_corpus(
        "embedded_text", splits, "pydoc_data.topics.topics (Python documentation topics)", checksum,
        min_count=EMBEDDED_MIN_COUNT,
    )
