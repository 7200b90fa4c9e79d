"""torchrun, the field's engine past one process: which shard this process is, and its process group.

Under `torchrun --nproc-per-node N [--nnodes M ...]` every process has RANK, WORLD_SIZE and
LOCAL_RANK in its environment. ppvi's data-parallel commands (anonymize, features) take shard RANK of
WORLD_SIZE on the device LOCAL_RANK names (`device.rank_device`), and a gloo process group (it runs on any machine and
carries only barriers and small objects here) orders the final merge on rank 0. No coordinator of
ppvi's own: torchrun starts, rendezvous and restarts the processes.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

from ppvi_cli.errors import PPVIError


@dataclass(frozen=True)
class World:
    """This process's place in a torchrun job."""

    rank: int
    size: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def torchrun_world() -> World | None:
    """The torchrun job this process belongs to, or None when it runs alone (WORLD_SIZE unset or 1)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return None
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise PPVIError("WORLD_SIZE > 1 but RANK / LOCAL_RANK are missing or not integers: start ppvi with "
                        "torchrun (it sets them), or unset WORLD_SIZE") from None
    if not 0 <= rank < size or local < 0:
        raise PPVIError(f"torchrun environment is inconsistent: RANK {rank}, WORLD_SIZE {size}, LOCAL_RANK {local}")
    return World(rank, size, local)


def process_device(spec: str, world: World | None) -> str:
    """The `--device` this process uses: under torchrun its local rank's GPU (`device.rank_device`),
    alone the value as given."""
    if world is None:
        return spec
    from ppvi_cli.device import rank_device

    return str(rank_device(spec, str(world.local_rank)))


@contextlib.contextmanager
def process_group(world: World | None) -> Iterator[None]:
    """A gloo process group for the job's lifetime (joined, not created, when one exists already)."""
    if world is None:
        yield
        return
    import torch.distributed as dist

    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("gloo")
    try:
        yield
        if owns:  # no rank tears the group down while another still sends (gloo aborts the process then)
            dist.barrier()
    finally:
        if owns:
            dist.destroy_process_group()


def all_gather(obj, world: World | None) -> list:
    """Every rank's `obj`, in rank order (a barrier too); `[obj]` when alone."""
    if world is None:
        return [obj]
    import torch.distributed as dist

    gathered: list = [None] * world.size
    dist.all_gather_object(gathered, obj)
    return gathered
