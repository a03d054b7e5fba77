"""A small in-process memo of loaded data, so that repeated loads in one process are instant.

Values are shared between callers: the loaders hand out copies of what callers may change (the
vocabulary list) and tensors that must not be modified in place.
"""

from __future__ import annotations

import threading

__all__ = ["memo_get", "memo_put", "memoized"]

_MEMO: dict[tuple, object] = {}
_LOCK = threading.Lock()


def memo_get(key):
    with _LOCK:
        return _MEMO.get(key)


def memo_put(key, value) -> None:
    with _LOCK:
        _MEMO[key] = value


def memoized(key, load):
    """The memo's value for ``key``, loaded with ``load()`` on a miss."""
    hit = memo_get(key)
    if hit is None:
        hit = load()
        memo_put(key, hit)
    return hit
