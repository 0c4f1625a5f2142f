"""Hair outside the head mesh (``synth.hair``): a shell over the scalp that moves rigidly with the head.

The head mesh carries hair only as albedo, so its silhouette is the skull's. Real hair stands off
the skull, and that volume is what the shoulder branch's region M_s (portrait - head z-buffer
mask) holds above the head. With ``synth.hair`` on, each identity gets a shell over the head
model's scalp region, built once on the identity's neutral head (shape applied, zero expression,
pose and translation): each scalp vertex v with unit normal n_v is pushed out by

    h(v) = h_min + (h_max - h_min) * smoothstep(d(v) / taper) * (1 + bulk * smoothstep((y_v - y_eye) / 0.06)),

where d(v) is its distance to the nearest skin vertex outside the scalp (the hairline), so the
shell meets the skin at the hairline and stands ``h_max`` off the skull above it, a little more
on the crown. The shell's faces are the head's faces with all three corners on the scalp.

Per frame the shell moves with the neck joint's world transform T(x) = G_neck x + t_neck of the
head model's pass (``HeadOutput.transforms``), the same rigid motion the model's hair split
assumes (``omg_lite.model.shoulder_branch``). It is rendered through the scene's one z-buffer
(:mod:`.scene`), so the hair mask is exactly where the shell is the visible surface.

Hand-written: the geometry is a few tensor operations on the head mesh; no library builds hair.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from omg_lite.synth.scene import vertex_normals

H_MIN = 0.002  # metres: the shell's lift at the hairline (keeps it off the skin it meets)
TAPER = 0.02  # metres from the hairline over which the lift grows to h_max
NECK = 1  # FLAME's joint order: root, neck, jaw, eye L, eye R


@dataclass
class HairParams:
    """The random numbers behind one identity's hair volume (metres)."""

    thickness: float  # h_max: how far the shell stands off the skull above the hairline
    bulk: float  # extra lift on the crown, as a share of h_max

    def to_dict(self) -> dict:
        return asdict(self)


def sample_hair(rng: np.random.Generator) -> HairParams:
    """Draw one identity's hair: from close-cropped (8 mm) to full (30 mm), crown up to 60 % fuller."""
    return HairParams(thickness=float(rng.uniform(0.008, 0.030)), bulk=float(rng.uniform(0.0, 0.6)))


def hair_shell(
    p: HairParams,
    neutral: Tensor,  # [V, 3] the identity's neutral head, rest frame (zero pose and translation)
    faces: Tensor,  # [F, 3] the head model's faces
    regions: dict[str, Tensor],  # name -> [V] bool; needs "scalp" and "eyeballs"
) -> tuple[Tensor, Tensor]:  # -> vertices [Vr, 3] (rest frame), faces [Fr, 3] into them
    """The hair shell over the scalp (see the module docstring)."""
    scalp = regions["scalp"].to(neutral.device)
    if not bool(scalp.any()):
        raise ValueError("synth.hair: the head model has an empty scalp region; there is nothing to grow hair on")
    skin = ~scalp & ~regions["eyeballs"].to(neutral.device)
    keep = scalp[faces].all(1)  # [F] faces with every corner on the scalp
    used = torch.zeros_like(scalp)
    used[faces[keep].reshape(-1)] = True
    index = torch.full((neutral.shape[0],), -1, dtype=torch.long, device=neutral.device)
    index[used] = torch.arange(int(used.sum()), device=neutral.device)
    pts = neutral[used]  # [Vr, 3]
    n = vertex_normals(neutral[None], faces)[0][used]  # [Vr, 3] outward (the head mesh winds outward)
    d = torch.cdist(pts, neutral[skin]).amin(1)  # [Vr] distance to the hairline
    eye_y = neutral[regions["eyeballs"].to(neutral.device), 1].mean()
    grow = (d / TAPER).clamp(0, 1)
    crown = ((pts[:, 1] - eye_y) / 0.06).clamp(0, 1)
    smooth = lambda x: x * x * (3 - 2 * x)  # noqa: E731
    h = H_MIN + (p.thickness - H_MIN) * smooth(grow) * (1 + p.bulk * smooth(crown))  # [Vr]
    return pts + h[:, None] * n, index[faces[keep]]


def pose_shell(
    rest: Tensor,  # [Vr, 3] hair_shell's vertices (rest frame)
    transforms: Tensor,  # [B, J, 3, 4] HeadOutput.transforms of the frames
) -> Tensor:  # [B, Vr, 3] world
    """T_neck(x) = G_neck x + t_neck for every frame: the hair turns rigidly with the head."""
    G, t = transforms[:, NECK, :, :3], transforms[:, NECK, :, 3]  # [B, 3, 3], [B, 3]
    return rest[None] @ G.transpose(1, 2) + t[:, None]
