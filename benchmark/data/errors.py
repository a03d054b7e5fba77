"""The errors of the data loaders: data not found, a file that cannot be read, a source asked for wrongly."""

from __future__ import annotations

__all__ = ["DataNotFoundError", "DataFormatError", "DataSourceError", "format_error"]


class DataNotFoundError(RuntimeError):
    """The data set was found neither in a local folder nor on the hub."""


class DataFormatError(ValueError):
    """A data file is there but cannot be read as what it should hold; the message names the file."""


class DataSourceError(ValueError):
    """The data source is asked for in a form that cannot be used (a ``--hub`` without a revision, ...)."""


def format_error(where, error: BaseException) -> DataFormatError:
    """``error`` as a one-line DataFormatError that starts with ``where`` (a file or a split)."""
    text = " ".join(str(error).split()) or type(error).__name__
    where = str(where)
    return DataFormatError(text[:300] if text.startswith(where) else f"{where}: {text[:300]}")
