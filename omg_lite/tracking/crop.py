"""Portrait crops: put the head where the model expects it (paper Sec. 4.1, head-and-shoulder
portraits resized to the model's size).

The crop is an axis-aligned square measured on the face, in the spirit of the usual portrait
alignment: with the eye centres e_r, e_l and the mouth corners m_r, m_l (iBUG-68 points),

    e = (e_r + e_l) / 2,    m = (m_r + m_l) / 2,
    s = max(2 |e_l - e_r|,  1.8 |m - e|)                          (face size, pose-robust)
    side = ratio * s,       centre = e + shift * (m - e)

The defaults frame a face the way ``omg-lite synth`` frames its heads (head and shoulders, the
face in the upper middle), so real and synthetic portraits look alike to the model.

The box is rounded to whole pixels, so the crop is an exact similarity of the pixel grid:
u' = (u - u0) * sigma, sigma = size / side, and a camera maps with K' = S K,
S = [[sigma, 0, -sigma u0], [0, sigma, -sigma v0], [0, 0, 1]] (pixel centres at +0.5 stay
consistent, see ``geometry.camera``). Outside the image the crop is black and ``apply`` can say
which pixels came from the image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from omg_lite.geometry.camera import Camera

CROP_RATIO = 3.1
CROP_SHIFT = 0.95


@dataclass
class CropTransform:
    """The square [u0, u0 + side) x [v0, v0 + side) of a source image, resized to size x size."""

    u0: int
    v0: int
    side: int
    size: int

    def __post_init__(self) -> None:
        if self.side <= 0 or self.size <= 0:
            raise ValueError(f"crop side and size must be positive, got side={self.side}, size={self.size}")

    @property
    def scale(self) -> float:
        return self.size / self.side

    @property
    def matrix(self) -> np.ndarray:  # [3, 3] source pixels -> crop pixels
        s = self.scale
        return np.array([[s, 0.0, -s * self.u0], [0.0, s, -s * self.v0], [0.0, 0.0, 1.0]])

    def to_crop(self, uv: np.ndarray) -> np.ndarray:  # [..., 2] source pixels -> crop pixels
        return (np.asarray(uv, dtype=np.float64) - (self.u0, self.v0)) * self.scale

    def from_crop(self, uv: np.ndarray) -> np.ndarray:  # [..., 2] crop pixels -> source pixels
        return np.asarray(uv, dtype=np.float64) / self.scale + (self.u0, self.v0)

    def camera(self, camera: Camera) -> Camera:
        """The camera of the crop: K' = S K, same R and t, image size x size."""
        S = torch.as_tensor(self.matrix, dtype=camera.K.dtype, device=camera.device)
        return Camera(S @ camera.K, camera.R, camera.t, self.size, self.size)

    def apply(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # [H, W] | [H, W, C]
        """-> (crop [size, size(, C)] same dtype, inside [size, size] float: share of each pixel from the image)."""
        image = np.asarray(image)
        if image.ndim not in (2, 3):
            raise ValueError(f"crop expects an image [H, W] or [H, W, C], got shape {image.shape}")
        H, W = image.shape[:2]
        x = torch.from_numpy(image.astype(np.float32)).reshape(H, W, -1).permute(2, 0, 1)  # [C, H, W]
        x = torch.cat([x, torch.ones(1, H, W)])  # last channel: 1 inside the image
        box = torch.zeros(x.shape[0], self.side, self.side)
        a0, b0 = max(self.u0, 0), max(self.v0, 0)
        a1, b1 = min(self.u0 + self.side, W), min(self.v0 + self.side, H)
        if a1 > a0 and b1 > b0:
            box[:, b0 - self.v0 : b1 - self.v0, a0 - self.u0 : a1 - self.u0] = x[:, b0:b1, a0:a1]
        out = F.interpolate(box[None], size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=self.size < self.side)[0]
        crop, inside = out[:-1].permute(1, 2, 0).numpy(), out[-1].clamp(0, 1).numpy()
        if image.dtype == np.uint8:
            crop = np.clip(np.round(crop), 0, 255).astype(np.uint8)
        elif image.dtype == bool:
            crop = crop > 0.5
        else:
            crop = crop.astype(image.dtype)
        return crop.reshape(self.size, self.size, *image.shape[2:]), inside

    def to_dict(self) -> dict:
        return asdict(self)


def face_frame(ibug68: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:  # [68, 2]
    """-> (eye centre e [2], mouth centre m [2], face size s) from iBUG-68 points."""
    p = np.asarray(ibug68, dtype=np.float64)
    if p.shape != (68, 2):
        raise ValueError(f"face_frame expects iBUG-68 landmarks [68, 2], got {p.shape}")
    eye_r, eye_l = p[36:42].mean(0), p[42:48].mean(0)
    e = (eye_r + eye_l) / 2
    m = (p[48] + p[54]) / 2
    s = max(2.0 * np.linalg.norm(eye_l - eye_r), 1.8 * np.linalg.norm(m - e))
    return e, m, float(s)


def portrait_crop(ibug68: np.ndarray, size: int, ratio: float = CROP_RATIO, shift: float = CROP_SHIFT) -> CropTransform:  # [68, 2]
    """The square head-and-shoulder crop of a face, resized to ``size`` pixels."""
    if size < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    e, m, s = face_frame(ibug68)
    if not np.isfinite(s) or s <= 0:
        raise ValueError("degenerate landmarks: the eyes and the mouth coincide")
    side = max(int(round(ratio * s)), 1)
    c = e + shift * (m - e)
    return CropTransform(u0=int(round(c[0] - side / 2)), v0=int(round(c[1] - side / 2)), side=side, size=size)
