"""Mesh z-buffer: per pixel, the nearest triangle, its depth and barycentric coordinates.

The paper's visibility mask M (Key Design 2) and the shoulder mask M_s (Key Design 3) both start
from a z-buffer of the head mesh; the synthetic renderer uses the same one. pytorch3d's
rasterizer would normally do this, but it cannot be installed from PyPI for current torch, so
this is a small rasterizer written in torch (any device, batched).

For every pixel centre p = (j + 0.5, i + 0.5) (the convention of :mod:`omg_lite.geometry.camera`)
and every triangle with projected corners q_0, q_1, q_2 and camera depths z_0, z_1, z_2:

    screen barycentrics   l_k(p)  from  p = l_0 q_0 + l_1 q_1 + l_2 q_2,  l_0 + l_1 + l_2 = 1
    inside                l_0, l_1, l_2 >= 0            (either winding: no back-face culling)
    depth                 1 / z(p) = l_0 / z_0 + l_1 / z_1 + l_2 / z_2   (1/z is affine on screen)
    perspective bary      b_k = (l_k / z_k) * z(p)      (sum_k b_k X_k is the 3D hit point)

and the pixel keeps the triangle of smallest z(p). Back faces are kept because the head mesh is
open (neck, mouth): seen through the mouth, an inner back face must still occlude.

How: (face, pixel) candidate pairs are enumerated inside each face's bounding box clipped to
the image, in chunks of a bounded number of pairs (so a face covering the whole image costs
memory in proportion to the chunk, not to the mesh), the barycentric test keeps the inside
pairs, and one ``scatter_reduce(amin)`` per chunk on a single int64 key, the float32 bits of z
(monotone for positive floats) above the face index, does the depth test and records the
winning face at once. The winners' depth and barycentrics are then recomputed per pixel.

Conventions and limits:
- Faces with any vertex at z <= ``near`` are culled (no near-plane clipping); if every vertex of
  a batch element is behind the near plane that is an error ("mesh is behind the camera").
- Off-screen geometry gives an empty buffer; degenerate faces (projected area <= 1e-10 px^2)
  are skipped.
- Not differentiable: it runs under ``torch.no_grad`` and returns plain tensors (the pixel
  assignment is discrete; gradients for rendering go through the Gaussian splatter instead).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Candidate (face, pixel) pairs processed per chunk: bounds the working memory at about 100 MB.
PAIRS_PER_CHUNK = 1 << 20
# Projected triangles with |area| at or below this (pixels^2) are degenerate and skipped.
MIN_AREA_PX2 = 1e-10


@dataclass
class Fragments:
    """The z-buffer of a batch of meshes (empty pixels: depth 0, face_idx -1, bary 0)."""

    depth: Tensor  # [B, H, W] camera-space z of the nearest surface at the pixel centre
    face_idx: Tensor  # [B, H, W] long, index into faces, -1 where empty
    bary: Tensor  # [B, H, W, 3] perspective-correct barycentrics of the pixel centre

    @property
    def mask(self) -> Tensor:
        """[B, H, W] bool: a surface covers the pixel centre."""
        return self.face_idx >= 0

    def interpolate(self, attr: Tensor, faces: Tensor) -> Tensor:
        """Interpolate per-vertex attributes at the pixel centres (0 where empty).

        attr: [B, V, C] per-vertex values; faces: [F, 3]. Returns [B, H, W, C].
        """
        B, H, W = self.face_idx.shape
        f = self.face_idx.clamp_min(0).reshape(B, -1)  # [B, P]
        corners = faces[f]  # [B, P, 3]
        vals = torch.gather(attr, 1, corners.reshape(B, -1, 1).expand(-1, -1, attr.shape[-1]))
        vals = vals.reshape(B, -1, 3, attr.shape[-1])  # [B, P, 3, C]
        out = (self.bary.reshape(B, -1, 3, 1) * vals).sum(2)
        out = out * self.mask.reshape(B, -1, 1)
        return out.reshape(B, H, W, -1)


def _check_inputs(verts_cam: Tensor, faces: Tensor, K: Tensor, height: int, width: int, near: float) -> Tensor:
    if verts_cam.ndim != 3 or verts_cam.shape[-1] != 3:
        raise ValueError(f"rasterize: verts_cam must be [B, V, 3], got {tuple(verts_cam.shape)}")
    if not verts_cam.is_floating_point():
        raise ValueError(f"rasterize: verts_cam must be a float tensor, got {verts_cam.dtype}")
    if faces.ndim != 2 or faces.shape[-1] != 3:
        raise ValueError(f"rasterize: faces must be [F, 3], got {tuple(faces.shape)}")
    if faces.is_floating_point() or faces.dtype == torch.bool:
        raise ValueError(f"rasterize: faces must be an integer tensor (vertex indices), got {faces.dtype}")
    B, V, _ = verts_cam.shape
    if K.shape == (3, 3):
        K = K.expand(B, 3, 3)
    if K.shape != (B, 3, 3):
        raise ValueError(f"rasterize: K must be [B, 3, 3] (or [3, 3]) with B={B}, got {tuple(K.shape)}")
    if int(height) <= 0 or int(width) <= 0:
        raise ValueError(f"rasterize: image size must be positive, got {height}x{width}")
    if not near > 0:
        raise ValueError(f"rasterize: near must be > 0, got {near}")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= V):
        raise ValueError(
            f"rasterize: face indices must lie in [0, {V - 1}] for a mesh of {V} vertices, "
            f"got range [{int(faces.min())}, {int(faces.max())}]"
        )
    if not torch.isfinite(verts_cam).all():
        raise ValueError("rasterize: verts_cam holds NaN or Inf; check the head parameters and camera")
    if not torch.isfinite(K).all():
        raise ValueError("rasterize: K holds NaN or Inf")
    behind = (verts_cam[..., 2] <= near).all(dim=1)  # [B]
    if V and behind.any():
        b = int(behind.nonzero()[0])
        raise ValueError(
            f"rasterize: the mesh is behind the camera (batch element {b}: every vertex has z <= near={near}); "
            "camera space must have z > 0 in front of the camera (OpenCV axes), check R and t"
        )
    return K


def _face_setup(verts_cam: Tensor, faces: Tensor, K: Tensor, near: float):
    """Projected corners, affine barycentric/1/z coefficients and live mask per face.

    Returns q0 [B, F, 2], coef [B, F, 7] = (a1, b1, a2, b2, iz0, iz1 - iz0, iz2 - iz0) with
    l_1 = a1 (u - u0) + b1 (v - v0), l_2 = a2 (u - u0) + b2 (v - v0), and live [B, F] bool.
    """
    proj = verts_cam @ K.transpose(1, 2)  # [B, V, 3]
    z = verts_cam[..., 2]  # [B, V]
    uv = proj[..., :2] / proj[..., 2:3].clamp_min(near)  # [B, V, 2]
    q = uv[:, faces]  # [B, F, 3, 2]
    iz = 1.0 / z.clamp_min(near)[:, faces]  # [B, F, 3]
    e1 = q[:, :, 1] - q[:, :, 0]  # [B, F, 2]
    e2 = q[:, :, 2] - q[:, :, 0]
    area = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]  # twice the signed area [B, F]
    live = (z[:, faces] > near).all(-1) & (area.abs() > 2 * MIN_AREA_PX2)
    inv = 1.0 / torch.where(live, area, torch.ones_like(area))
    # solve [e1 e2] [l1 l2]^T = p - q0 for (l1, l2)
    coef = torch.stack(
        [
            e2[..., 1] * inv,
            -e2[..., 0] * inv,
            -e1[..., 1] * inv,
            e1[..., 0] * inv,
            iz[..., 0],
            iz[..., 1] - iz[..., 0],
            iz[..., 2] - iz[..., 0],
        ],
        -1,
    )
    return q, coef, live


@torch.no_grad()
def rasterize(
    verts_cam: Tensor,  # [B, V, 3] camera space, OpenCV axes, z > 0 in front
    faces: Tensor,  # [F, 3] long vertex indices
    K: Tensor,  # [B, 3, 3] pinhole intrinsics (or [3, 3] shared)
    height: int,
    width: int,
    near: float = 1e-3,
) -> Fragments:
    """Z-buffer the meshes: nearest face, its depth and perspective-correct barycentrics per pixel."""
    K = _check_inputs(verts_cam, faces, K, height, width, near)
    H, W = int(height), int(width)
    B = verts_cam.shape[0]
    F = faces.shape[0]
    device = verts_cam.device
    faces = faces.long()
    sentinel = torch.iinfo(torch.int64).max
    keys = torch.full((B * H * W,), sentinel, dtype=torch.int64, device=device)

    if F:
        q, coef, live = _face_setup(verts_cam, faces, K.to(verts_cam.dtype), near)
        # pixel j's centre j + 0.5 lies in [u_min, u_max]  <=>  ceil(u_min - 0.5) <= j <= floor(u_max - 0.5)
        lo = torch.ceil(q.amin(2) - 0.5).clamp(-1, max(H, W))  # [B, F, 2]  (u, v)
        hi = torch.floor(q.amax(2) - 0.5).clamp(-1, max(H, W))
        j0 = lo[..., 0].clamp_min(0).long()
        i0 = lo[..., 1].clamp_min(0).long()
        nx = (hi[..., 0].clamp_max(W - 1).long() - j0 + 1).clamp_min(0)
        ny = (hi[..., 1].clamp_max(H - 1).long() - i0 + 1).clamp_min(0)
        count = (nx * ny * live).reshape(-1)  # [B*F] candidate pixels per face
        keep = count.nonzero().squeeze(1)  # faces with candidates, as flat b * F + f
        count = count[keep]
        ends = count.cumsum(0)
        starts = ends - count
        total = int(ends[-1]) if len(ends) else 0
        face_q0 = q[:, :, 0].reshape(-1, 2)[keep]  # [L, 2]
        face_coef = coef.reshape(-1, 7)[keep]  # [L, 7]
        face_nx, face_i0, face_j0 = nx.reshape(-1)[keep], i0.reshape(-1)[keep], j0.reshape(-1)[keep]
        face_pix0 = (keep // F) * (H * W)  # first pixel of the face's image in the flat buffer
        face_id = keep % F
        for s in range(0, total, PAIRS_PER_CHUNK):
            e = min(s + PAIRS_PER_CHUNK, total)
            first = int(torch.searchsorted(ends, torch.tensor(s, device=device), right=True))
            last = int(torch.searchsorted(starts, torch.tensor(e, device=device), right=False))
            sel = torch.arange(first, last, device=device)
            n = ends[sel].clamp_max(e) - starts[sel].clamp_min(s)
            fl = torch.repeat_interleave(sel, n)  # [P] face (in keep) of each pair
            local = torch.arange(s, e, device=device) - starts[fl]
            nxl = face_nx[fl]
            i = face_i0[fl] + local // nxl
            j = face_j0[fl] + local % nxl
            c = face_coef[fl]  # [P, 7]
            d = torch.stack([j, i], -1).to(c.dtype) + 0.5 - face_q0[fl]  # [P, 2] p - q0
            l1 = c[:, 0] * d[:, 0] + c[:, 1] * d[:, 1]
            l2 = c[:, 2] * d[:, 0] + c[:, 3] * d[:, 1]
            inside = (l1 >= 0) & (l2 >= 0) & (l1 + l2 <= 1)
            idx = inside.nonzero().squeeze(1)
            iz = c[idx, 4] + c[idx, 5] * l1[idx] + c[idx, 6] * l2[idx]
            zbits = (1.0 / iz).float().view(torch.int32).long()
            key = (zbits << 32) | face_id[fl[idx]]
            pix = face_pix0[fl[idx]] + i[idx] * W + j[idx]
            keys.scatter_reduce_(0, pix, key, reduce="amin")

    hit = (keys != sentinel).nonzero().squeeze(1)  # [P] covered pixels, flat b * H * W + i * W + j
    face_idx = torch.full((B * H * W,), -1, dtype=torch.long, device=device)
    depth = torch.zeros(B * H * W, dtype=verts_cam.dtype, device=device)
    bary = torch.zeros(B * H * W, 3, dtype=verts_cam.dtype, device=device)
    if len(hit):
        f = keys[hit] & 0xFFFFFFFF
        b = hit // (H * W)
        i = (hit % (H * W)) // W
        j = hit % W
        c = coef[b, f]  # [P, 7]
        d = torch.stack([j, i], -1).to(c.dtype) + 0.5 - q[b, f, 0]
        l1 = c[:, 0] * d[:, 0] + c[:, 1] * d[:, 1]
        l2 = c[:, 2] * d[:, 0] + c[:, 3] * d[:, 1]
        l = torch.stack([1 - l1 - l2, l1, l2], -1)  # [P, 3] screen barycentrics
        izk = torch.stack([c[:, 4], c[:, 4] + c[:, 5], c[:, 4] + c[:, 6]], -1)  # [P, 3] 1 / z_k
        iz = (l * izk).sum(-1)
        face_idx[hit] = f
        depth[hit] = 1.0 / iz
        bary[hit] = l * izk / iz[:, None]
    return Fragments(depth.reshape(B, H, W), face_idx.reshape(B, H, W), bary.reshape(B, H, W, 3))
