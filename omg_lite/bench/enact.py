"""``omg-lite bench enact``: reconstruction time, frames per second and Gaussian counts per LOD.

The paper's protocol (Sec. 4, "Performance Comparison"): reconstruct once, then time enactment
over 100 frames after warm-up, covering splatting and the refiner, with a device synchronise
before the clock is read. Here one frame is the whole per-frame work of ``Avatar.render``:

    p_h = Phi^k(LBS(beta_s, psi_d, theta_d) + o)   (positions)
    F_r = Splat(H_k(p_h) U S, P)                     (splatting)
    I_r = I_c + R(F_r)                               (refiner)

The driver is :func:`omg_lite.avatar.synthetic_path`; the source is a synthetic frame with known
parameters (``data_samples/synth_256``), so reconstruction = encoder + model, without tracking.
``fps`` is frames / total time (the protocol); ``fps_median`` is 1 / the median frame time, which
the load spikes of a shared machine move less. ``ms_positions``, ``ms_splat`` and ``ms_refiner``
split a frame (medians over 10 frames, the parts timed back to back in each frame; splatting =
render - positions - refiner). Without a checkpoint the model is an UNTRAINED one of the preset:
the same work per frame, though trained opacities and scales change how many Gaussian-pixel
pairs the splatter blends. On a shared CPU the figures move with the machine's load
(``load_avg``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

from omg_lite.bench import Bench, sync
from omg_lite.samples import synthetic_avatar

PAPER_A100_FPS = {0: 152.57, 1: 148.04, 2: 85.94}  # paper preset, 512x512
TARGET_FPS = {0: 30.0, 1: 20.0, 2: 12.0}  # this 2-core CPU, lite refiner, 256x256 (issue 15)
TARGET_RECONSTRUCTION_S = 1.0


@dataclass
class EnactBench(Bench):
    """Reconstruction time, FPS per LOD (positions + splatting + refiner) and Gaussian counts."""

    # Renders are size x size pixels.
    size: int = 256
    # Run folder or weights file; default data_samples/lite when present, else an UNTRAINED model of --preset.
    checkpoint: str | None = None
    # Preset of the untrained stand-in (used only without a checkpoint).
    preset: str = "lite"
    # Frames timed per level of detail, after the warm-up frames.
    frames: int = 100
    warmup: int = 5
    # Reconstructions timed (the median is reported), after one warm-up.
    repeat: int = 3
    # "auto" (CUDA when present), "cpu" or "cuda".
    device: str = "auto"
    # torch intra-op CPU threads (0: torch's default). On an oversubscribed CPU one thread can be several times faster.
    threads: int = 0
    # Opt-in: the refiner in bfloat16 (Refiner.low_precision; about 2.5x faster on AVX-512/AMX CPUs,
    # outputs within 5e-4 of float32 on the held-out set: see the README; ignored on CPUs without
    # bfloat16 units). Rows say which ran.
    low_precision: bool = False

    name = "enact"

    def run(self) -> list[dict]:
        from omg_lite.avatar import DEFAULT_CHECKPOINT, Avatar, AvatarModel, retarget, synthetic_path

        if self.frames < 1 or self.warmup < 0 or self.repeat < 1 or self.size < 16:
            raise ValueError("bench enact: --frames and --repeat must be at least 1, --warmup at least 0, --size at least 16")
        if self.threads < 0:
            raise ValueError(f"bench enact: --threads must be 0 (torch's default) or more, got {self.threads}")
        if self.threads:
            torch.set_num_threads(self.threads)
        if self.checkpoint is None and not DEFAULT_CHECKPOINT.exists():
            net = AvatarModel.untrained(self.preset, self.device)
        else:
            net = AvatarModel.load(self.checkpoint, device=self.device)
        dev = net.device
        if net.model.cfg.use_refiner:
            net.model.refiner.low_precision = self.low_precision
        avatar = synthetic_avatar(net)  # the first reconstruction is the warm-up
        laps = [Avatar.reconstruct(net, avatar.source, avatar.gaussians.lod).seconds for _ in range(self.repeat)]
        median = lambda key: sorted(x[key] for x in laps)[len(laps) // 2]  # noqa: E731
        rows = [{"stage": "reconstruct", "size": self.size, "device": str(dev), "threads": torch.get_num_threads(), "load_avg": round(os.getloadavg()[0], 1),
                 "seconds": median("encoder") + median("reconstruct"), "encoder_s": median("encoder"), "model_s": median("reconstruct"),
                 "target": f"<= {TARGET_RECONSTRUCTION_S:g} s", "model": net.label}]
        head = net.head_model
        path = synthetic_path(self.frames + self.warmup, head.n_shape, head.n_expr)
        params = retarget(head, avatar.source.params, path.to(dev), "neck")
        cam = avatar.camera(self.size)
        for k in avatar.lods:
            fps, fps_median = self._fps(avatar, params, cam, k)
            parts = self._parts(avatar, params, cam, k)
            c = avatar.counts(k)
            rows.append({"stage": f"LOD {k}", "head": c["head"], "shoulder": c["shoulder"], "gaussians": c["total"], "fps": fps,
                         "fps_median": fps_median, "ms_frame": 1e3 / fps, **parts, "refiner": self._precision(dev), "target": f">= {TARGET_FPS[k]:g} fps" if k in TARGET_FPS else "",
                         "paper_A100_fps": PAPER_A100_FPS.get(k, "")})
        return rows

    def _precision(self, dev: torch.device) -> str:
        """The refiner's arithmetic as it ran: bfloat16 only where asked and the device has the units."""
        from omg_lite.model.refiner import bfloat16_runs

        if not self.low_precision:
            return "float32"
        return "bfloat16" if bfloat16_runs(dev) else "float32 (--low-precision ignored: no bfloat16 units on this CPU)"

    @torch.no_grad()
    def _fps(self, avatar, params, cam, k: int) -> tuple[float, float]:
        """(frames / total time over ``frames`` frames after ``warmup``, the paper's protocol;
        1 / median frame time, which a shared machine's load spikes move less)."""
        dev = avatar.net.device
        for m in range(self.warmup):
            avatar.render(params[m], cam, k)
        laps = []
        for m in range(self.warmup, self.warmup + self.frames):
            sync(dev)
            t0 = time.perf_counter()
            avatar.render(params[m], cam, k)
            sync(dev)
            laps.append(time.perf_counter() - t0)
        return self.frames / sum(laps), 1.0 / sorted(laps)[len(laps) // 2]

    @torch.no_grad()
    def _parts(self, avatar, params, cam, k: int, n: int = 10) -> dict:
        """Median ms of positions, splatting and refiner, timed side by side on the same n frames."""
        dev, model = avatar.net.device, avatar.net.model
        laps: dict[str, list[float]] = {"ms_positions": [], "ms_splat": [], "ms_refiner": []}
        for m in range(min(n, params.batch)):
            p = params[m]
            sync(dev)
            t0 = time.perf_counter()
            avatar.positions(p, k)
            sync(dev)
            t1 = time.perf_counter()
            out = avatar.render(p, cam, k)
            sync(dev)
            t2 = time.perf_counter()
            if model.cfg.use_refiner:
                model.refiner(out.feature_image)
            sync(dev)
            t3 = time.perf_counter()
            laps["ms_positions"].append(1e3 * (t1 - t0))
            laps["ms_refiner"].append(1e3 * (t3 - t2))
            laps["ms_splat"].append(1e3 * ((t2 - t1) - (t1 - t0) - (t3 - t2)))
        return {key: sorted(v)[len(v) // 2] for key, v in laps.items()}
