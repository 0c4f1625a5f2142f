"""Projective feature sampling (paper, Key Design 1: hierarchical projective feature sampling).

At every level k the vertices are projected with the camera P and the local feature map is
sampled bilinearly at their projections:

    F^{GS_k}_local = Sampling(P(V_k), F_local)

Pixel and ``align_corners`` convention: the one in ``omg_lite.geometry.camera`` (pixel centres at
+0.5, ``grid_sample(..., align_corners=False)``). The feature map [B, C, h, w] covers the same
field of view as the W x H image, so an image point (u, v) sits at (u w / W, v h / H) in feature
pixels, and both land on the same normalised coordinate

    x_n = 2 u / W - 1,    y_n = 2 v / H - 1,

which is what ``grid_sample`` reads. A feature pixel centre is therefore sampled exactly, and a
point between centres mixes the four nearest feature pixels bilinearly.

Padding: with ``padding_mode="zeros"`` (the default, torch's) every bilinear tap outside
[0, w) x [0, h) reads 0, so a point on the image border is partly mixed with zeros and a
point half a feature pixel or more outside the image gets 0; ``"border"`` clamps the taps to the
edge pixels instead (a point outside the image takes its nearest edge pixel's value).

Returned with the features: ``uv``, the image-pixel coordinates of each projection, and ``valid``,
true for points in front of the camera (depth > 0) whose projection lies in the closed image
rectangle [0, W] x [0, H]. Points on or behind the camera plane (depth <= 0) have no projection:
their ``uv`` is NaN, their features are exactly 0 and their gradient is 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as Fn
from torch import Tensor

from omg_lite.geometry.camera import Camera

PADDING_MODES = ("zeros", "border")


def _check_map(feature_map: Tensor, width: int, height: int, padding_mode: str) -> None:
    if feature_map.ndim != 4:
        raise ValueError(f"feature_map must be [B, C, h, w], got shape {tuple(feature_map.shape)}")
    if not feature_map.dtype.is_floating_point:
        raise ValueError(f"feature_map must be floating point, got {feature_map.dtype}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    h, w = feature_map.shape[-2:]
    # Same field of view: h / w = H / W, allowing each side to be rounded to whole feature pixels.
    if abs(h * width - w * height) > (width + height) / 2:
        raise ValueError(
            f"feature_map is {h}x{w} (h x w) but the image is {height}x{width}: the aspect ratios differ, so the "
            "map cannot cover the image's field of view; resize the map to the image's aspect ratio"
        )


def sample_uv(
    feature_map: Tensor,  # [B, C, h, w]
    uv: Tensor,  # [B, V, 2] image pixel coordinates (u right, v down)
    width: int,
    height: int,
    padding_mode: str = "zeros",
) -> Tensor:  # [B, V, C]
    """Bilinear samples of a map covering a W x H image at image pixel coordinates ``uv``."""
    _check_map(feature_map, width, height, padding_mode)
    if uv.ndim != 3 or uv.shape[-1] != 2 or uv.shape[0] != feature_map.shape[0]:
        raise ValueError(f"uv must be [B={feature_map.shape[0]}, V, 2], got shape {tuple(uv.shape)}")
    size = torch.tensor([width, height], dtype=uv.dtype, device=uv.device)
    grid = 2 * uv / size - 1  # [B, V, 2], x_n = 2u/W - 1, y_n = 2v/H - 1
    out = Fn.grid_sample(feature_map, grid[:, :, None, :].to(feature_map.dtype), mode="bilinear", padding_mode=padding_mode, align_corners=False)
    return out[..., 0].transpose(1, 2)  # [B, C, V, 1] -> [B, V, C]


def sample_features(
    feature_map: Tensor,  # [B, C, h, w]
    points_world: Tensor,  # [B, V, 3]
    camera: Camera,
    padding_mode: str = "zeros",
) -> tuple[Tensor, Tensor, Tensor]:  # features [B, V, C], uv [B, V, 2], valid [B, V]
    """F_local at the projections P(V_k) of world points: (features, image-pixel uv, valid)."""
    _check_map(feature_map, camera.width, camera.height, padding_mode)
    B = feature_map.shape[0]
    if points_world.ndim != 3 or points_world.shape[-1] != 3 or points_world.shape[0] != B:
        raise ValueError(f"points_world must be [B={B}, V, 3], got shape {tuple(points_world.shape)}")
    if camera.batch not in (1, B):
        raise ValueError(f"camera holds {camera.batch} cameras; expected 1 or B={B}")
    if points_world.device != feature_map.device or camera.device != feature_map.device:
        raise ValueError(
            f"feature_map ({feature_map.device}), points_world ({points_world.device}) and camera ({camera.device}) "
            "must be on one device"
        )
    if points_world.dtype != camera.K.dtype:
        raise ValueError(f"points_world is {points_world.dtype} but the camera is {camera.K.dtype}; use camera.to(dtype=...)")
    pc = camera.world_to_camera(points_world)  # [B, V, 3]
    front = pc[..., 2] > 0  # [B, V]
    safe = torch.cat([pc[..., :2], torch.where(front, pc[..., 2], torch.ones_like(pc[..., 2]))[..., None]], -1)
    uv = camera.project(safe)  # [B, V, 2], finite everywhere; only the front points' values are used
    feats = sample_uv(feature_map, uv, camera.width, camera.height, padding_mode)
    feats = torch.where(front[..., None], feats, torch.zeros_like(feats))
    inside = (uv[..., 0] >= 0) & (uv[..., 0] <= camera.width) & (uv[..., 1] >= 0) & (uv[..., 1] <= camera.height)
    uv = torch.where(front[..., None], uv, torch.full_like(uv, float("nan")))
    return feats, uv, front & inside
