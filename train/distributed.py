"""torch.distributed for training: set-up from torchrun's environment (NCCL on GPUs, gloo on CPU) and helpers."""
from __future__ import annotations

import dataclasses
import datetime
import os
from typing import List, Sequence

import torch
import torch.distributed as dist

from ccdm_core.errors import CCDMError


@dataclasses.dataclass(frozen=True)
class DistEnv:
    """This process's place in the run; a single process is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _device(choice: str, local_rank: int) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise CCDMError("--device cuda asked for but CUDA is not available; accepted here: auto, cpu")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def setup(device_choice: str = "auto", timeout_minutes: int = 60) -> DistEnv:
    """Join the process group that torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(device_choice, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    if device.type == "cpu" and world > 1:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))  # no oversubscription
    return DistEnv(rank, world, local_rank, device)


def teardown(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def mean_across(env: DistEnv, values: Sequence[float]) -> List[float]:
    """Each value averaged over all ranks (float64 on the CPU for gloo, on the GPU for NCCL)."""
    if not env.distributed:
        return list(values)
    device = env.device if env.device.type == "cuda" else torch.device("cpu")
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return (tensor / env.world_size).tolist()


def gather(env: DistEnv, obj) -> list:
    """Every rank's `obj` (picklable), in rank order."""
    if not env.distributed:
        return [obj]
    out = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(env: DistEnv, obj):
    """Rank 0's `obj` on every rank."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(module: torch.nn.Module, env: DistEnv, find_unused: bool) -> torch.nn.Module:
    """DistributedDataParallel over the trainable module (its initial weights are broadcast from rank 0)."""
    if not env.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [env.device.index] if env.device.type == "cuda" else None
    # broadcast_buffers off: the only buffers are the constant sinusoidal position tables.
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused,
                                   broadcast_buffers=False)
