"""The shoulder branch (paper, Key Design 3: multi-region modelling).

FLAME has no shoulders, so they get their own Gaussians, predicted per pixel of the local
feature plane and kept where the shoulder mask M_s (portrait mask - head z-buffer mask, no
segmentation model; :func:`shoulder_plane`) is on:

    c_s, o_s, s_s, r_s, O_s = Flatten(Conv(F_local) * M_s)
    p_s = p^_s + O_s n_s,         O_s = delta_s tanh(raw)

where p^_s is the pixel's point on an image-aligned plane in the source view and n_s the
plane's normal. The attributes use the head's activations (:func:`gaussian_heads.activate`)
with the spacing of neighbouring plane points as the base size. Shoulder means are fixed in
world space: enactment moves the head only.

Flatten keeps the masked pixels of each batch element in raster order and pads the batch to
its largest count with invisible Gaussians (opacity 0, ``valid`` false), so N_s is the number
of masked pixels (the largest one in a batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as Fn
from torch import Tensor, nn

from omg_lite.geometry.camera import Camera
from omg_lite.model.gaussian_heads import GaussianAttributes, activate, attribute_width


@dataclass
class ShoulderGaussians:
    means: Tensor  # [B, N_s, 3] world, fixed during enactment
    attributes: GaussianAttributes  # N_s Gaussians
    valid: Tensor  # [B, N_s] bool, false for padding (whose opacity is 0)


class ShoulderBranch(nn.Module):
    """Conv(F_local) -> per-pixel Gaussian attributes and a normal offset, kept under M_s."""

    def __init__(self, local_dim: int, hidden: int, channels: int, max_offset: float):
        super().__init__()
        self.channels, self.max_offset = channels, max_offset
        self.conv = nn.Sequential(
            nn.Conv2d(local_dim, hidden, 3, padding=1), nn.GELU(), nn.Conv2d(hidden, attribute_width(channels) + 1, 1)
        )

    def forward(
        self,
        F_local: Tensor,  # [B, C', h, w]
        mask: Tensor,  # [B, h, w] bool, M_s on the feature plane
        points: Tensor,  # [B, h, w, 3] world, p^_s: the pixels on the image-aligned plane
        normals: Tensor,  # [B, h, w, 3] world, n_s (unit)
    ) -> ShoulderGaussians:
        B, _, h, w = F_local.shape
        raw = self.conv(F_local).permute(0, 2, 3, 1).reshape(B, h * w, -1)  # [B, P, C + 9]
        flat = mask.reshape(B, h * w)
        counts = flat.sum(1)  # [B]
        N = int(counts.max()) if B else 0
        order = torch.argsort((~flat).to(torch.uint8), dim=1, stable=True)[:, :N]  # masked pixels first, raster order
        valid = torch.arange(N, device=mask.device)[None] < counts[:, None]  # [B, N_s]

        def pick(x: Tensor) -> Tensor:  # [B, P, C] -> [B, N_s, C]
            return torch.gather(x, 1, order[..., None].expand(-1, -1, x.shape[-1]))

        raw = pick(raw)
        p_hat, n = pick(points.reshape(B, h * w, 3)), pick(normals.reshape(B, h * w, 3))
        spacing = (points[:, :, 1:] - points[:, :, :-1]).norm(dim=-1).mean((1, 2))  # [B] plane pixel size
        attrs = activate(raw[..., :-1], spacing[:, None, None], self.channels)
        attrs.opacities = attrs.opacities * valid  # o_s * M_s: padding is invisible
        O_s = self.max_offset * torch.tanh(raw[..., -1:])  # [B, N_s, 1]
        return ShoulderGaussians(means=p_hat + O_s * n, attributes=attrs, valid=valid)


def shoulder_plane(
    portrait_mask: Tensor,  # [B, 1, H, W] bool or [0, 1]
    head_mask: Tensor,  # [B, H, W] bool, the head z-buffer's coverage in the source view
    camera: Camera,  # the source view, batch B
    head_vertices: Tensor,  # [B, V, 3] world, the source head mesh
    h: int,
    w: int,
) -> tuple[Tensor, Tensor, Tensor]:  # M_s [B, h, w] bool, p^_s [B, h, w, 3], n_s [B, h, w, 3]
    """M_s = portrait - head on the h x w feature plane, and that plane's pixels in the world.

    The plane faces the camera at the head's mean depth z_p: the feature pixel (i, j) covers
    image point (u, v) = ((j + 0.5) W / w, (i + 0.5) H / h) and lies at
    p^ = R^T (z_p K^-1 [u, v, 1] - t), with the normal n = R^T (0, 0, -1) towards the camera.
    A feature pixel is in M_s when more than half of the image pixels it covers are.
    """
    B, H, W = head_mask.shape
    M = (portrait_mask[:, 0].float() - head_mask.float()).clamp_min(0)  # [B, H, W]
    mask = Fn.interpolate(M[:, None], size=(h, w), mode="area")[:, 0] > 0.5  # [B, h, w]
    z_p = camera.world_to_camera(head_vertices)[..., 2].mean(1)  # [B]
    i, j = torch.meshgrid(torch.arange(h, device=M.device), torch.arange(w, device=M.device), indexing="ij")
    uv1 = torch.stack([(j + 0.5) * W / w, (i + 0.5) * H / h, torch.ones_like(i, dtype=torch.float)], -1)  # [h, w, 3]
    rays = uv1.reshape(1, -1, 3).to(camera.K.dtype) @ torch.linalg.inv(camera.K).transpose(1, 2)  # [B, h w, 3], z = 1
    X = z_p[:, None, None] * rays - camera.t[:, None]  # [B, h w, 3]
    points = (X @ camera.R).reshape(B, h, w, 3)  # R^T x as row vectors
    n = -camera.R[:, 2]  # [B, 3] = R^T (0, 0, -1)
    return mask, points, n[:, None, None].expand(B, h, w, 3)
