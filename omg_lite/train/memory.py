"""Will a training run fit in its device's memory? An estimate, checked before the first step.

The peak memory of a training step grows linearly with the pairs B each process holds, and its
per-pair part with the pixels (the splatted feature image, the refiner and the LPIPS trunk at
S x S dominate it):

    peak(B, S) ~= fixed + B * per_pair * (S / S_0)^2

``fixed`` (weights, Adam's state, the frozen backbone and LPIPS trunk, the runtime) and
``per_pair`` come from ``omg-lite bench train --preset P --lods K --batches 1 2`` at the finest
level K and size S_0 (its "memory model" row), measured as the CPU's peak resident set. A GPU
keeps other books (CUDA's caching allocator, bf16 activations under AMP), so on CUDA this is a
first guess too. :func:`check_memory` refuses a CPU run whose estimate exceeds the RAM, before
any data is rendered or any step runs, and names settings that would fit; on CUDA it only warns
(the estimate is the CPU's), and a step that runs out of GPU memory stops the run with one
error naming smaller settings (:func:`oom_advice`) instead of a traceback. Presets without a measured footprint are not
checked.
"""

from __future__ import annotations

import math
import os
import warnings
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


# omg-lite bench train --preset paper --lods 2 --batches 1 2 --steps 1 on the 2-core development CPU:
# peak RSS 5,456 MB at batch 1 and 9,041 MB at batch 2
FOOTPRINTS = {
    "paper": Footprint(fixed_mb=1870.0, per_pair_mb=3585.0, size=512, measured="CPU peak RSS at batch 1 and 2, LOD 2, 512x512"),
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


class MemoryEstimateWarning(UserWarning):
    """On CUDA: the CPU-measured estimate says the run may not fit."""


class OutOfMemory(ValueError):
    """A run that does not fit its device: refused before the first step (CPU) or stopped at the step that ran out (CUDA)."""


def _fix(fp: Footprint, S: int, budget: float, world: int) -> str:
    """Settings that fit ``budget`` MB by the footprint: the largest batch at S, else the largest image side at batch 1."""
    per = fp.per_pair_mb * (S / fp.size) ** 2
    fits = math.floor((budget - fp.fixed_mb) / per)
    if fits >= 1:
        return f"train.batch_size={fits * world}" + (f" ({fits} per process)" if world > 1 else "")
    side = math.floor(fp.size * math.sqrt(max(budget - fp.fixed_mb, 0.0) / fp.per_pair_mb) / 32) * 32
    if side >= 64:
        return f"train.batch_size={world} train.image_size={side}"
    return f"a device with more memory (the fixed part alone is about {fp.fixed_mb / 1024:.1f} GB)"


def advice(preset: str, cfg: Config, pairs: int, device: torch.device, world: int = 1) -> str:
    """The estimate for this run against the device, and the settings that would fit (one sentence)."""
    have, S, fp = device_memory_mb(device), cfg.train.image_size, FOOTPRINTS[preset]
    per = fp.per_pair_mb * (S / fp.size) ** 2
    what = "GPU" if device.type == "cuda" else "machine's RAM"
    return (f"preset {preset!r} with {pairs} pair(s) per step at {S}x{S} needs about {estimate_mb(preset, cfg, pairs) / 1024:.1f} GB "
            f"(estimate: {fp.fixed_mb / 1024:.1f} GB + {per / 1024:.2f} GB per pair, from {fp.measured}; see omg_lite.train.memory) "
            f"but this {what} has {have / 1024:.1f} GB: settings that would fit: {_fix(fp, S, HEADROOM * have, world)}")


def oom_advice(preset: str, cfg: Config, pairs: int, world: int, step: int) -> str:
    """What to do after a step ran out of GPU memory: half the batch, or a smaller image at batch 1."""
    S = cfg.train.image_size
    fix = f"train.batch_size={max(1, pairs // 2) * world}" if pairs > 1 else f"train.image_size={max(64, S // 2 // 32 * 32)}"
    return (f"out of GPU memory at step {step} with {pairs} pair(s) per process at {S}x{S}: lower the settings, e.g. {fix}; "
            f"`omg-lite bench train --preset {preset or 'NAME'} --batches 1 2` on this GPU measures the memory per pair")


def check_memory(preset: str, cfg: Config, pairs: int, device: torch.device, world: int = 1) -> None:
    """Before the first step: refuse (OutOfMemory) a CPU run whose estimated peak does not fit the RAM; on CUDA,
    where the CPU-measured estimate is only a first guess, say it once (a warning) and let the run try."""
    need = estimate_mb(preset, cfg, pairs)
    if need is None or need <= HEADROOM * device_memory_mb(device):
        return
    if device.type == "cuda":
        warnings.warn(advice(preset, cfg, pairs, device, world) + " (the estimate is measured on a CPU; trying anyway)", MemoryEstimateWarning, stacklevel=3)
        return
    raise OutOfMemory(advice(preset, cfg, pairs, device, world))
