"""EWA projection of 3D Gaussians to image-plane ellipses (paper Sec. 3, "Rendering"; 3DGS/EWA).

Each Gaussian has a mean mu (world), a rotation q = (w, x, y, z) and per-axis scales s. Its
covariance is

    Sigma = R(q) S S^T R(q)^T,              S = diag(s)

and the camera (OpenCV axes, ``x_cam = W x_world + t``) sees it with the covariance
W Sigma W^T. The perspective map is linearised at the mean (EWA splatting):

    J = [[fx / z, 0, -fx x / z^2],
         [0, fy / z, -fy y / z^2]]           (x, y clamped to 1.3 x the field of view)
    Sigma' = J W Sigma W^T J^T + 0.3 I       (0.3 px^2 low-pass dilation)

The projected mean is u = fx x / z + cx, v = fy y / z + cy; the conic is Sigma'^-1 stored as
(a, b, c) with Sigma'^-1 = [[a, b], [b, c]]; the depth is the camera-space z.

The radius bounds the ellipse where alpha can still reach 1/255:
r = ceil(k sqrt(Sigma'_xx)) (and likewise in y) with k = 3.33, or, given opacities o,
k = min(3.33, sqrt(2 ln(255 o))). Outside that box alpha < 1/255, so culling there is exact.
A Gaussian gets radius 0 (culled) when z <= near (0.01), z >= far (1e10), det Sigma' <= 0,
its box misses the image, or o < 1/255. These are gsplat 1.5.3's defaults and conventions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from omg_lite.geometry.camera import Camera

NEAR_PLANE = 0.01
FAR_PLANE = 1e10
EPS2D = 0.3
ALPHA_MIN = 1.0 / 255.0
EXTENT = 3.33
SCALE_MIN = 1e-8

# The one message for each kind of bad value, in the order they are checked (every backend).
INPUT_ERRORS = {
    1: "means contains NaN or Inf",
    2: "quats contains NaN or Inf",
    3: "scales contains NaN or Inf",
    4: "opacities contains NaN or Inf",
    5: "features contains NaN or Inf",
    6: "quats has zero quaternion(s): a rotation needs a non-zero (w, x, y, z)",
    7: "scales has negative values: scales are linear (apply exp() to log-scales)",
    8: "opacities must lie in [0, 1] (apply sigmoid() to logits)",
}


@dataclass
class Projection:
    """Gaussians seen by one camera per batch element."""

    means2d: Tensor  # [B, N, 2] pixel coordinates (u, v)
    conics: Tensor  # [B, N, 3] (a, b, c) of the inverse 2D covariance
    depths: Tensor  # [B, N] camera-space z
    radii: Tensor  # [B, N, 2] int32 box half-sizes in pixels; 0 = culled


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Unit rotation matrices from quaternions (w, x, y, z), normalised here.

    quats: [..., 4] -> [..., 3, 3]
    """
    w, x, y, z = (quats / quats.norm(dim=-1, keepdim=True)).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, -1).reshape(quats.shape[:-1] + (3, 3))


def covariance3d(
    quats: Tensor,  # [..., 4]
    scales: Tensor,  # [..., 3]
) -> Tensor:
    """Sigma = R S S^T R^T, [..., 3, 3]."""
    M = quat_to_rotmat(quats) * scales[..., None, :]  # R S
    return M @ M.transpose(-1, -2)


def project_gaussians(
    means: Tensor,  # [B, N, 3] world
    quats: Tensor,  # [B, N, 4] (w, x, y, z)
    scales: Tensor,  # [B, N, 3] linear
    camera: Camera,
    opacities: Tensor | None = None,  # [B, N] in [0, 1]; tightens the radii when given
) -> Projection:
    """Project Gaussians to 2D ellipses (means2d, conics, depths, radii); differentiable."""
    W, H = camera.width, camera.height
    K = camera.K.to(means.dtype)
    R = camera.R.to(means.dtype)
    fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]  # [B, 1]
    cx, cy = K[:, 0, 2, None], K[:, 1, 2, None]  # [B, 1]

    p = camera.world_to_camera(means)  # [B, N, 3]
    x, y, z = p.unbind(-1)  # [B, N]
    in_depth = (z > NEAR_PLANE) & (z < FAR_PLANE)
    z = torch.where(in_depth, z, torch.ones_like(z))  # keeps culled Gaussians finite

    # J is evaluated at the mean clamped to 1.3 x the field of view (stable at the borders).
    tan_x, tan_y = 0.5 * W / fx, 0.5 * H / fy
    xz = (x / z).clamp(-(cx / fx + 0.3 * tan_x), (W - cx) / fx + 0.3 * tan_x)
    yz = (y / z).clamp(-(cy / fy + 0.3 * tan_y), (H - cy) / fy + 0.3 * tan_y)
    zero = torch.zeros_like(z)
    J = torch.stack([fx / z, zero, -fx * xz / z, zero, fy / z, -fy * yz / z], -1)
    J = J.reshape(z.shape + (2, 3))  # [B, N, 2, 3]

    cov_cam = R[:, None] @ covariance3d(quats, scales) @ R[:, None].transpose(-1, -2)  # W Sigma W^T
    cov2d = J @ cov_cam @ J.transpose(-1, -2)  # [B, N, 2, 2]
    a = cov2d[..., 0, 0] + EPS2D
    b = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    c = cov2d[..., 1, 1] + EPS2D
    det = a * c - b * b
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], -1)  # [B, N, 3]
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)  # [B, N, 2]

    with torch.no_grad():
        extent = torch.full_like(det, EXTENT)
        visible = in_depth & (det > 0)
        if opacities is not None:
            o = opacities.detach().to(det.dtype)
            visible &= o >= ALPHA_MIN
            extent = extent.minimum(torch.sqrt(2.0 * torch.log(o.clamp_min(ALPHA_MIN) / ALPHA_MIN)))
        rx = torch.ceil(extent * a.clamp_min(0).sqrt())
        ry = torch.ceil(extent * c.clamp_min(0).sqrt())
        u, v = means2d.detach().unbind(-1)
        visible &= (u + rx > 0) & (u - rx < W) & (v + ry > 0) & (v - ry < H)
        visible &= (rx > 0) | (ry > 0)
        radii = torch.stack([rx, ry], -1).masked_fill(~visible[..., None], 0).to(torch.int32)

    return Projection(means2d=means2d, conics=conics, depths=p[..., 2], radii=radii)


def pixel_box(
    means2d: Tensor,  # [..., 2]
    radii: Tensor,  # [..., 2]
    width: int,
    height: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Integer pixel ranges [x0, x1) x [y0, y1) holding every pixel centre within the radii.

    Pixel j has its centre at j + 0.5, so the centres in [u - r, u + r] have
    j in [floor(u - r), ceil(u + r)); clipped to the image.
    """
    u, v = means2d.detach().unbind(-1)
    rx, ry = radii.to(u.dtype).unbind(-1)
    x0 = torch.floor(u - rx).clamp(0, width).long()
    x1 = torch.ceil(u + rx).clamp(0, width).long()
    y0 = torch.floor(v - ry).clamp(0, height).long()
    y1 = torch.ceil(v + ry).clamp(0, height).long()
    return x0, x1, y0, y1


__all__ = ["Projection", "project_gaussians", "covariance3d", "quat_to_rotmat", "pixel_box"]
