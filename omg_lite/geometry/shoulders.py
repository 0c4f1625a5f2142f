"""The shoulder mask M_s and the image-plane shoulder points (paper, Key Design 3: multi-region modelling).

FLAME ends at the neck, so the portrait's shoulders get their own Gaussians, one per masked
pixel of an image-aligned plane. No segmentation model: the mask is what the portrait shows and
the head mesh does not,

    M_s = portrait mask - head z-buffer mask       (pixelwise: portrait AND NOT head)

followed by a morphological opening that drops slivers narrower than ``2 open_px + 1`` pixels
(the portrait matte and the fitted head's outline never agree to the pixel on real photos). The
model's shoulder branch then reads

    c_s, o_s, s_s, r_s, O_s = Flatten(Conv(F_local) * M_s),    p_s = p^_s + O_s n_s

with p^_s the masked pixels unprojected onto the plane z = z_p facing the camera,
p^_s = R^T (z_p K^-1 [u, v, 1]^T - t), and n_s = R^T (0, 0, -1)^T its normal towards the camera.

**The neck band under the collar.** FLAME's neck runs down into the clothes: rasterised whole,
its lowest band covers torso pixels (the collar and shirt in front of it), and M_s loses them.
On the synthetic set that alone caps the IoU of M_s with the true torso mask at about 0.89.
:func:`collar_band` marks the faces whose rest-pose vertices all lie within ``neck_cut`` of the
neck's open end (4 cm by default: the synthetic collar sits 5.5 cm above it, real collars about
as high); :func:`head_mask` leaves those faces out of the head z-buffer mask. With
``neck_cut=0`` the mask is the paper's literal definition.

**Empty masks.** A portrait without shoulders (or entirely covered by the head) gives M_s = 0
and zero shoulder points: :meth:`ShoulderPlane.packed` returns [B, 0, 3] tensors when no
element has any, and pads with ``valid`` false otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as Fn
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torch import Tensor

from omg_lite.geometry.camera import Camera
from omg_lite.geometry.zbuffer import Fragments

# Height (metres, rest pose) of the neck band above the neck's open end that clothes cover.
NECK_CUT = 0.04
# Radius (pixels) of the square opening that cleans M_s: slivers up to 2 r + 1 px wide go.
OPEN_PX = 1


def collar_band(
    template: Tensor,  # [V, 3] rest-pose vertices, FLAME axes (+y up)
    faces: Tensor,  # [F, 3] long
    neck_cut: float = NECK_CUT,
) -> Tensor:  # [F] bool
    """Faces of the neck band hidden under the collar: every vertex within ``neck_cut`` above the neck's end.

    The neck's end is the lowest open boundary loop of the mesh (edges used by one face); the band
    is measured from that loop's highest vertex. A closed mesh has no neck end: no face is marked.
    """
    if template.ndim != 2 or template.shape[-1] != 3:
        raise ValueError(f"collar_band: template must be [V, 3], got {tuple(template.shape)}")
    if faces.ndim != 2 or faces.shape[-1] != 3:
        raise ValueError(f"collar_band: faces must be [F, 3], got {tuple(faces.shape)}")
    if not neck_cut >= 0:
        raise ValueError(f"collar_band: neck_cut must be >= 0 metres, got {neck_cut}")
    f = faces.detach().cpu().long().numpy()
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    uniq, counts = np.unique(edges, axis=0, return_counts=True)
    border = uniq[counts == 1]  # [E_b, 2] open boundary edges
    marked = torch.zeros(len(f), dtype=torch.bool, device=faces.device)
    if len(border) == 0 or neck_cut == 0:
        return marked
    V = template.shape[0]
    graph = coo_matrix((np.ones(len(border)), (border[:, 0], border[:, 1])), shape=(V, V))
    _, label = connected_components(graph, directed=False)
    y = template[:, 1].detach().cpu().numpy()
    on_border = np.unique(border)
    loops = np.unique(label[on_border])
    lowest = min(loops, key=lambda c: y[on_border[label[on_border] == c]].mean())
    top = y[on_border[label[on_border] == lowest]].max()
    band = torch.from_numpy((y[f] < top + neck_cut).all(1))
    return band.to(faces.device)


def head_mask(
    frags: Fragments,  # the head's z-buffer, [B, H, W]
    hidden_faces: Tensor | None = None,  # [F] bool, faces that do not count (e.g. collar_band)
) -> Tensor:  # [B, H, W] bool
    """The head z-buffer mask: pixels whose nearest surface is a head face not in ``hidden_faces``."""
    if hidden_faces is None:
        return frags.mask
    return frags.mask & ~hidden_faces[frags.face_idx.clamp_min(0)]


def _as_mask(name: str, m: Tensor) -> Tensor:
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.ndim != 3:
        raise ValueError(f"{name} must be [B, H, W] (or [B, 1, H, W]), got {tuple(m.shape)}")
    return m if m.dtype == torch.bool else m > 0.5


def open_mask(mask: Tensor, radius: int) -> Tensor:  # [B, H, W] bool -> [B, H, W] bool
    """Morphological opening with a (2 r + 1)^2 square: erosion (outside the image counts as on,
    so regions cut by the frame keep their border) then dilation."""
    if radius <= 0:
        return mask
    k = 2 * radius + 1
    x = mask[:, None].float()
    eroded = -Fn.max_pool2d(-Fn.pad(x, (radius,) * 4, value=1.0), k, stride=1)
    return Fn.max_pool2d(eroded, k, stride=1, padding=radius)[:, 0] > 0.5


def shoulder_mask(
    portrait_mask: Tensor,  # [B, H, W] (or [B, 1, H, W]) bool or in [0, 1]
    head: Tensor,  # [B, H, W] bool, the head z-buffer mask (head_mask)
    open_px: int = OPEN_PX,
) -> Tensor:  # [B, H, W] bool
    """M_s = portrait AND NOT head, opened by ``open_px`` to drop slivers along the head's outline."""
    portrait = _as_mask("portrait_mask", portrait_mask)
    head = _as_mask("head mask", head)
    if portrait.shape != head.shape:
        raise ValueError(
            f"portrait_mask is {tuple(portrait.shape)} but the head mask {tuple(head.shape)}: rasterise the head "
            "at the portrait's size"
        )
    if open_px < 0:
        raise ValueError(f"open_px must be >= 0, got {open_px}")
    return open_mask(portrait & ~head, int(open_px))


