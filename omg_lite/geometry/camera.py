"""Pinhole cameras and projection, the one convention every module shares.

Conventions (documented once, used everywhere):

- **World / head space** is FLAME's: metres, +y up, the face looks towards +z.
- **Camera space** is OpenCV's: +x right, +y down, +z forward; a point in front of the camera
  has depth z > 0. ``x_cam = R x_world + t``.
- **Pixels**: pixel (row i, column j) covers the square [j, j+1) x [i, i+1) in continuous pixel
  coordinates, so its centre is at (j + 0.5, i + 0.5). A camera-space point projects to
  ``u = fx * x / z + cx``, ``v = fy * y / z + cy``; with ``cx = W / 2`` the principal point is
  the image centre. This is gsplat's convention, and ``grid_sample(..., align_corners=False)``
  maps the normalised coordinate -1 to the left edge of pixel 0, i.e. ``x_n = 2 u / W - 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Camera:
    """A batch of pinhole cameras sharing one image size.

    ``K``, ``R`` and ``t`` are tensors; the device and dtype come from them.
    """

    K: Tensor  # [B, 3, 3] intrinsics
    R: Tensor  # [B, 3, 3] world -> camera rotation
    t: Tensor  # [B, 3] world -> camera translation
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.K.ndim != 3 or self.K.shape[-2:] != (3, 3):
            raise ValueError(f"Camera.K must be [B, 3, 3], got {tuple(self.K.shape)}")
        if self.R.shape != self.K.shape:
            raise ValueError(f"Camera.R must be [B, 3, 3] like K, got {tuple(self.R.shape)}")
        if self.t.shape != self.K.shape[:1] + (3,):
            raise ValueError(f"Camera.t must be [B, 3], got {tuple(self.t.shape)}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"Camera image size must be positive, got {self.width}x{self.height}")

    @property
    def batch(self) -> int:
        return self.K.shape[0]

    @property
    def device(self) -> torch.device:
        return self.K.device

    @property
    def viewmat(self) -> Tensor:
        """World -> camera 4x4 matrices [B, 4, 4] (gsplat's ``viewmats``)."""
        B = self.batch
        M = torch.eye(4, dtype=self.R.dtype, device=self.device).repeat(B, 1, 1)
        M[:, :3, :3] = self.R
        M[:, :3, 3] = self.t
        return M

    @property
    def centre(self) -> Tensor:
        """Camera centres in world space [B, 3]: c = -R^T t."""
        return -(self.R.transpose(1, 2) @ self.t.unsqueeze(-1)).squeeze(-1)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Camera":
        return Camera(self.K.to(device, dtype), self.R.to(device, dtype), self.t.to(device, dtype), self.width, self.height)

    def __getitem__(self, idx) -> "Camera":
        """Select cameras from the batch (an int keeps a batch of one)."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return Camera(self.K[idx], self.R[idx], self.t[idx], self.width, self.height)

    def world_to_camera(self, points: Tensor) -> Tensor:
        """points [B, N, 3] world -> [B, N, 3] camera space."""
        return points @ self.R.transpose(1, 2) + self.t[:, None, :]

    def project(self, points_cam: Tensor) -> Tensor:
        """Camera-space points [B, N, 3] -> pixel coordinates uv [B, N, 2] (no depth check)."""
        z = points_cam[..., 2:3]
        xy = points_cam[..., :2] / z
        f = torch.stack([self.K[:, 0, 0], self.K[:, 1, 1]], -1)[:, None, :]  # [B, 1, 2]
        c = torch.stack([self.K[:, 0, 2], self.K[:, 1, 2]], -1)[:, None, :]  # [B, 1, 2]
        return xy * f + c

    def project_world(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """World points [B, N, 3] -> (uv [B, N, 2], depth [B, N])."""
        pc = self.world_to_camera(points)
        return self.project(pc), pc[..., 2]

    def to_dict(self) -> dict:
        return {"K": self.K, "R": self.R, "t": self.t, "width": self.width, "height": self.height}

    @staticmethod
    def frontal(
        batch: int = 1,
        size: int = 256,
        fov_deg: float = 20.0,
        distance: float = 1.0,
        target: tuple[float, float, float] = (0.0, 0.0, 0.0),
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> "Camera":
        """Square cameras on the +z axis looking at ``target`` (towards -z), FLAME's frontal view.

        The OpenCV camera's axes are the world's with y and z flipped: R = diag(1, -1, -1).
        """
        f = 0.5 * size / math.tan(math.radians(fov_deg) / 2)
        K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]], dtype=dtype, device=device)
        R = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=dtype, device=device))
        eye = torch.tensor(target, dtype=dtype, device=device) + torch.tensor([0.0, 0.0, distance], dtype=dtype, device=device)
        t = -(R @ eye)
        return Camera(K.expand(batch, 3, 3).clone(), R.expand(batch, 3, 3).clone(), t.expand(batch, 3).clone(), size, size)


def resize_camera(camera: Camera, size: int) -> Camera:
    """The same view at size x size pixels: pixels scale with the image, K' = diag(size / W, size / H, 1) K."""
    if (camera.width, camera.height) == (size, size):
        return camera
    S = torch.diag(torch.tensor([size / camera.width, size / camera.height, 1.0], dtype=camera.K.dtype, device=camera.device))
    return Camera(S @ camera.K, camera.R, camera.t, size, size)
