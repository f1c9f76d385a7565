"""User-facing errors: one clear line that names the problem and the fix."""

from __future__ import annotations

__all__ = ["SrqError"]


class SrqError(Exception):
    """An error caused by user input (a file, a name, an option).

    The CLI prints ``str(err)`` on one line and exits with code 2, without a traceback.
    The message should say what is wrong and what to do about it.
    """
