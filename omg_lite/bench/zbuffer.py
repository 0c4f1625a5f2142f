"""``omg-lite bench zbuffer``: time the mesh z-buffer on a head-sized mesh.

The mesh is a closed UV ellipsoid with the size of a head (0.16 m wide, 0.23 m tall, 0.20 m
deep; trimesh builds it) seen by the default portrait camera of :mod:`omg_lite.config`
(18 deg field of view at 1.6 m): it covers about a ninth of the image, the head without its neck
in a head-and-shoulders portrait (the stand-in head with its neck covers about a fifth of the
synthetic portraits). The face count is rounded to the nearest UV-sphere tessellation; the row
reports the count actually used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from omg_lite.bench import Bench, time_ms
from omg_lite.config import CameraConfig
from omg_lite.geometry.camera import Camera
from omg_lite.geometry.zbuffer import rasterize


def head_sized_ellipsoid(faces: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A UV ellipsoid of about ``faces`` triangles, head-sized, in FLAME world space (metres).

    Returns verts [V, 3] float32 and faces [F, 3] long.
    """
    import trimesh

    if faces < 8:
        raise ValueError(f"bench zbuffer: --faces must be at least 8, got {faces}")
    n = round(1 + math.sqrt(1 + faces / 4))  # trimesh's UV sphere has 4 n (n - 2) faces
    mesh = trimesh.creation.uv_sphere(radius=1.0, count=[n, n])
    verts = torch.tensor(mesh.vertices, dtype=torch.float32) * torch.tensor([0.08, 0.115, 0.10])
    return verts, torch.tensor(mesh.faces, dtype=torch.long)


@dataclass
class ZBufferBench(Bench):
    """Time the mesh z-buffer (median ms) on a head-sized ellipsoid at a portrait framing."""

    # Approximate number of triangles of the mesh.
    faces: int = 10000
    # Image side in pixels (square image).
    size: int = 512
    # Batch size (meshes rasterised in one call).
    batch: int = 1
    # Torch device to run on, e.g. cpu or cuda.
    device: str = "cpu"
    # Timed repetitions (the median is reported).
    repeat: int = 7
    # CPU threads for torch (0: torch's default). On a loaded machine 1 avoids threads waiting on each other.
    threads: int = 0

    name = "zbuffer"

    def run(self) -> list[dict]:
        if self.size <= 0 or self.batch <= 0 or self.threads < 0:
            raise ValueError(
                f"bench zbuffer: --size and --batch must be positive and --threads >= 0, got {self.size}, {self.batch}, {self.threads}"
            )
        if self.threads:
            torch.set_num_threads(self.threads)
        verts, faces = head_sized_ellipsoid(self.faces)
        cam_cfg = CameraConfig()
        cam = Camera.frontal(self.batch, self.size, cam_cfg.fov_deg, cam_cfg.distance, device=self.device)
        verts_cam = cam.world_to_camera(verts.to(self.device).expand(self.batch, -1, -1))
        faces = faces.to(self.device)

        def call():
            return rasterize(verts_cam, faces, cam.K, self.size, self.size)

        ms = time_ms(call, self.device, warmup=2, repeat=self.repeat)
        covered = int(call().mask[0].sum())
        return [
            {
                "faces": int(faces.shape[0]),
                "size": self.size,
                "batch": self.batch,
                "device": self.device,
                "threads": torch.get_num_threads(),
                "ms": ms,
                "pixels_covered": covered,
                "coverage": covered / self.size**2,
            }
        ]
