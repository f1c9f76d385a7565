"""torch.distributed as srq uses it: a process group from ``torchrun``'s environment, rank and world size."""

from __future__ import annotations

import os

import torch

__all__ = ["init_from_env", "rank_world", "barrier"]


def init_from_env(device: torch.device | str = "cpu") -> tuple[int, int]:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1 in the environment) if not joined yet:
    gloo on the CPU, nccl on CUDA (each rank on GPU ``LOCAL_RANK``). Returns (rank, world size); (0, 1) alone."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return rank_world()


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the current process group, (0, 1) outside one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every rank (nothing to wait for outside a process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