@dataclass
class ShoulderPlane:
    """The shoulder sample points p^_s on the image-aligned plane, one per pixel of an h x w grid."""

    mask: Tensor  # [B, h, w] bool, M_s on the grid
    points: Tensor  # [B, h, w, 3] world, p^_s of every grid pixel (masked or not)
    normals: Tensor  # [B, h, w, 3] world, n_s (unit, towards the camera)

    @property
    def count(self) -> Tensor:
        """[B] number of shoulder points per element."""
        return self.mask.flatten(1).sum(1)

    def packed(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Masked points in raster order, padded to the largest count N_s (0 if every mask is empty).

        Returns points [B, N_s, 3], normals [B, N_s, 3], valid [B, N_s] bool and the grid pixel
        index i * w + j [B, N_s] (padding: valid false, index 0, zeros).
        """
        B, h, w = self.mask.shape
        flat = self.mask.reshape(B, h * w)
        N = int(self.count.max()) if B else 0
        order = torch.argsort((~flat).to(torch.uint8), dim=1, stable=True)[:, :N]  # masked pixels first
        valid = torch.arange(N, device=flat.device)[None] < self.count[:, None]
        index = torch.where(valid, order, torch.zeros_like(order))

        def take(x: Tensor) -> Tensor:  # [B, h, w, 3] -> [B, N_s, 3]
            picked = torch.gather(x.reshape(B, h * w, 3), 1, index[..., None].expand(-1, -1, 3))
            return picked * valid[..., None]

        return take(self.points), take(self.normals), valid, index


def shoulder_plane(
    mask: Tensor,  # [B, H, W] bool, M_s at image resolution
    camera: Camera,  # batch B, image H x W
    plane_depth: Tensor | float,  # [B] (or one value) camera-space depth z_p of the plane
    grid: tuple[int, int] | None = None,  # (h, w) of the sample grid; None: the image's pixels
) -> ShoulderPlane:
    """Unproject the pixels of an h x w grid onto the plane z = z_p facing the camera.

    Grid pixel (i, j) covers the image point (u, v) = ((j + 0.5) W / w, (i + 0.5) H / h) and is in
    M_s when more than half of the image pixels it covers are (area resampling).
    """
    mask = _as_mask("mask", mask)
    B, H, W = mask.shape
    if (H, W) != (camera.height, camera.width) or camera.batch != B:
        raise ValueError(f"mask is {tuple(mask.shape)} but the camera is {camera.batch} x {camera.height}x{camera.width}")
    h, w = grid if grid is not None else (H, W)
    if h <= 0 or w <= 0:
        raise ValueError(f"grid must be positive, got {grid}")
    z_p = torch.as_tensor(plane_depth, dtype=camera.K.dtype, device=camera.device).expand(B)
    if not (z_p > 0).all():
        raise ValueError(f"plane_depth must be > 0 (in front of the camera), got {z_p.tolist()}")
    on = mask if (h, w) == (H, W) else Fn.interpolate(mask[:, None].float(), size=(h, w), mode="area")[:, 0] > 0.5
    i, j = torch.meshgrid(
        torch.arange(h, device=camera.device, dtype=camera.K.dtype),
        torch.arange(w, device=camera.device, dtype=camera.K.dtype),
        indexing="ij",
    )
    uv1 = torch.stack([(j + 0.5) * W / w, (i + 0.5) * H / h, torch.ones_like(i)], -1).reshape(1, -1, 3)
    rays = uv1 @ torch.linalg.inv(camera.K).transpose(1, 2)  # [B, h w, 3], z = 1
    X_cam = z_p[:, None, None] * rays  # [B, h w, 3]
    points = ((X_cam - camera.t[:, None]) @ camera.R).reshape(B, h, w, 3)  # R^T (x - t), as rows
    n = -camera.R[:, 2]  # [B, 3] = R^T (0, 0, -1)
    return ShoulderPlane(on, points, n[:, None, None].expand(B, h, w, 3).contiguous())
