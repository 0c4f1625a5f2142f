"""Clips on disk, read one way: frames, portrait masks, head parameters and cameras at a requested size.

Layout (a "clip" is one identity's video; synthetic sets and tracked frames alike)::

    ROOT/
      meta.json            optional: an `omg-lite synth` set lists its clips here
      CLIP/                one folder per clip (any name; sorted by name when there is no meta.json)
        params.npz         per-frame head parameters + cameras (omg_lite.head.params format)
        rgb/0000.png       frame 0, RGB, the size params.npz's image_size says
        mask/0000.png      frame 0's portrait (foreground) mask, 0 / 255

`omg-lite synth`, `omg-lite track` and `omg-lite prepare` write exactly this. Frames whose
``valid`` flag is 0 (tracking lost the face) are never used.

One rule brings a frame to S x S pixels (:func:`resize_frame`), whoever reads it (training's
pairs, ``omg-lite eval``, the demo): the image bilinearly with antialiasing, the mask binarised at
its own size (> 127), area-averaged and kept where more than half of it is on, the intrinsics
scaled with the pixels, K' = diag(S / W, S / H, 1) K (``omg_lite.geometry.camera.resize_camera``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from omg_lite.geometry.camera import Camera, resize_camera
from omg_lite.head.params import HeadParams, load_clip
from omg_lite.safe_load import folder_names

INCOMPLETE = "the clip is incomplete (re-run omg-lite synth / track for it)"


def clip_folders(root: Path, role: str = "data") -> list[Path]:
    """The clips under ``root``: a synth set's meta.json order, else CLIP/params.npz by name, or
    ``root`` itself when it is one clip. ``role`` names the folder in errors ("training data")."""
    if not root.is_dir():
        raise FileNotFoundError(f"{role} folder {root} does not exist (make one with `omg-lite synth --out {root}`)")
    meta = root / "meta.json"
    if meta.is_file():
        try:
            names = json.loads(meta.read_text())["clips"]
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{meta} is not an omg-lite synth meta.json (no list of clips); fix or remove it") from None
        return [root / n for n in folder_names(names, meta)]
    if (root / "params.npz").is_file():
        return [root]
    clips = sorted(p.parent for p in root.glob("*/params.npz") if not p.parent.name.startswith("."))  # hidden: a writer's temporary folder
    if not clips:
        raise FileNotFoundError(f"no clips in {root}: expected CLIP/params.npz with CLIP/rgb/ and CLIP/mask/ beside it (see omg_lite.clips)")
    return clips


def resize_image(x: Tensor, size: int) -> Tensor:  # [B, C, H, W] in [0, 1] -> [B, C, size, size]
    """Bilinear with antialiasing (a no-op at the size already)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def resize_mask(mask: Tensor, size: int) -> Tensor:  # [B, 1, H, W] {0, 1} -> [B, 1, size, size] float {0, 1}
    """Area average, then on where more than half of a pixel is on."""
    m = mask.float()
    if m.shape[-2:] != (size, size):
        m = F.interpolate(m, size=(size, size), mode="area")
    return (m > 0.5).float()


def resize_frame(rgb: Tensor, mask: Tensor, camera: Camera, size: int) -> tuple[Tensor, Tensor, Camera]:
    """Images [B, 3, H, W], masks [B, 1, H, W] and their views [B] at size x size (module docstring)."""
    return resize_image(rgb, size), resize_mask(mask, size), resize_camera(camera, size)


def _png(path: Path, mode: str, want: tuple[int, int], params_file: Path) -> np.ndarray:  # -> [H, W, 3] / [H, W] uint8
    if not path.is_file():
        raise FileNotFoundError(f"missing frame file {path}; {INCOMPLETE}")
    with Image.open(path) as im:
        if (im.height, im.width) != want:
            raise ValueError(f"{path} is {im.height}x{im.width} but {params_file} says frames are {want[0]}x{want[1]}: the files do not belong together")
        return np.asarray(im.convert(mode))


def read_frame(folder: Path, j: int, camera: Camera, size: int) -> tuple[Tensor, Tensor, Camera]:
    """Frame ``j`` of a clip (its view ``camera`` [1]) at size x size: rgb [3, S, S], mask [1, S, S], Camera [1]."""
    want, params_file = (camera.height, camera.width), folder / "params.npz"
    rgb = torch.from_numpy(_png(folder / "rgb" / f"{j:04d}.png", "RGB", want, params_file).copy()).permute(2, 0, 1).float() / 255
    mask = torch.from_numpy(_png(folder / "mask" / f"{j:04d}.png", "L", want, params_file) > 127)[None]  # [1, H, W]
    rgb, mask, cam = resize_frame(rgb[None], mask[None], camera, size)
    return rgb[0], mask[0], cam


@dataclass
class ClipFrames:
    """One clip's valid frames at one size."""

    name: str
    rgb: Tensor  # [M, 3, S, S] in [0, 1]
    mask: Tensor  # [M, 1, S, S] portrait masks {0, 1}
    params: HeadParams  # [M]
    camera: Camera  # [M] at S x S
    true_landmarks: np.ndarray | None  # [M, 68, 2] pixels at S (synthetic clips), else None

    def __len__(self) -> int:
        return self.rgb.shape[0]


def read_clip(folder: Path, size: int, max_frames: int | None = None) -> ClipFrames:
    """A clip's valid frames (at most ``max_frames``), resized to ``size`` (cameras and landmarks scaled with them)."""
    params, camera, extra = load_clip(folder / "params.npz")
    keep = [j for j in range(params.batch) if extra["valid"][j]][: max_frames or None]
    if len(keep) < 2:
        raise ValueError(f"clip {folder} has {len(keep)} valid frame(s); reenactment needs a source and a driver")
    if camera.width != camera.height:
        raise ValueError(f"clip {folder}: frames are {camera.width}x{camera.height}; evaluation reads square portrait crops")
    frames = [read_frame(folder, j, camera[j], size) for j in keep]
    rgb, mask = torch.stack([f[0] for f in frames]), torch.stack([f[1] for f in frames])
    lm = extra.get("landmarks2d")
    true = None if lm is None or not np.isfinite(lm[keep]).all() or "crop" in extra else lm[keep] * (size / camera.width)
    return ClipFrames(folder.name, rgb, mask, params[keep], resize_camera(camera[keep], size), true)
