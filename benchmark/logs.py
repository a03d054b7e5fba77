"""Messages of the library go through module loggers (``logging.getLogger(__name__)``); the
``regbench`` command (and each worker process of a suite) shows them with one handler on stderr
that prints the plain message. Results (progress lines, summaries, tables) stay on stdout."""

from __future__ import annotations

import logging
import sys

__all__ = ["configure"]

_MARK = "_regbench_handler"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a message comes (pytest's capture, a redirect)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure(level: int = logging.INFO) -> None:
    """One stderr handler, plain messages, on the ``benchmark`` and ``regularizers`` loggers (idempotent)."""
    for name in ("benchmark", "regularizers"):
        logger = logging.getLogger(name)
        if not any(getattr(handler, _MARK, False) for handler in logger.handlers):
            handler = _StderrHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            setattr(handler, _MARK, True)
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
