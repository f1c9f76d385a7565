"""The command line's contract with its user, independent of the commands.

* :func:`run_app` runs the typer app: a user mistake (unknown or missing option, wrong type, bad value, bad
  path: typer's usage errors and :class:`~srq.errors.SrqError`) prints one ``error:`` line (usage errors after
  the usage line) and exits with code 2; Ctrl-C prints one line and exits with 130; anything else is a bug and
  prints one line naming ``--debug``, which shows the traceback, and exits with 1.
* The ``check_*`` functions validate outputs before any work starts, so a long run never ends in a write
  error: a folder that can be written, not an existing file, not an earlier run unless asked.

Typer's exceptions are recognised by class name (``UsageError``, ``Abort``, ...) rather than imported from
click: typer ≥ 0.29 vendors its own copy of click, earlier releases use click itself.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterable, Protocol, TextIO, cast

from .errors import Interrupted, SrqError

__all__ = ["run_app", "check_output_file", "check_output_folder", "check_writable_folder", "check_tile", "WORK_AREA"]

WORK_AREA = ".srq-work"  # hidden folder inside a run folder where an unfinished run keeps its checkpoints


def _class_names(error: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(error).__mro__}


class _ClickError(Protocol):
    """What srq uses of click's exceptions (``ClickException``, ``UsageError``, ...), recognised by class name."""

    def format_message(self) -> str: ...


def _message(error: BaseException) -> str:
    """``format_message()`` of an exception recognised as one of click's by its class name."""
    return cast(_ClickError, error).format_message()


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: TextIO | None = None, line: str | None = None) -> None:
    _stderr(f"warning: {message}")


def run_app(app: Callable[..., object], argv: list[str] | None = None) -> int:
    """Run a typer app on ``argv`` (default ``sys.argv[1:]``) and return the process exit code.

    ``--debug`` anywhere in ``argv`` (or ``SRQ_DEBUG=1``) re-raises unexpected errors with their traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("SRQ_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    if not debug:  # a library warning is one line for the user, not a file:line and a source line
        warnings.showwarning = _one_line_warning
    try:
        code = app(args=args, prog_name="srq", standalone_mode=False)
    except SrqError as e:
        _stderr(f"error: {e}")
        return 2
    except Interrupted as e:
        _stderr(str(e))
        return 130
    except KeyboardInterrupt:
        _stderr("interrupted")
        return 130
    except BrokenPipeError:  # `srq models | head`
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - keep interpreter shutdown quiet
        return 1
    except Exception as e:  # typer's own exceptions first, then bugs
        names = _class_names(e)
        if "Abort" in names:
            _stderr("interrupted")
            return 130
        if "NoArgsIsHelpError" in names:  # bare `srq`: the help, as a usage error
            _stderr(_message(e))
            return 2
        if "UsageError" in names:
            ctx = getattr(e, "ctx", None)
            if ctx is not None:
                _stderr(f"{ctx.get_usage()}\nTry '{ctx.command_path} --help' for help.")
            _stderr(f"error: {_message(e)}")
            return 2
        if "ClickException" in names or "TyperException" in names:
            _stderr(f"error: {_message(e)}")
            return 2
        if debug:
            raise
        _stderr(f"error: srq failed unexpectedly ({type(e).__name__}: {e}); rerun with --debug for the "
                f"traceback and report it")
        return 1
    if code == 130:  # typer ≥ 0.29 turns Ctrl-C into Exit(130), returned in non-standalone mode
        _stderr("interrupted")
    return code if isinstance(code, int) else 0


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable_location(path: Path, option: str, folder: bool = False) -> None:
    """``path``'s folder (``path`` itself if ``folder``) exists or can be made, and a file can be created in its
    nearest existing ancestor (probed, then removed)."""
    anchor = _nearest_existing(path if folder else path.parent)
    if not anchor.is_dir():
        raise SrqError(f"{option} {path}: {anchor} is a file, not a folder; choose another path")
    try:
        probe = tempfile.mkdtemp(prefix=".srq-probe-", dir=anchor)
        os.rmdir(probe)
    except OSError as e:
        raise SrqError(f"{option} {path}: cannot write in {anchor} ({e.strerror or e}); choose a writable folder")


def check_output_file(path: Path | None, suffixes: Iterable[str], option: str = "--output") -> None:
    """A file ``path`` (if given) can be written: a known extension, not a folder, its folder writable."""
    if path is None:
        return
    suffixes = tuple(suffixes)
    allowed = " or ".join(filter(None, [", ".join(suffixes[:-1]), suffixes[-1]]))
    if path.suffix.lower() not in suffixes:
        raise SrqError(f"{option} must end in {allowed}, not {path.name!r}")
    if path.is_dir():
        raise SrqError(f"{option} {path} is a folder; give a file name ending in {allowed}")
    _check_writable_location(path, option)


def check_writable_folder(path: Path, option: str) -> None:
    """``path`` is a folder, or can be made one, where files can be written."""
    if path.exists() and not path.is_dir():
        raise SrqError(f"{option} {path} is an existing file; give a folder path")
    _check_writable_location(path, option, folder=True)


def check_output_folder(path: Path, overwrite: bool = False, resume: bool = False, option: str = "--output") -> None:
    """A run folder ``path`` can be written: not a file; an existing non-empty folder only with ``overwrite``
    (which later replaces it whole) or ``resume`` (when it holds an unfinished run)."""
    if path.exists() and not path.is_dir():
        raise SrqError(f"{option} {path} is an existing file; give a folder path for the run")
    unfinished = (path / WORK_AREA).is_dir()
    if resume and overwrite:
        raise SrqError("use either --resume or --overwrite, not both")
    if resume and not unfinished:
        raise SrqError(f"nothing to resume in {path}: it holds no unfinished run; drop --resume")
    if path.is_dir() and any(path.iterdir()) and not (overwrite or resume):
        if unfinished:
            raise SrqError(f"{path} holds an unfinished run; add --resume to continue it or --overwrite to start again")
        raise SrqError(f"{path} already exists; add --overwrite to replace it or choose another folder")
    check_writable_folder(path, option)


def check_tile(tile: int, overlap: int) -> None:
    """Tile settings: ``tile`` 0 (whole images) or ≥ 8 LR pixels; ``overlap`` ≥ 0."""
    if tile != 0 and tile < 8:
        raise SrqError(f"--tile must be 0 (whole images) or at least 8 LR pixels, not {tile}")
    if overlap < 0:
        raise SrqError(f"--tile-overlap must be 0 or more LR pixels, not {overlap}")
