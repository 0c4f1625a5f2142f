"""Vertex regions of a head mesh (scalp, face, neck, lips, brows, nose, eyes ...) from geometry.

The synthetic world paints skin, hair, lips, brows and eyes by region. Regions are derived
from rest positions alone, in the stand-in's frame: a FLAME mesh is first mapped into it by the
similarity that takes its eyeball centres onto the stand-in's (scale s = 0.064 / |c_L - c_R|),
so on a FLAME file the regions are approximate.
"""

from __future__ import annotations

import numpy as np

from omg_lite.head.standin_shape import EYE_CENTRE, MOUTH_HALF_WIDTH, _ears

MOUTH_Y = -0.055
EYE_MID = np.array([0.0, EYE_CENTRE[1], EYE_CENTRE[2]])
EYE_DISTANCE = 2 * EYE_CENTRE[0]


def to_standin_frame(verts: np.ndarray, eye_left: np.ndarray, eye_right: np.ndarray) -> np.ndarray:
    """Map vertices [V, 3] so that the eye centres land on the stand-in's (translation + scale)."""
    mid = 0.5 * (eye_left + eye_right)
    s = EYE_DISTANCE / max(np.linalg.norm(eye_left - eye_right), 1e-9)
    return (verts - mid) * s + EYE_MID


def regions_from_geometry(
    verts: np.ndarray,  # [V, 3] rest positions in the stand-in's frame
    eyeball: np.ndarray,  # [V] bool
    mouth_interior: np.ndarray | None = None,  # [V] bool
    lip_edge: np.ndarray | None = None,  # [V] bool, the mouth slit's vertices
    almond: np.ndarray | None = None,  # [V] eye-opening mask in [0, 1]
    eye_centres: np.ndarray | None = None,  # [2, 3] eyeball centres (their poles look along +z)
) -> dict[str, np.ndarray]:
    """Boolean masks [V] per region name."""
    x, y, z = verts.T
    ax = np.abs(x)
    V = len(verts)
    inner = mouth_interior if mouth_interior is not None else np.zeros(V, bool)
    skin = ~eyeball & ~inner
    u = np.degrees(np.abs(np.arctan2(x, z + 0.01)))
    hairline = np.interp(u, [0, 30, 55, 75, 95, 120, 180], [0.077, 0.076, 0.068, 0.048, 0.032, -0.020, -0.060])
    ears = skin & (_ears(verts) > 0.003)
    scalp = skin & (y > hairline) & ~ears
    neck_top = -0.113 + 0.040 * np.clip((0.02 - z) / 0.07, 0.0, 1.0)
    neck = skin & ~scalp & (y < neck_top)
    face = skin & ~scalp & ~neck & ~ears & (u < 100)
    lips = skin & (z > 0.05) & (((x / (MOUTH_HALF_WIDTH + 0.0015)) ** 2 + ((y - MOUTH_Y) / 0.0125) ** 2) < 1)
    if lip_edge is not None:
        lips |= lip_edge & skin
    brow_y = 0.048 + 0.005 * (1 - ((ax - 0.030) / 0.022) ** 2)  # an arch over each eye
    brow_half = 0.0062 - 0.0030 * np.clip((ax - 0.012) / 0.042, 0.0, 1.0)  # thick inside, thin outside
    brows = skin & (ax > 0.011) & (ax < 0.055) & (np.abs(y - brow_y) < brow_half) & (z > 0.05)
    nose = skin & (ax < 0.021) & (y > -0.030) & (y < 0.032) & (z > 0.085 - 0.2 * ax)
    out = {
        "scalp": scalp,
        "face": face,
        "neck": neck,
        "ears": ears,
        "lips": lips,
        "brows": brows,
        "nose": nose,
        "eyeballs": eyeball.copy(),
        "mouth_interior": inner.copy(),
    }
    if eye_centres is not None:
        # Iris and pupil: eyeball vertices within 32 / 13 degrees of the forward axis.
        cos_angle = np.full(V, -1.0)
        for c in eye_centres:
            d = verts - c
            own = eyeball & (np.sign(x) == np.sign(c[0]))
            cos_angle[own] = d[own, 2] / np.maximum(np.linalg.norm(d[own], axis=1), 1e-9)
        out["irises"] = eyeball & (cos_angle > np.cos(np.radians(32)))
        out["pupils"] = eyeball & (cos_angle > np.cos(np.radians(13)))
    if almond is not None:
        out["eye_openings"] = skin & (almond > 0.02)
    return out
