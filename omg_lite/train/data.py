"""Self-supervised source/driver pairs (paper Sec. 4.1, "Loss & Training").

"Two frames are sampled per video: one as source and one as driver, with the goal of matching
the output to the driving frame." A pair is two frames of ONE clip (one identity): the source
image I_s is encoded, the driver's head parameters (expression, pose) re-pose the avatar, and the
target is the driver image I_d.

Data: the clips under a folder, in the layout of ``omg_lite.clips`` (which reads every frame
at the training size: one resize rule for frames, masks and intrinsics).

Pairs: an epoch draws one pair per valid frame of the training clips, that frame as the driver
and another valid frame of its clip as the source, chosen by ``numpy.random.default_rng((seed,
epoch, index))``; the order of pairs comes from a ``DistributedSampler`` (seed, epoch). So the
pairs of step s are a function of (seed, s) alone: a resumed run sees the same pairs, and each
DDP rank reads its own shard.

Held-out split: the last ``heldout`` clips (by name) are held out, whole identities, for the
held-out metrics; the others train.

Sources (``sources``): ``"random"`` (training: each valid frame drives once, from another valid
frame drawn as above) or ``"first"`` (the one-shot protocol the held-out metrics use, the same as
``omg-lite eval``'s self-reenactment: each clip's first valid frame is the source photo and drives
to every other valid frame once).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from omg_lite.geometry.camera import Camera
from omg_lite.head.params import HeadParams, load_clip
from omg_lite.clips import INCOMPLETE, clip_folders, read_frame

SPLITS = ("train", "heldout", "all")
SOURCES = ("random", "first")


@dataclass
class Clip:
    name: str
    folder: Path
    params: HeadParams  # [M]
    camera: Camera  # [M]
    frames: list[int]  # the valid frame indices


@dataclass
class PairBatch:
    """A batch of source/driver pairs (B pairs)."""

    source_rgb: Tensor  # [B, 3, H, W] in [0, 1]
    source_mask: Tensor  # [B, 1, H, W] portrait mask of the source, {0, 1}
    driver_rgb: Tensor  # [B, 3, H, W] the target I_d, in [0, 1]
    driver_mask: Tensor  # [B, 1, H, W]
    source: HeadParams  # [B]
    driver: HeadParams  # [B]
    camera_src: Camera  # [B]
    camera_drv: Camera  # [B]

    @property
    def batch(self) -> int:
        return self.source_rgb.shape[0]

    def to(self, device) -> "PairBatch":
        t = lambda x: x.to(device)  # noqa: E731
        return PairBatch(
            t(self.source_rgb), t(self.source_mask), t(self.driver_rgb), t(self.driver_mask),
            self.source.to(device), self.driver.to(device), self.camera_src.to(device), self.camera_drv.to(device),
        )


def _read_clip(folder: Path) -> Clip:
    if not folder.is_dir():
        raise FileNotFoundError(f"clip folder {folder} is missing (listed in the data's meta.json)")
    params, camera, extra = load_clip(folder / "params.npz")
    valid = [j for j in range(params.batch) if extra["valid"][j]]
    if len(valid) < 2:
        raise ValueError(f"clip {folder} has {len(valid)} valid frame(s); a source/driver pair needs at least 2: remove the clip or track more frames")
    for j in valid:  # every file must be there; sizes are checked on the first frame here, on each frame as it is read
        for kind in ("rgb", "mask"):
            if not (folder / kind / f"{j:04d}.png").is_file():
                raise FileNotFoundError(f"missing frame file {folder / kind / f'{j:04d}.png'}; {INCOMPLETE}")
    read_frame(folder, valid[0], camera[valid[0]], camera.width)
    return Clip(folder.name, folder, params, camera, valid)


class PairDataset(torch.utils.data.Dataset):
    """Source/driver pairs from the clips under ``root``, images resized to ``size`` x ``size``.

    ``ds[i]`` is a dict of tensors for pair i of the current epoch (:meth:`set_epoch`);
    :func:`collate` turns a list of them into a :class:`PairBatch`.
    """

    def __init__(self, root: str | Path, size: int, split: str = "train", heldout: int = 0, seed: int = 0, sources: str = "random"):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if sources not in SOURCES:
            raise ValueError(f"sources must be one of {SOURCES}, got {sources!r}")
        if size < 8:
            raise ValueError(f"training image size must be at least 8 pixels, got {size}")
        self.root, self.size, self.seed, self.epoch, self.sources = Path(root), size, seed, 0, sources
        folders = sorted(clip_folders(self.root, "training data"), key=lambda p: p.name)
        if not 0 <= heldout < len(folders):
            raise ValueError(f"train.heldout={heldout} but {self.root} has {len(folders)} clip(s): at least one must stay for training")
        keep = {"train": folders[: len(folders) - heldout], "heldout": folders[len(folders) - heldout :], "all": folders}[split]
        self.clips = [_read_clip(f) for f in keep]
        dims = {(c.params.shape.shape[1], c.params.expression.shape[1]) for c in self.clips}
        if len(dims) > 1:
            raise ValueError(f"clips under {self.root} disagree on (shape, expression) sizes {sorted(dims)}: they were made with different head models")
        self.n_shape, self.n_expr = dims.pop() if dims else (0, 0)
        first = int(sources == "first")  # the first valid frame is the source, never a driver
        self.index = [(c, j) for c in range(len(self.clips)) for j in self.clips[c].frames[first:]]  # driver frames

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def pair(self, i: int) -> tuple[int, int, int]:
        """(clip, source frame, driver frame) of pair i in the current epoch."""
        c, drv = self.index[i]
        if self.sources == "first":
            return c, self.clips[c].frames[0], drv
        others = [j for j in self.clips[c].frames if j != drv]
        src = others[int(np.random.default_rng((self.seed, self.epoch, i)).integers(len(others)))]
        return c, src, drv

    def _frame(self, clip: Clip, j: int) -> tuple[Tensor, Tensor, Camera]:
        return read_frame(clip.folder, j, clip.camera[j], self.size)  # [3, S, S], [1, S, S], [1]

    def __getitem__(self, i: int) -> dict:
        c, src, drv = self.pair(i)
        clip = self.clips[c]
        item: dict = {}
        for role, j in (("source", src), ("driver", drv)):
            rgb, mask, cam = self._frame(clip, j)
            p = clip.params[j]
            item.update({f"{role}_rgb": rgb, f"{role}_mask": mask, f"{role}_K": cam.K[0], f"{role}_R": cam.R[0], f"{role}_t": cam.t[0]})
            item.update({f"{role}_{k}": getattr(p, k)[0] for k in ("shape", "expression", "pose", "translation")})
        return item


def collate(items: list[dict]) -> PairBatch:
    """Stack ``PairDataset`` items into a :class:`PairBatch`."""
    s = lambda k: torch.stack([it[k] for it in items])  # noqa: E731
    size = items[0]["source_rgb"].shape[-1]
    params = lambda r: HeadParams(s(f"{r}_shape"), s(f"{r}_expression"), s(f"{r}_pose"), s(f"{r}_translation"))  # noqa: E731
    cam = lambda r: Camera(s(f"{r}_K"), s(f"{r}_R"), s(f"{r}_t"), size, size)  # noqa: E731
    return PairBatch(s("source_rgb"), s("source_mask"), s("driver_rgb"), s("driver_mask"), params("source"), params("driver"), cam("source"), cam("driver"))
