"""The one exception type for user errors.

A :class:`DiscVBRError` carries a message meant for the person who made the
mistake: it names the file, the field or the subject at fault. The CLI prints it
as one line and exits with status 2; the Slicer modules show it in a message box.
Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["DiscVBRError", "EXIT_OK", "EXIT_USER_ERROR", "EXIT_INCOMPLETE", "EXIT_INTERRUPTED"]

# Exit statuses of every ``discvbr`` command (their meaning: :mod:`discvbr.cli`). Here rather
# than in the CLI so that the Slicer modules read them without importing the CLI's packages.
EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_INCOMPLETE = 3
EXIT_INTERRUPTED = 130


class DiscVBRError(ValueError):
    """Bad input from the user (file, field, subject, parameter).

    Subclasses :class:`ValueError` so that array-level functions that raise it
    for invalid arguments behave as numpy/scipy users expect.
    """
