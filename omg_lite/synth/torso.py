"""Shoulders and upper torso: a procedural mesh that is NOT part of the head model.

FLAME ends at the neck, but portraits show shoulders (the paper's Key Design 3 models them with
their own Gaussians, kept where the portrait mask is on and the head's z-buffer is off). The
synthetic world therefore adds a torso of its own: a stack of rings under the neck, fixed in the
world for a whole clip, so it does not follow the head's neck or global pose, as in real
portraits where the head turns on the shoulders.

A point at angle t (front at t = pi/2) hanging a drop d below the collar lies on the
superellipse

    x = a(d) sgn(cos t) |cos t|^(2/n(d)),   z = b(d) sgn(sin t) |sin t|^(2/n(d)),

around the collar centre, with the half-width a(d) rising along a smoothstep from the neck to
the shoulder tips (vertical neck, sloping trapezius, rounded shoulder, vertical arm), the
half-depth b(d) rising from the neck to the chest, and n(d) from 2 (round neck) to 3 (boxy
chest); the collar rises at the sides and back. The top ring is a collar around the neck base;
the bottom ring lies below the image. Clothing covers it below a random neckline (round or V);
skin shows above.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from omg_lite.synth.appearance import low_frequency

N_RINGS = 48  # rings from the collar down
N_SKIN = 8  # of which between the collar and the neckline
N_AROUND = 128  # vertices per ring
MIN_DIP = 0.002  # the neckline lies at least this far below the collar (metres)
LENGTH = 0.45  # metres from the collar to the bottom ring


@dataclass
class TorsoParams:
    """The random numbers behind one identity's shoulders (metres, radians, sRGB)."""

    collar_centre: list[float]  # [3] centre of the top ring, world
    collar_half: list[float]  # [2] half-width (x) and half-depth (z) of the top ring
    shoulder_half_width: float  # half the shoulder breadth, a(d) at the shoulder tips
    shoulder_drop: float  # how far the shoulder tips lie below the collar
    collar_rise: float  # how much higher the collar sits at the sides and back than at the front
    chest_half_depth: float  # b(d) at the chest
    chest_forward: float  # how far the chest's centre lies in front of the collar's
    yaw: float  # the torso's turn about the vertical axis through the collar centre
    clothing: list[float]  # [3] sRGB
    neckline_depth: float  # how far the neckline dips below the collar at the front
    neckline_v: bool  # a V neckline (else round)

    def to_dict(self) -> dict:
        return asdict(self)


def sample_torso(
    rng: np.random.Generator,
    neck: Tensor,  # [N, 3] the neutral head's neck vertices (world)
    collar_overlap: float = 0.055,
) -> TorsoParams:
    """Draw shoulders that fit the neck: the collar hugs the neck ``collar_overlap`` above its end."""
    if neck.ndim != 2 or neck.shape[0] < 3 or neck.shape[1] != 3:
        raise ValueError(f"sample_torso: need at least 3 neck vertices as [N, 3], got {tuple(neck.shape)}")
    y_end = float(neck[:, 1].min())
    collar_y = y_end + collar_overlap
    band = neck[(neck[:, 1] - collar_y).abs() < 0.012]
    if len(band) < 3:
        band = neck
    lo, hi = band.amin(0), band.amax(0)
    centre = ((lo + hi) / 2).tolist()
    centre[1] = collar_y
    margin = 0.004
    half = [float(hi[0] - lo[0]) / 2 + margin, float(hi[2] - lo[2]) / 2 + margin]
    h, s, v = rng.uniform(0, 1), rng.uniform(0.15, 0.7), rng.uniform(0.15, 0.85)
    v_neck = bool(rng.uniform() < 0.3)
    return TorsoParams(
        collar_centre=centre,
        collar_half=half,
        shoulder_half_width=float(rng.uniform(0.18, 0.23)),
        shoulder_drop=float(rng.uniform(0.065, 0.09)),
        collar_rise=float(rng.uniform(0.015, 0.03)),
        chest_half_depth=float(rng.uniform(0.095, 0.125)),
        chest_forward=float(rng.uniform(0.0, 0.025)),
        yaw=float(np.radians(rng.uniform(-12.0, 12.0))),
        clothing=list(colorsys.hsv_to_rgb(h, s, v)),
        neckline_depth=float(rng.uniform(0.05, 0.1) if v_neck else rng.uniform(0.01, 0.05)),
        neckline_v=v_neck,
    )


