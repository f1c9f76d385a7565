"""Files that appear whole and that other users can read.

``tempfile.mkstemp``/``mkdtemp`` create owner-only entries (0600 / 0700) whatever the umask; srq writes through
them for atomicity, so :func:`follow_umask` gives them the permissions a plain ``open``/``mkdir`` would have
(0644 / 0755 under umask 022) before they are renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path

__all__ = ["current_umask", "file_sha256", "follow_umask", "replace_folder", "temp_beside", "write_safetensors"]

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def follow_umask(path: str | os.PathLike) -> None:
    """Give ``path`` the permissions the umask grants a new file (0666 & ~umask) or folder (0777 & ~umask)."""
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~current_umask())


def temp_beside(path: str | os.PathLike, kind: str = "tmp") -> Path:
    """A hidden name in ``path``'s folder for writing it atomically (write there, then ``os.replace``): the
    name's hash and the process id, so it stays short whatever the length of ``path``'s name (which may be up to
    the file system's limit, 255 bytes)."""
    path = Path(path)
    digest = hashlib.sha1(path.name.encode()).hexdigest()[:12]
    return path.with_name(f".{digest}.{os.getpid()}.{kind}")


def replace_folder(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put folder ``source`` at ``target`` (same file system), replacing what ``target`` held.

    The old folder is first renamed aside, so ``target`` is at every moment either the old or the new one's
    name (or briefly absent), never a mix of both.
    """
    source, target = Path(source), Path(target)
    if not target.exists():
        os.replace(source, target)
        return
    aside = temp_beside(target, "old")
    os.replace(target, aside)
    os.replace(source, target)
    shutil.rmtree(aside, ignore_errors=True)


def write_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """Save ``tensors`` (name → contiguous CPU tensor) to ``path`` atomically (temp file in the same folder,
    then rename), with the umask's permissions (safetensors itself creates owner-only files)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        follow_umask(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
