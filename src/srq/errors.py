"""User-facing errors: one clear line that names the problem and the fix."""

from __future__ import annotations

import sys
from typing import Callable

__all__ = ["SrqError", "ConfigError", "Interrupted", "exit_on_user_error"]


class SrqError(Exception):
    """An error caused by user input (a file, a name, an option).

    The CLI prints ``str(err)`` on one line and exits with code 2, without a traceback.
    The message should say what is wrong and what to do about it.
    """


class ConfigError(SrqError, ValueError):
    """An invalid setting of a recipe or config, raised at construction: a user error and a ``ValueError``."""


class Interrupted(Exception):
    """The user stopped a run (Ctrl-C); the message says what was kept. The CLI prints it and exits with 130."""


def exit_on_user_error(main: Callable[[], None]) -> None:
    """Run a script's ``main`` (the benchmarks'): an :class:`SrqError` prints as one line and exits with code 2."""
    try:
        main()
    except SrqError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
