"""Multi-process data-parallel training with torch DDP, launched by ``torchrun``.

``torchrun --nproc_per_node N -m omg_lite.cli train ...`` starts N processes and sets RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; :func:`setup` joins them with the env://
method (NCCL on CUDA, gloo on CPU). Each rank reads its own shard of the pairs (a
``DistributedSampler``), runs forward/backward on batch B / N, and DDP averages the gradients:
grad = (1/N) sum_r grad L_r, which equals the gradient of the global-batch loss because every loss
term is a mean over equal shards. Without those variables everything runs in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> this rank's CUDA device when there is one, else the CPU; otherwise ``name``."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but this machine has no CUDA device; use train.device=auto or cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    if device.type == "cuda" and device.index >= torch.cuda.device_count():
        raise ValueError(f"train.device={name!r} but this machine has {torch.cuda.device_count()} CUDA device(s), cuda:0.."
                         f"cuda:{torch.cuda.device_count() - 1}; choose one of them or train.device=auto")
    return device


def setup(device: str = "auto") -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1; return this process's rank and device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", init_method="env://", rank=rank, world_size=world)
    return Dist(rank, world, local, dev)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: nn.Module, d: Dist) -> nn.Module:
    """DDP around ``module`` when there are several processes (unused parameters allowed: the
    heads of the levels above the current level of detail get no gradient)."""
    if d.world == 1:
        return module
    ids = [d.device.index] if d.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)


def sampler(dataset: Dataset, d: Dist, seed: int) -> DistributedSampler:
    """This rank's shuffled shard of ``dataset`` (the same permutation on every rank for a seed and epoch)."""
    return DistributedSampler(dataset, num_replicas=d.world, rank=d.rank, shuffle=True, seed=seed, drop_last=True)


def all_true(flag: bool, d: Dist) -> bool:
    """True only when ``flag`` holds on every rank (so all ranks stop together)."""
    if d.world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0)


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()
