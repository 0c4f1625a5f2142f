"""``omg-lite bench train``: the cost of one training step of a preset, and what it means on a GPU.

Measured, per level of detail k, batch B and AMP setting, each in a fresh Python process
(``python -m omg_lite.bench.train``, so that no configuration's memory hides another's peak):

- ``s_step``: the median wall time of ``--steps`` whole training steps after ``--warmup`` ones
  (``Trainer.train_step`` + ``Trainer.update``: reading the pairs, the frozen backbone, the dense
  head, the OMG model at level k, splatting, the refiner, the loss on I_c and I_r, backward and
  Adam), with a device synchronise before each clock read; ``img_s`` = B / ``s_step``.
- ``peak_mb``: on CPU the process's peak resident set (``ru_maxrss``: weights, Adam's state,
  the backbone, the LPIPS trunk and the step's activations); on CUDA
  ``torch.cuda.max_memory_allocated``.
- ``gflop``: the matrix-multiply, attention and convolution FLOPs of one step
  (``torch.utils.flop_counter`` during the first warm-up step, none without one; sparse
  products counted by their non-zeros; the splatter's numba / CUDA kernels and element-wise work are not counted).
- AMP (bfloat16 autocast) applies on CUDA only: on a CPU only ``amp=off`` is measured.

Estimated from those (rows ``kind=estimate``, each saying how it was made):

- The memory model ``peak(B) = fixed + B x per_pair`` from the peaks at the two smallest batches
  of the finest level measured, and from it the largest batch that fits a 24 GB RTX 4090 and an
  80 GB A100. On a CPU this is RSS, not CUDA's caching allocator (which rounds blocks up and
  keeps a reserve), and AMP's bfloat16 activations are not in it: a first guess, to be checked
  with ``torch.cuda.max_memory_allocated`` on the GPU itself.
- The wall time of the paper's training, 6 epochs of VFHQ's 766,263 frames (one source/driver
  pair per frame and epoch, as ``omg_lite.train.data`` draws them) on one A100, from two stated
  A100 / this-device ratios: the enactment ratio (the paper's A100 FPS at this level over this
  device's FPS of the same preset's untrained model, splatting + refiner at the training size:
  measured on both sides, but inference at batch 1, where a GPU is far from busy, so it
  understates the GPU and the time is an upper bound) and the FLOP ratio (the counted FLOPs at
  an assumed 30 % of the A100's 312 dense bf16 TFLOPS, a lower bound as far as the splatter's
  uncounted work is small).

The frozen backbone runs in every step (``train.feature_cache=off``, the ``paper`` preset's
setting; ``lite`` caches it on disk, which makes its later epochs cheaper than measured here).

Data: ``--data`` (default ``data_samples/synth_256``, frames resized to the preset's image
size; speed does not depend on the pixels' content beyond how many Gaussian-pixel pairs the
splatter blends). The model is untrained (seed 0), the encoder random: the same work per step.
On a shared CPU the figures move with the machine's load (``load_avg``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass

import torch

from omg_lite.bench import Bench, sync
from omg_lite.bench.enact import PAPER_A100_FPS

VFHQ_FRAMES = 766_263  # the paper's training set
PAPER_EPOCHS = 6
GPU_MEMORY_GB = {"RTX 4090": 24, "A100": 80}
A100_BF16_TFLOPS = 312.0  # dense, NVIDIA's data sheet
ASSUMED_UTILISATION = 0.30


def _mm_flops(a, b, *args, out_val=None, **kwargs) -> int:
    """aten.mm FLOPs: 2 m k n when dense, 2 nnz n with a sparse operand (the subdivision's U_k,
    which the counter's shape-only formula would count as a dense [V_{k+1}, V_k] matrix)."""
    for sparse, dense in ((a, b), (b, a)):
        if sparse.layout != torch.strided:
            return 2 * sparse._nnz() * dense.shape[1 if sparse is a else 0]
    return 2 * a.shape[0] * a.shape[1] * b.shape[1]


_mm_flops._get_raw = True  # flop_counter hands the tensors themselves, not their shapes


def _flop_formulas() -> dict:
    """The counter's formulas plus the two it lacks: sparse-aware mm, and the CPU's flash attention."""
    from torch.utils.flop_counter import sdpa_backward_flop, sdpa_flop

    def raw(formula):  # the registered formulas already turn tensors into shapes themselves
        def count(*args, **kwargs) -> int:
            return formula(*args, **kwargs)

        count._get_raw = True
        return count

    aten = torch.ops.aten
    return {aten.mm: _mm_flops, aten._scaled_dot_product_flash_attention_for_cpu: raw(sdpa_flop),
            aten._scaled_dot_product_flash_attention_for_cpu_backward: raw(sdpa_backward_flop)}


def measure(preset: str, overrides: list[str], data: str, lod: int, batch: int, amp: bool, steps: int, warmup: int, device: str, threads: int) -> dict:
    """One configuration in this process -> {'s_step', 'peak_mb', 'gflop', ...}."""
    from torch.utils.flop_counter import FlopCounterMode

    from omg_lite.config import from_preset
    from omg_lite.train import Trainer

    if threads:
        torch.set_num_threads(threads)
    settings = [f"train.data={data}", "train.heldout=0", f"train.batch_size={batch}", f"train.amp={amp}", f"train.device={device}",
                "train.feature_cache=off", "train.num_workers=0", f"train.steps={steps + warmup}", "encoder.weights=random"]
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as run:
        warnings.simplefilter("ignore")  # random trunks offline, the stand-in head: expected here
        trainer = Trainer(from_preset(preset, [*overrides, *settings]), run, preset_name=preset, progress=False)
        dev = trainer.dist.device
        trainer.net.train()
        it, times, flops = trainer.batches(), [], None
        for i in range(warmup + steps):
            counter = FlopCounterMode(display=False, custom_mapping=_flop_formulas()) if i == 0 and warmup else contextlib.nullcontext()
            sync(dev)
            t0 = time.perf_counter()
            with counter:
                trainer.update(trainer.train_step(next(it), lod)[0])
            sync(dev)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
            elif isinstance(counter, FlopCounterMode):
                flops = counter.get_total_flops()
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    times.sort()
    return {"s_step": times[len(times) // 2], "peak_mb": peak, "gflop": None if flops is None else flops / 1e9,
            "device": str(dev), "threads": torch.get_num_threads()}


def enact_fps(preset: str, lod: int, size: int, device: str, frames: int = 5) -> float:
    """Frames per second of position update + splatting + refiner of the preset's untrained model (bench enact's protocol)."""
    from omg_lite.drivers import retarget, synthetic_path
    from omg_lite.network import AvatarModel
    from omg_lite.bench.enact import EnactBench
    from omg_lite.samples import synthetic_avatar

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = AvatarModel.untrained(preset, device)
        avatar = synthetic_avatar(net)
    head = net.head_model
    params = retarget(head, avatar.source.params, synthetic_path(frames + 1, head.n_shape, head.n_expr).to(net.device), "neck")
    fps, _ = EnactBench(frames=frames, warmup=1)._fps(avatar, params, avatar.camera(size), lod)
    return fps


@dataclass
class TrainBench(Bench):
    """Seconds per training step, images per second and peak memory per LOD / batch / AMP; GPU batch and VFHQ time estimates."""

    # Preset to measure: smoke, lite or paper.
    preset: str = "lite"
    # Levels of detail to time.
    lods: tuple[int, ...] = (0, 1, 2)
    # Pairs per step; two or more give the memory model and the GPU batch estimates.
    batches: tuple[int, ...] = (1, 2)
    # AMP settings, off and / or on (bf16 autocast applies on CUDA only; "on" is skipped on a CPU).
    amp: tuple[str, ...] = ("off", "on")
    # Timed steps per configuration (the median is reported), after the warm-up steps.
    steps: int = 2
    warmup: int = 1
    # Clips to read pairs from; default data_samples/synth_256.
    data: str | None = None
    # "auto" (CUDA when present), "cpu" or "cuda".
    device: str = "auto"
    # CPU threads of torch and of numba's pool in each measurement (0: their defaults; numba's is every core).
    threads: int = 0
    # Time enactment too (a few frames) for the A100 / this-device ratio of the VFHQ estimate.
    enact: bool = True
    # section.field=value changes to the preset, e.g. train.image_size=256.
    overrides: tuple[str, ...] = ()

    name = "train"

    def run(self) -> list[dict]:
        from omg_lite.device import pick_device
        from omg_lite.network import DATA_SAMPLES
        from omg_lite.config import PRESETS

        if self.preset not in PRESETS:
            raise ValueError(f"bench train: unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        lods, batches, amps = sorted(set(self.lods)), sorted(set(self.batches)), [a for a in ("off", "on") if a in self.amp]
        if not lods or lods[0] < 0 or not batches or batches[0] < 1:
            raise ValueError(f"bench train: --lods takes levels >= 0 and --batches sizes >= 1, got {self.lods} and {self.batches}")
        if not amps or set(self.amp) - {"off", "on"}:
            raise ValueError(f"bench train: --amp takes off and / or on, got {self.amp}")
        if self.steps < 1 or self.warmup < 0 or self.threads < 0:
            raise ValueError("bench train: --steps must be at least 1, --warmup and --threads at least 0")
        levels = PRESETS[self.preset].model.levels
        if lods[-1] > levels:
            raise ValueError(f"bench train: --lods goes up to {lods[-1]} but preset {self.preset!r} has levels 0..{levels}")
        device = pick_device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"bench train: --device {self.device} but this machine has no CUDA device; use --device auto or cpu")
        data = self.data or str(DATA_SAMPLES / "synth_256")
        overrides = list(self.overrides)
        amps = amps if device.type == "cuda" else ["off"]
        rows = []
        for amp in amps:
            for lod in lods:
                for b in batches:
                    args = dict(preset=self.preset, overrides=overrides, data=data, lod=lod, batch=b, amp=amp == "on", steps=self.steps,
                                warmup=self.warmup, device=str(device), threads=self.threads)
                    r = self._child("measure", args)
                    rows.append({"kind": "step", "preset": self.preset, "lod": lod, "batch": b, "amp": amp, "s_step": r["s_step"],
                                 "img_s": b / r["s_step"], "steps_s": 1 / r["s_step"], "peak_mb": r["peak_mb"], "gflop": r["gflop"],
                                 "device": r["device"], "threads": r["threads"], "load_avg": round(os.getloadavg()[0], 1)})
        if device.type != "cuda":
            rows.append({"kind": "note", "amp": "on", "how": "bf16 autocast applies on CUDA only (train.amp is ignored on a CPU): not measured here"})
        rows += self._estimates(rows, lods[-1], device)
        return rows

    def _estimates(self, rows: list[dict], lod: int, device: torch.device) -> list[dict]:
        out = []
        where = "CPU RSS" if device.type == "cpu" else "torch.cuda.max_memory_allocated"
        for amp in sorted({r["amp"] for r in rows if r["kind"] == "step"}):
            steps = sorted((r for r in rows if r["kind"] == "step" and r["lod"] == lod and r["amp"] == amp), key=lambda r: r["batch"])
            if len(steps) >= 2:
                a, b = steps[0], steps[1]
                per = (b["peak_mb"] - a["peak_mb"]) / (b["batch"] - a["batch"])
                fixed = a["peak_mb"] - per * a["batch"]
                how = f"{where} at batch {a['batch']} and {b['batch']}, LOD {lod}, amp {amp}: fixed {fixed:,.0f} MB + {per:,.0f} MB per pair"
                out.append({"kind": "estimate", "lod": lod, "amp": amp, "what": "memory model", "value": f"{fixed:,.0f} + {per:,.0f} MB x B", "how": how})
                for gpu, gb in GPU_MEMORY_GB.items():
                    fit = math.floor((gb * 1024 - fixed) / per) if per > 0 else None
                    out.append({"kind": "estimate", "lod": lod, "amp": amp, "what": f"batch that fits a {gb} GB {gpu}", "value": fit,
                                "how": how + ("; CUDA's allocator and bf16 activations differ: check on the GPU" if device.type == "cpu" else "")})
            if not steps:
                continue
            best = max(steps, key=lambda r: r["img_s"])
            images = PAPER_EPOCHS * VFHQ_FRAMES
            if best["gflop"]:
                flop_s = images / best["batch"] * best["gflop"] * 1e9 / (ASSUMED_UTILISATION * A100_BF16_TFLOPS * 1e12)
                out.append({"kind": "estimate", "lod": lod, "amp": amp, "what": "VFHQ 6 epochs on one A100 (FLOP ratio)", "value": f"{flop_s / 3600:,.1f} h",
                            "how": f"{images:,} pairs x {best['gflop'] / best['batch']:,.0f} GFLOP per pair (counted) at {ASSUMED_UTILISATION:.0%} of "
                                   f"{A100_BF16_TFLOPS:g} TFLOPS; this device did {best['gflop'] / best['s_step']:,.1f} GFLOP/s"})
            if self.enact and lod in PAPER_A100_FPS and device.type == "cpu":
                size = self._size()
                fps = self._child("enact", dict(preset=self.preset, lod=lod, size=size, device=str(device)))
                ratio = PAPER_A100_FPS[lod] / fps
                hours = images / (best["img_s"] * ratio) / 3600
                out.append({"kind": "estimate", "lod": lod, "amp": amp, "what": "VFHQ 6 epochs on one A100 (enactment ratio)", "value": f"{hours:,.0f} h",
                            "how": f"{images:,} pairs at {best['img_s']:.3g} img/s here x {ratio:,.0f} (paper A100 {PAPER_A100_FPS[lod]} FPS / "
                                   f"{fps:.3g} FPS here, LOD {lod}, {size}x{size}); an upper bound: inference at batch 1 keeps a GPU far from busy"})
        return out

    def _size(self) -> int:
        from omg_lite.config import from_preset

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return from_preset(self.preset, list(self.overrides)).train.image_size

    def _child(self, what: str, args: dict):
        """``measure`` or ``enact_fps`` in a fresh interpreter; returns its result."""
        env = dict(os.environ)
        if self.threads:  # numba's pool (the splatter) resets OpenMP's thread count to its own on first use: set both
            env.update(OMP_NUM_THREADS=str(self.threads), NUMBA_NUM_THREADS=str(self.threads))
        proc = subprocess.run([sys.executable, "-m", "omg_lite.bench.train", what, json.dumps(args)], capture_output=True, text=True, env=env)
        if proc.returncode == 2:  # bad input, refused by the run itself (e.g. the memory check): its message
            raise ValueError(proc.stdout.strip().splitlines()[-1])
        if proc.returncode != 0:
            raise RuntimeError(f"bench train: the {what} run {args} failed:\n{proc.stderr.strip()[-2000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    fn = {"measure": measure, "enact": enact_fps}[sys.argv[1]]
    try:
        result = fn(**json.loads(sys.argv[2]))
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(e.args[0] if isinstance(e, KeyError) and e.args else e)
        sys.exit(2)
    print(json.dumps(result))
