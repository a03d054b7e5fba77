"""The ``benchmark.study`` logger's handler for the command line: messages printed as lines,
INFO to stdout, warnings and errors to stderr."""

from __future__ import annotations

import logging
import sys

__all__ = ["LOGGER", "configure_logging"]

LOGGER = "benchmark.study"


class _Below(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


class _Stream(logging.StreamHandler):
    """A handler writing to whatever ``sys.stdout`` / ``sys.stderr`` is at the time (tests swap them)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name_of_stream = name

    @property
    def stream(self):
        return getattr(sys, self.name_of_stream)

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it
        pass


def configure_logging(level: int = logging.INFO) -> logging.Logger:
    """Print the logger's messages (once, however often it is called)."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(level)
    if not any(getattr(h, "_regbench", False) for h in logger.handlers):
        out, err = _Stream("stdout"), _Stream("stderr")
        out.addFilter(_Below(logging.WARNING))
        err.setLevel(logging.WARNING)
        for handler in (out, err):
            handler.setFormatter(logging.Formatter("%(message)s"))
            handler._regbench = True
            logger.addHandler(handler)
    return logger
