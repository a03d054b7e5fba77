"""The errors that mean bad input from the user, and their one-line form.

Library code raises these (or ``ValueError`` and the data errors, which the command line treats
the same way); only the command line's top-level handler (``benchmark.cli.main``) formats them,
as one line ``regbench <cmd>: error: <message>`` with exit status 2.
"""

from __future__ import annotations

__all__ = ["UsageError", "error_line", "one_line"]


class UsageError(Exception):
    """Bad input from the user; its message is shown as one line and the command exits with 2."""


def one_line(error: BaseException) -> str:
    """An exception's message on one line (some, like DataNotFoundError, span several)."""
    return " ".join(part.strip() for part in str(error).splitlines() if part.strip()) or type(error).__name__


def error_line(command: str, error: BaseException | str) -> str:
    """The one form of a user error: ``regbench <command>: error: <message>`` on one line."""
    message = error if isinstance(error, str) else one_line(error)
    return f"regbench {command}: error: {message}"
