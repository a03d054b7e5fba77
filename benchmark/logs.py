"""How the ``regbench`` command shows the library's messages.

The library only logs, through module loggers (``logging.getLogger(__name__)``) under ``benchmark``
and ``regularizers``; it never configures logging when imported or called. The command (and each
worker process it spawns) calls :func:`configure` once: progress and information become plain lines
on stdout, warnings and errors plain lines on stderr. The loggers still propagate, so a host
application's handlers and pytest's ``caplog`` see the same records.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["configure"]

_MARK = "_regbench_handler"
_LOGGERS = ("benchmark", "regularizers")


class _Below(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


class _Stream(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` / ``sys.stderr`` is when a message comes (a redirect,
    pytest's capture), not to the stream of the moment it was made."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name_of_stream = name

    @property
    def stream(self):
        return getattr(sys, self.name_of_stream)

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it
        pass


def configure(level: int = logging.INFO) -> None:
    """Show the library's messages at ``level`` and above (idempotent: handlers are added once)."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if any(getattr(handler, _MARK, False) for handler in logger.handlers):
            continue
        out, err = _Stream("stdout"), _Stream("stderr")
        out.addFilter(_Below(logging.WARNING))
        err.setLevel(logging.WARNING)
        for handler in (out, err):
            handler.setFormatter(logging.Formatter("%(message)s"))
            setattr(handler, _MARK, True)
            logger.addHandler(handler)
