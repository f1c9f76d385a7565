"""Host memory between and within long stages: give freed memory back to the operating system between stages
(``release_memory``), keep it for reuse within a training loop (``reuse_freed_memory``).

glibc keeps freed heap memory mapped: after a training stage on small patches (thousands of sub-MB
tensors) a process can hold several GB it no longer uses, and the next stage (e.g. evaluating whole
images, whose tensors have other sizes) allocates on top of it. On MambaIRv2-light x4 two RGT steps at
batch 4 left 6.4 GB resident that ``malloc_trim`` brought back to 0.4 GB, and the evaluation that followed
peaked at 2.4 GB instead of 7.1 GB on the two largest Urban100 images.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import lru_cache

__all__ = ["release_memory", "reuse_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
REUSE_BELOW = 1 << 30  # bytes: blocks smaller than this come from (and go back to) the heap


@lru_cache(maxsize=1)
def _libc():
    """The C library when it is glibc (it has ``malloc_trim`` and ``mallopt``), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 - glibc's, absent from other C libraries
        return libc
    except (OSError, AttributeError):
        return None


def reuse_freed_memory() -> bool:
    """Keep freed blocks under :data:`REUSE_BELOW` in the heap for the next allocation instead of unmapping them
    (glibc's ``mallopt``: process-wide, for the rest of the process; a no-op with other C libraries). True if set.

    A training step allocates and frees the same tensors of a few to a few hundred MB every step; with glibc's
    defaults many are fresh ``mmap`` calls whose pages fault in again on first touch. Measured on a QuantSR+ IMDN
    x4 step (batch 8, HR 128, bf16, 1 thread): 25k → 2–3k page faults per step and about 10 % less time. The
    resident size stays near the loop's peak until :func:`release_memory` returns it.
    """
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, REUSE_BELOW)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def release_memory(collect: bool = True) -> bool:
    """Return free heap pages to the OS (after a garbage collection if ``collect``); True if trimmed."""
    if collect:
        gc.collect()
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
