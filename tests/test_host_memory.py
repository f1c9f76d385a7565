"""Host memory helpers: freed blocks are reused within a loop and returned between stages."""

from __future__ import annotations

import platform
import resource

import pytest
import torch

from srq.utils.memory import _libc, release_memory, reuse_freed_memory

glibc = pytest.mark.skipif(platform.system() != "Linux" or _libc() is None, reason="glibc only")


def _faults_of_a_fresh_tensor(mib: int) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(mib << 18)  # float32: mib MiB, written once, freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@glibc
def test_a_freed_block_is_reused_without_faulting_its_pages_in_again():
    pages = (64 << 20) // resource.getpagesize()
    assert reuse_freed_memory()
    for _ in range(2):  # the heap grows to hold it (how often depends on what else the process allocated)
        _faults_of_a_fresh_tensor(64)
    # glibc's default maps every block over 32 MB afresh, so each one faults all its pages in
    assert min(_faults_of_a_fresh_tensor(64) for _ in range(4)) < pages // 10
    assert release_memory(collect=False) in (True, False)  # still trims on request


def test_reuse_is_a_no_op_without_glibc(monkeypatch):
    monkeypatch.setattr("srq.utils.memory._libc", lambda: None)
    assert reuse_freed_memory() is False
    assert release_memory(collect=False) is False
