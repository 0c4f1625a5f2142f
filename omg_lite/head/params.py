"""The per-frame head-parameter format shared by the synthetic world and the tracker.

Only ``synth/`` and ``tracking/`` produce head parameters; everything downstream reads them in
this one format, so training and enactment take real or synthetic frames alike.

A clip is stored as ``params.npz`` with the arrays below (M frames, float32):

==============  =========  ==========================================================
key             shape      meaning
==============  =========  ==========================================================
shape           [S]        identity coefficients beta (shared by the clip)
expression      [M, E]     expression coefficients psi
pose            [M, 15]    axis-angle theta, FLAME's order: root, neck, jaw, eye L, eye R
translation     [M, 3]     head translation, metres
K               [M, 3, 3]  camera intrinsics (pixels)
R               [M, 3, 3]  world -> camera rotation (OpenCV camera axes)
t               [M, 3]     world -> camera translation
image_size      [2]        (height, width) in pixels
valid           [M]        1 where the frame's parameters are trustworthy (tracking may lose a face)
==============  =========  ==========================================================

Extra arrays (landmarks, fitting losses, ...) may be stored beside them under other keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from omg_lite.geometry.camera import Camera
from omg_lite.io import atomic_file

POSE_DIM = 15  # 5 joints x axis-angle
REQUIRED_KEYS = ("shape", "expression", "pose", "translation", "K", "R", "t", "image_size")


@dataclass
class HeadParams:
    """A batch of FLAME parameters (B frames or identities)."""

    shape: Tensor  # [B, S]
    expression: Tensor  # [B, E]
    pose: Tensor  # [B, 15]
    translation: Tensor  # [B, 3]

    def __post_init__(self) -> None:
        B = self.shape.shape[0]
        for name, dim in (("shape", None), ("expression", None), ("pose", POSE_DIM), ("translation", 3)):
            x = getattr(self, name)
            if x.ndim != 2 or x.shape[0] != B or (dim is not None and x.shape[1] != dim):
                want = f"[B={B}, {dim if dim else name[0].upper()}]"
                raise ValueError(f"HeadParams.{name} must be {want}, got {tuple(x.shape)}")

    @property
    def batch(self) -> int:
        return self.shape.shape[0]

    def __getitem__(self, idx) -> "HeadParams":
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return HeadParams(self.shape[idx], self.expression[idx], self.pose[idx], self.translation[idx])

    def to(self, device=None, dtype=None) -> "HeadParams":
        return HeadParams(*(getattr(self, n).to(device, dtype) for n in ("shape", "expression", "pose", "translation")))

    @staticmethod
    def zeros(batch: int, n_shape: int, n_expr: int, device=None, dtype=torch.float32) -> "HeadParams":
        z = lambda d: torch.zeros(batch, d, device=device, dtype=dtype)  # noqa: E731
        return HeadParams(z(n_shape), z(n_expr), z(POSE_DIM), z(3))


def atomic_savez(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """``np.savez`` that never leaves a half-written file under the final name."""
    with atomic_file(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def save_clip(path: str | os.PathLike, params: HeadParams, camera: Camera, valid: Tensor | None = None, **extra) -> None:
    """Write a clip's per-frame parameters and cameras (one shared shape) to ``params.npz``."""
    M = params.batch
    if camera.batch != M:
        raise ValueError(f"save_clip: {M} frames of parameters but {camera.batch} cameras")
    f32 = lambda x: x.detach().cpu().float().numpy()  # noqa: E731
    arrays = dict(
        shape=f32(params.shape[0]),
        expression=f32(params.expression),
        pose=f32(params.pose),
        translation=f32(params.translation),
        K=f32(camera.K),
        R=f32(camera.R),
        t=f32(camera.t),
        image_size=np.array([camera.height, camera.width], dtype=np.int64),
        valid=(np.ones(M, np.uint8) if valid is None else valid.detach().cpu().numpy().astype(np.uint8)),
    )
    arrays.update({k: np.asarray(v) for k, v in extra.items()})
    atomic_savez(path, **arrays)


def check_arrays(path: Path, data: dict[str, np.ndarray]) -> None:
    """Each array's dtype, shape and values, naming the file and the key: a params.npz may come from anywhere."""
    e = data["expression"]
    if e.ndim != 2:
        raise ValueError(f"{path}: 'expression' must be [M, E] (frames x coefficients), got shape {list(e.shape)}")
    M = e.shape[0]
    shapes = {"expression": (M, None), "pose": (M, POSE_DIM), "translation": (M, 3), "K": (M, 3, 3), "R": (M, 3, 3), "t": (M, 3)}
    s = data["shape"]
    shapes["shape"] = (None,) if s.ndim == 1 else (s.shape[0] if s.ndim == 2 and s.shape[0] in (1, M) else -1, None)
    for key, want in shapes.items():
        a = data[key]
        if a.dtype.kind != "f":
            raise ValueError(f"{path}: {key!r} holds {a.dtype} values; expected floating point (written by omg-lite synth / track?)")
        if a.ndim != len(want) or any(w is not None and w != n for w, n in zip(want, a.shape)):
            shown = "[" + ", ".join("*" if w is None else str(w) for w in want) + "]"
            raise ValueError(f"{path}: {key!r} must be {shown} for {M} frame(s), got {list(a.shape)}")
        bad = ~np.isfinite(a.reshape(a.shape[0], -1) if a.ndim > 1 else a[None]).all(-1)
        if bad.any():
            raise ValueError(f"{path}: {key!r} holds NaN or Inf (first at frame {int(np.argmax(bad))}); the file is damaged")
    size = data["image_size"]
    if size.shape != (2,) or size.dtype.kind not in "iu" or (size <= 0).any():
        raise ValueError(f"{path}: 'image_size' must be two positive integers (H, W), got {size.tolist()!r}")
    if "valid" in data and data["valid"].shape != (M,):
        raise ValueError(f"{path}: 'valid' must be [{M}] (one flag per frame), got {list(data['valid'].shape)}")


def load_clip(path: str | os.PathLike, device=None) -> tuple[HeadParams, Camera, dict[str, np.ndarray]]:
    """Read ``params.npz`` -> (HeadParams [M], Camera [M], extra arrays incl. ``valid``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no head-parameter file at {path} (expected a params.npz written by omg-lite synth or track)")
    try:
        data = dict(np.load(path, allow_pickle=False))
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same message
        why = "it holds pickled objects, which omg_lite never loads" if "pickle" in str(e) else str(e)
        raise ValueError(f"{path} is not a readable params.npz ({why})") from None
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path} is missing {missing}; it is not an omg_lite params file")
    check_arrays(path, data)
    M = data["expression"].shape[0]
    T = lambda k: torch.as_tensor(data.pop(k), dtype=torch.float32, device=device)  # noqa: E731
    shape = T("shape").expand(M, -1).clone()
    params = HeadParams(shape, T("expression"), T("pose"), T("translation"))
    H, W = (int(v) for v in data.pop("image_size"))
    camera = Camera(T("K"), T("R"), T("t"), width=W, height=H)
    if "valid" not in data:
        data["valid"] = np.ones(M, np.uint8)
    return params, camera, data
