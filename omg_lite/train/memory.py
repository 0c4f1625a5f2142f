"""Will a training run fit in its device's memory? An estimate, checked before the first step.

The peak memory of a training step grows linearly with the pairs B each process holds, and its
per-pair part with the pixels (the splatted feature image, the refiner and the LPIPS trunk at
S x S dominate it):

    peak(B, S) ~= fixed + B * per_pair * (S / S_0)^2

``fixed`` (weights, Adam's state, the frozen backbone and LPIPS trunk, the runtime) and
``per_pair`` come from ``omg-lite bench train --preset P --lods K --batches 1 2`` at the finest
level K and size S_0 (its "memory model" row), measured as the CPU's peak resident set. A GPU
keeps other books (CUDA's caching allocator, bf16 activations under AMP), so on CUDA this is a
first guess too. :func:`check_memory` refuses a run whose estimate exceeds the device's memory,
before any data is rendered or any step runs, and names settings that would fit; presets
without a measured footprint are not checked.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from omg_lite.config import Config

HEADROOM = 0.9  # the share of the device's memory a run may plan to use


@dataclass(frozen=True)
class Footprint:
    fixed_mb: float
    per_pair_mb: float
    size: int  # S_0, the image side it was measured at
    measured: str  # how and where


# omg-lite bench train --preset paper --lods 2 --batches 1 2 --steps 1 (this 2-core CPU, loaded machine)
FOOTPRINTS = {
    "paper": Footprint(fixed_mb=2600.0, per_pair_mb=3100.0, size=512, measured="CPU peak RSS at batch 1 and 2, LOD 2, 512x512"),
}


def estimate_mb(preset: str, cfg: Config, pairs: int) -> float | None:
    """Estimated peak MB of one process training ``pairs`` pairs per step, or None when unmeasured."""
    fp = FOOTPRINTS.get(preset)
    if fp is None:
        return None
    return fp.fixed_mb + pairs * fp.per_pair_mb * (cfg.train.image_size / fp.size) ** 2


def device_memory_mb(device: torch.device) -> float:
    """The memory a process on ``device`` can have: the GPU's total, or the RAM (under a cgroup limit, if any)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / 2**20
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = Path("/sys/fs/cgroup/memory.max")
    if limit.is_file() and limit.read_text().strip().isdigit():
        total = min(total, int(limit.read_text().strip()))
    return total / 2**20


def check_memory(preset: str, cfg: Config, pairs: int, device: torch.device, world: int = 1) -> None:
    """Refuse (ValueError) a run whose estimated peak does not fit ``device``, naming settings that would."""
    need = estimate_mb(preset, cfg, pairs)
    if need is None:
        return
    have = device_memory_mb(device)
    budget = HEADROOM * have
    if need <= budget:
        return
    fp, S = FOOTPRINTS[preset], cfg.train.image_size
    per = fp.per_pair_mb * (S / fp.size) ** 2
    fits = math.floor((budget - fp.fixed_mb) / per)
    if fits >= 1:
        fix = f"train.batch_size={fits * world}" + (f" ({fits} per process)" if world > 1 else "")
    else:
        side = math.floor(fp.size * math.sqrt(max(budget - fp.fixed_mb, 0.0) / fp.per_pair_mb) / 32) * 32
        fix = f"train.batch_size={world} train.image_size={side}" if side >= 64 else "a device with more memory (the fixed part alone is ~%.1f GB)" % (fp.fixed_mb / 1024)
    what = "GPU" if device.type == "cuda" else "machine's RAM"
    raise ValueError(
        f"preset {preset!r} with {pairs} pair(s) per step at {S}x{S} needs about {need / 1024:.1f} GB (estimate: "
        f"{fp.fixed_mb / 1024:.1f} GB + {per / 1024:.2f} GB per pair, from {fp.measured}; see omg_lite.train.memory) but this "
        f"{what} has {have / 1024:.1f} GB: settings that would fit: {fix}"
    )