def _smoothstep(x: Tensor) -> Tensor:
    x = x.clamp(0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def torso_mesh(p: TorsoParams, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    """The torso surface: vertices [V, 3] (world), faces [F, 3], skin weight [V] (1 above the neckline).

    The rings follow the neckline: rings 0 .. N_SKIN - 1 share the band between the collar and
    the neckline, ring N_SKIN repeats the last of them (a zero-area seam) and the rest reach down
    to LENGTH, so the skin / clothing edge is a crisp curve whatever the mesh resolution.
    """
    t = torch.arange(N_AROUND, dtype=torch.float64) * (2 * math.pi / N_AROUND)  # [A] angle, front at pi/2
    off = torch.remainder(t - math.pi / 2 + math.pi, 2 * math.pi) - math.pi  # [A] angle from the front
    if p.neckline_v:
        dip = p.neckline_depth * (1 - off.abs() / 0.9).clamp_min(0)
    else:
        dip = p.neckline_depth * torch.cos(off).clamp_min(0) ** 2
    dip = dip.clamp_min(MIN_DIP)[None]  # [1, A] drop of the neckline below the collar
    above = torch.linspace(0.0, 1.0, N_SKIN, dtype=torch.float64)[:, None] * dip  # [N_SKIN, A]
    s = torch.linspace(0.0, 1.0, N_RINGS - N_SKIN, dtype=torch.float64)[:, None]
    below = dip + (LENGTH - dip) * s**1.6  # [R - N_SKIN, A], dense near the neckline
    d = torch.cat([above, below])  # [R, A] drop of each vertex below the collar

    u = _smoothstep(d / p.shoulder_drop) ** 0.85
    a = p.collar_half[0] + (p.shoulder_half_width - p.collar_half[0]) * u  # [R, A] half-width
    a = a * (1 + 0.05 * (d - p.shoulder_drop).clamp_min(0) / 0.1)
    b = p.collar_half[1] + (p.chest_half_depth - p.collar_half[1]) * _smoothstep(d / (1.4 * p.shoulder_drop))
    n = 2.0 + _smoothstep(d / p.shoulder_drop)  # superellipse exponent
    fwd = p.chest_forward * _smoothstep(d / (2 * p.shoulder_drop))

    cos, sin = torch.cos(t)[None], torch.sin(t)[None]  # [1, A]
    x = a * cos.sign() * cos.abs() ** (2 / n)  # [R, A]
    z = b * sin.sign() * sin.abs() ** (2 / n) + fwd
    # the collar line rises at the sides and back of the neck; lower rings are level
    y = -d + p.collar_rise * (1 - sin.clamp_min(0) ** 2) * (1 - _smoothstep(d / p.shoulder_drop))
    cy, sy = math.cos(p.yaw), math.sin(p.yaw)
    c = torch.tensor(p.collar_centre, dtype=torch.float64)
    verts = torch.stack([cy * x + sy * z + c[0], y + c[1], -sy * x + cy * z + c[2]], -1).reshape(-1, 3)

    # quads between rings k, k+1 and angles m, m+1, split into two triangles (outward winding)
    k, m = torch.meshgrid(torch.arange(N_RINGS - 1), torch.arange(N_AROUND), indexing="ij")
    v00 = k * N_AROUND + m
    v01 = k * N_AROUND + (m + 1) % N_AROUND
    v10 = v00 + N_AROUND
    v11 = v01 + N_AROUND
    faces = torch.cat([torch.stack([v00, v01, v10], -1), torch.stack([v01, v11, v10], -1)]).reshape(-1, 3)
    skin = (torch.arange(N_RINGS) < N_SKIN)[:, None].expand(N_RINGS, N_AROUND).reshape(-1)  # [V]
    return verts.to(dtype), faces, skin.to(dtype)


def torso_albedo(
    p: TorsoParams,
    verts: Tensor,  # [V, 3] from torso_mesh
    skin_weight: Tensor,  # [V] from torso_mesh
    skin: list[float],  # [3] the identity's skin colour (sRGB)
    wave: tuple[list, list, list],  # the identity's low-frequency variation (freq, phase, amp)
) -> Tensor:  # [V, 3] sRGB albedo
    """Clothing below the neckline, the identity's skin above it, both with low-frequency variation."""
    colour = lambda c: torch.tensor(c, dtype=verts.dtype, device=verts.device)  # noqa: E731
    vary = low_frequency(verts, *wave)[:, None]
    cloth = colour(p.clothing) * low_frequency(verts * 2.0, *wave)[:, None]
    albedo = cloth + skin_weight[:, None] * (colour(skin) * vary - cloth)
    return albedo.clamp(0.0, 1.0)
