"""The shoulder branch (paper, Key Design 3: multi-region modelling).

FLAME has no shoulders, so they get their own Gaussians, predicted per pixel of the local
feature plane and kept where the shoulder mask M_s (portrait mask - head z-buffer mask, no
segmentation model; :mod:`omg_lite.geometry.shoulders`) is on:

    c_s, o_s, s_s, r_s, O_s = Flatten(Conv(F_local) * M_s)
    p_s = p^_s + O_s n_s,         O_s = delta_s tanh(raw)

where p^_s is the pixel's point on an image-aligned plane in the source view and n_s the
plane's normal. The attributes use the head's activations (:func:`gaussian_heads.activate`)
with the spacing of neighbouring plane points as the base size.

**The same footprint at any output size.** The renderer widens every projected Gaussian by a
fixed 0.3 px^2 (``splat.project.EPS2D``), which in world units at depth z through a camera of
focal f is sigma^2 = 0.3 (z / f)^2: it shrinks as the output grows. Training renders the source's
size only, and nothing there keeps the shoulder Gaussians as wide as their d x d cells: a trained
model can shrink them far below d (the lite checkpoint: about 0.5 mm for d = 4 mm) and still look
filled at its training size, because the dilation covers the gaps there; rendered larger, the
shirt became a dotted grid. So the shoulders keep the world-space footprint of the source view
(Mip-Splatting's 3D filter, with the sampling rate of the one view the model saw): at
reconstruction

    sigma_src^2 = 0.3 (z_p / f_src)^2                          (``footprint``, world units^2)

and at rendering, for a Gaussian at camera depth z through a camera of focal f,

    Sigma_s' = Sigma_s + max(0, sigma_src^2 - 0.3 (z / f)^2) I,   s_s' = sqrt(s_s^2 + that)  per axis

(an isotropic term commutes with the rotation, so only the scales change; :func:`widened`). At the
source's size the term is zero (renders and training unchanged), at a larger size it tops the
footprint up to the source's, so coverage does not depend on the output size. The opacity is kept:
a surface sample must stay opaque when widened. No learned parameter is added: every checkpoint
loads and gives the same renders at its own size.

The region M_s holds the torso and also what belongs to the head but lies outside the head
mesh (hair, a hat). The torso stays fixed in world space as in the paper; what grows from the
scalp moves rigidly with the head (``attached``, :func:`head_attached`): the points of M_s

    above the neck joint (y > y_neck) and within 1.3 head half-widths of the head's centre (so
    the tops of raised shoulders stay), and either connected, through such points on the grid,
    to one above the head's mid-height (y > (y_neck + y_top) / 2), or in a component of M_s
    (8-connected on the grid) that lies wholly above the neck joint

Hair hangs from the crown, so it is connected to M_s above the mid-height; a collar or suit ring
that rises beside the chin is cut off from it by the face (the head mask) and stays with the
torso, which it joins below the neck. An island of M_s above the neck has no torso to belong
to: it is the side of a face, a cheek or an ear that the head mesh does not cover (a real face
is rarely the mesh's width). Left in world space it floated beside the turning head (seen on a
photo, see the README), so it moves with the head too.

The attached points move with the neck joint's world transform
T(x) = G_neck x + t (:func:`omg_lite.model.omg.neck_transform`, from the head model's joint transforms):

    p_d = T_d(T_s^{-1}(p_s)),    q_d = q(G_neck,d) * conj(q(G_neck,s)) * q_s

(OMGModel keeps T_s^{-1}(p_s) and conj(q(G_neck,s)) q_s as ``rest_means`` / ``rest_quats``.)

Flatten keeps the masked pixels of each batch element in raster order and pads the batch to
its largest count with invisible Gaussians (opacity 0, ``valid`` false), so N_s is the number
of masked pixels (the largest one in a batch).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor, nn

from omg_lite.geometry.camera import Camera
from omg_lite.model.gaussian_heads import GaussianAttributes, activate, attribute_width
from omg_lite.splat.project import EPS2D


@dataclass
class ShoulderGaussians:
    means: Tensor  # [B, N_s, 3] world, in the source frame (the torso's stay there)
    attributes: GaussianAttributes  # N_s Gaussians
    valid: Tensor  # [B, N_s] bool, false for padding (whose opacity is 0)
    attached: Tensor | None = None  # [B, N_s] bool: grows from the scalp (head_attached), moves rigidly with the head
    rest_means: Tensor | None = None  # [B, N_s, 3] T_s^{-1}(p_s): means in the neck joint's rest frame
    rest_quats: Tensor | None = None  # [B, N_s, 4] conj(q(G_neck,s)) q_s: rotations in that frame
    footprint: Tensor | None = None  # [B] sigma_src^2 = 0.3 (z_p / f_src)^2, the source view's dilation in world units^2

    def replace(self, **changes) -> "ShoulderGaussians":
        return dataclasses.replace(self, **changes)


HAIR_WIDTH = 1.3  # head-attached points lie within this many half-widths of the head's centre


def head_attached(
    mask: Tensor,  # [B, h, w] bool, M_s on the grid
    points: Tensor,  # [B, h, w, 3] world, the grid's points on the plane (y up)
    neck_y: Tensor,  # [B] world height of the neck joint
    head_x: Tensor,  # [B, V'] the head's vertices' x, its neck left out (its horizontal extent)
    top_y: Tensor,  # [B] the head's highest point
) -> Tensor:  # [B, h, w] bool
    """The grid points of M_s that belong to the head (the module docstring's rule), 8-connected on the grid.

    Decided on the plane points p^_s (before the offset O_s, which moves along n_s); the labelling runs
    on the CPU (scipy.ndimage.label), once per reconstruction."""
    centre, half = (head_x.amax(1) + head_x.amin(1)) / 2, (head_x.amax(1) - head_x.amin(1)) / 2  # [B]
    y, x = points[..., 1], points[..., 0]
    near = mask & (y > neck_y[:, None, None]) & ((x - centre[:, None, None]).abs() <= HAIR_WIDTH * half[:, None, None])
    seed = near & (y > ((neck_y + top_y) / 2)[:, None, None])
    grounded = mask & (y <= neck_y[:, None, None])  # M_s at or below the neck joint: where the torso is
    out = torch.zeros_like(near)
    eight = np.ones((3, 3), bool)
    for b in range(near.shape[0]):
        near_b = near[b].cpu().numpy()
        labels, _ = ndimage.label(near_b, structure=eight)
        hit = np.unique(labels[seed[b].cpu().numpy()])
        whole, _ = ndimage.label(mask[b].cpu().numpy(), structure=eight)
        torso = np.unique(whole[grounded[b].cpu().numpy()])
        island = (whole > 0) & ~np.isin(whole, torso)  # M_s components wholly above the neck joint
        out[b] = torch.from_numpy(np.isin(labels, hit[hit > 0]) | (near_b & island)).to(out.device)
    return out


def source_footprint(
    plane_depth: Tensor,  # [B] z_p
    camera: Camera,  # the source view, at the size the model sees
) -> Tensor:  # [B] sigma_src^2
    """The renderer's 0.3 px^2 dilation of the source view in world units^2 at the shoulder plane."""
    return EPS2D * (plane_depth / _focal(camera)) ** 2


def widened(
    scales: Tensor,  # [B, N_s, 3] s_s
    footprint: Tensor,  # [B] sigma_src^2
    depth: Tensor,  # [B, N_s] z of each Gaussian in the rendering camera
    camera: Camera,  # the rendering camera, batch B
) -> Tensor:  # [B, N_s, 3] s_s'
    """s_s' = sqrt(s_s^2 + max(0, sigma_src^2 - 0.3 (z / f)^2)): the source's world footprint at this camera's size."""
    extra = (footprint[:, None] - EPS2D * (depth / _focal(camera)[:, None]) ** 2).clamp_min(0)  # [B, N_s]
    return (scales**2 + extra[..., None]).sqrt()


def _focal(camera: Camera) -> Tensor:  # [B] sqrt(f_x f_y), pixels
    return (camera.K[:, 0, 0] * camera.K[:, 1, 1]).sqrt()


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
