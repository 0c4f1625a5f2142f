"""``omg-lite bench prepare`` and ``omg-lite bench loader``: preparing videos and feeding training.

- ``prepare``: a synthetic collection (the synthetic world rendered along smooth head paths,
  encoded to H.264) goes through ``omg-lite prepare`` with each number of workers; the figure is
  the wall time per kept frame (decode, detect, fit, crop, mask, PNG writes, worker start-up)
  and the workers' CPU time per frame (the figure that survives a busy machine: W workers on W
  free cores prepare about W / cpu_s_per_frame frames a second), the numbers to scale to VFHQ's
  766,263 frames.
- ``loader``: the training loader (``train.data.PairDataset`` + a ``DataLoader``, exactly as
  ``train.loop`` builds it) over a prepared set, in frames per second (two frames, source and
  driver, per pair) for each ``num_workers``: what the disk + PNG decoding can feed a GPU.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omg_lite.bench import Bench
from omg_lite.config import Config, pick


def synthetic_collection(folder: str | Path, clips: int = 3, frames: int = 6, size: int = 128, seed: int = 0, bad: bool = True) -> dict[str, Path]:
    """Write ``clips`` portrait videos good_NN.mp4 (one synthetic identity each, a smooth head
    path) into ``folder``, and with ``bad`` one each of: corrupt bytes, an empty file, a video
    with no face, two faces side by side, a byte copy of good_00 and good_01 cut in the middle."""
    from omg_lite.bench.tracking import render_clip, smooth_path
    from omg_lite.head import head_from_config
    from omg_lite.tracking.video import write_video

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg, rng = Config(), np.random.default_rng(seed)
    head = head_from_config(cfg.head)
    paths, rgbs = {}, []
    for i in range(clips):
        rgb, _, _ = render_clip(head, smooth_path(head, frames, rng), size, cfg, rng)  # [M, S, S, 3]
        rgbs.append(rgb)
        paths[f"good_{i:02d}"] = write_video(folder / f"good_{i:02d}.mp4", rgb, fps=25)
    if not bad:
        return paths
    paths["corrupt"] = folder / "corrupt.mp4"
    paths["corrupt"].write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    paths["empty"] = folder / "empty.mp4"
    paths["empty"].write_bytes(b"")
    noise = rng.integers(90, 160, (frames, size, size, 3), dtype=np.uint8)  # a textured wall, no face
    paths["noface"] = write_video(folder / "noface.mp4", noise, fps=25)
    if clips >= 2:
        paths["two_faces"] = write_video(folder / "two_faces.mp4", np.concatenate([rgbs[0], rgbs[1][:, :, ::-1]], axis=2), fps=25)
        data = paths["good_01"].read_bytes()
        paths["truncated"] = folder / "truncated.mp4"
        paths["truncated"].write_bytes(data[: len(data) // 2])
    paths["zz_copy_of_good_00"] = folder / "zz_copy_of_good_00.mp4"
    shutil.copyfile(paths["good_00"], paths["zz_copy_of_good_00"])
    return paths


@dataclass
class PrepareBench(Bench):
    """Seconds per frame of `omg-lite prepare` on a synthetic collection, for each number of workers."""

    # Worker processes to time, one run each.
    workers: tuple[int, ...] = (1, 2)
    # Videos, frames per video and their side in pixels.
    clips: int = pick(4, 2)
    frames: int = pick(12, 4)
    size: int = 256
    # Side of the crops written (the training size; the paper: 512).
    crop: int = 512

    name = "prepare"

    def run(self) -> list[dict]:
        from omg_lite.prepare import prepare

        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            videos = Path(tmp) / "videos"
            synthetic_collection(videos, self.clips, self.frames, self.size, bad=False)
            for w in self.workers:
                cfg = Config()
                cfg.track.size = self.crop
                r = prepare(videos, Path(tmp) / f"out{w}", cfg, workers=w, progress=False)
                rows.append({"workers": w, "videos": r["ok"], "frames": r["frames_now"], "video_px": self.size, "crop_px": self.crop,
                             "seconds": r["seconds"], "s_per_frame": r["s_per_frame"], "frames_per_s": r["frames_now"] / r["seconds"],
                             "cpu_s_per_frame": r["cpu_s_per_frame"]})  # fmt: skip
        return rows


@dataclass
class LoaderBench(Bench):
    """Training-loader throughput (frames/s) over a prepared set, for each num_workers."""

    # A prepared set (omg-lite prepare / synth output); default: a synthetic set rendered at --size into a temporary folder.
    data: str = ""
    # Training image side (the paper preset: 512) and batch (pairs).
    image_size: int = 512
    batch_size: int = 8
    # DataLoader worker processes to time.
    num_workers: tuple[int, ...] = (0, 1, 2)
    # Batches timed per setting (after one warm-up batch).
    batches: int = pick(12, 2)
    # Side of the default synthetic set.
    size: int = 512

    name = "loader"

    def run(self) -> list[dict]:
        import torch

        from omg_lite.train.data import PairDataset, collate

        with tempfile.TemporaryDirectory() as tmp:
            root = Path(self.data) if self.data else Path(tmp) / "synth"
            if not self.data:
                from omg_lite.synth import write_synth

                write_synth(root, 2, max(4, self.batch_size), self.size, 0, progress=False)
            ds = PairDataset(root, self.image_size, split="all")
            rows = []
            for w in self.num_workers:
                order = [int(i) for i in np.random.default_rng(0).integers(len(ds), size=(self.batches + 1) * self.batch_size)]
                loader = torch.utils.data.DataLoader(ds, batch_size=self.batch_size, sampler=order, collate_fn=collate, num_workers=w)
                it = iter(loader)
                next(it)  # warm-up: worker start and first reads
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(self.batches):
                    next(it)
                sec, cpu = time.perf_counter() - t0, time.process_time() - c0
                del it, loader
                frames = 2 * self.batch_size * self.batches
                rows.append({"num_workers": w, "image_size": self.image_size, "batch_pairs": self.batch_size, "frames": frames,
                             "seconds": sec, "frames_per_s": frames / sec, "pairs_per_s": frames / 2 / sec,
                             "cpu_ms_per_frame": 1e3 * cpu / frames if w == 0 else None,  # with workers the work is in other processes
                             "source_px": ds.clips[0].camera.width, "clips": len(ds.clips), "data": "synthetic" if not self.data else str(root)})  # fmt: skip
            rows.append(self._real_png(ds))
        return rows

    def _real_png(self, ds) -> dict:
        """Decoding one frame of the set against a real photo's PNG of the same size (VFHQ crops
        compress like photos, synthetic frames much better): skimage's astronaut, public domain."""
        import io

        from PIL import Image
        from skimage import data

        from omg_lite.bench import time_ms

        photo = io.BytesIO()
        Image.fromarray(data.astronaut()).resize((ds.clips[0].camera.width,) * 2).save(photo, "PNG")
        frame = (ds.clips[0].folder / "rgb" / f"{ds.clips[0].frames[0]:04d}.png").read_bytes()
        decode = lambda b: np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))  # noqa: E731
        return {"case": "PNG decode, one frame", "set_frame_kb": len(frame) / 1024, "set_frame_ms": time_ms(lambda: decode(frame), repeat=9),
                "photo_kb": len(photo.getvalue()) / 1024, "photo_ms": time_ms(lambda: decode(photo.getvalue()), repeat=9)}  # fmt: skip
