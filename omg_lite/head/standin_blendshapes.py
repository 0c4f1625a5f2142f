"""The stand-in head's identity and expression blendshapes (FLAME's B_S and B_E, paper Sec. 3.1).

Each component l is a smooth displacement field D_l(p) in metres, evaluated at the rest
vertices, so that B(c) = sum_l c_l D_l is linear in the coefficients, like FLAME's. Fields are
sums of Gaussian bumps and smooth steps around facial features; at c_l = 1 (coefficients are
drawn ~ N(0, 1) as for FLAME) no vertex moves more than about 1 cm. Unlike FLAME's PCA the
components are not ordered by variance: drawing all of them ~ N(0, 1) at once gives strong,
caricatured (still head-like) faces; ~ N(0, 0.5) gives everyday ones.

Rules the fields keep:
- Identity fields move each eyeball rigidly with the field at its centre (eyes keep their size).
- Expression fields leave the eyeballs, the back of the head and the neck where they are.
- Fields that push lips apart or together use the lip side s in {+1 upper, -1 lower, 0} so
  the two copies of the mouth slit (which sit at the same place) move apart cleanly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from omg_lite.head.standin_shape import EYE_CENTRE, MOUTH_HALF_WIDTH

MOUTH_Y = -0.055
EX, EY = EYE_CENTRE[0], EYE_CENTRE[1]


@dataclass
class FieldInput:
    """Where a field is evaluated: rest positions and per-vertex attributes."""

    p: np.ndarray  # [V, 3] rest positions
    side: np.ndarray  # [V] lip side: +1 upper lip / mouth roof, -1 lower lip / floor, 0 else
    lid: np.ndarray  # [V, 3] the displacement that closes the eye openings

    @property
    def x(self) -> np.ndarray:
        return self.p[:, 0]

    @property
    def y(self) -> np.ndarray:
        return self.p[:, 1]

    @property
    def z(self) -> np.ndarray:
        return self.p[:, 2]


def _g(a: np.ndarray, c: float, s: float) -> np.ndarray:
    return np.exp(-0.5 * ((a - c) / s) ** 2)


def _step(e0: float, e1: float, a: np.ndarray) -> np.ndarray:
    s = np.clip((a - e0) / (e1 - e0), 0.0, 1.0)
    return s * s * (3 - 2 * s)


def _front_of(q: FieldInput, z0: float) -> np.ndarray:
    """Smooth mask of the part of the head in front of the plane z = z0."""
    return _step(z0 - 0.015, z0 + 0.015, q.z)


def _front(q: FieldInput) -> np.ndarray:
    """1 on the face, fading to 0 towards the ears and the back."""
    u = np.arctan2(q.x, q.z + 0.01)
    return 1.0 - _step(np.radians(45), np.radians(85), np.abs(u))


def _outward(q: FieldInput) -> np.ndarray:
    """Horizontal outward direction [V, 3] from the head's vertical axis."""
    d = np.stack([q.x, np.zeros_like(q.x), q.z + 0.01], -1)
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)


def _vec(dx=0.0, dy=0.0, dz=0.0, n=None) -> np.ndarray:
    n = n if n is not None else max(np.size(a) for a in (dx, dy, dz))
    return np.stack([np.broadcast_to(a, (n,)).astype(float) for a in (dx, dy, dz)], -1)


def _mouth(q: FieldInput, sx: float = 0.022, sy: float = 0.011) -> np.ndarray:
    return _g(q.x, 0.0, sx) * _g(q.y, MOUTH_Y, sy) * _front_of(q, 0.03)


def _corners(q: FieldInput, s: float = 0.011) -> np.ndarray:
    return _g(np.abs(q.x), MOUTH_HALF_WIDTH, s) * _g(q.y, MOUTH_Y, s) * _front_of(q, 0.03)


def _eyes(q: FieldInput, sx: float = 0.018, sy: float = 0.014) -> np.ndarray:
    return _g(np.abs(q.x), EX, sx) * _g(q.y, EY, sy) * _front_of(q, 0.02)


def _brows(q: FieldInput, inner: bool = False) -> np.ndarray:
    cx, sx = (0.014, 0.010) if inner else (0.032, 0.020)
    return _g(np.abs(q.x), cx, sx) * _g(q.y, 0.047, 0.011) * _front_of(q, 0.03)


def _cheeks(q: FieldInput, cy: float = -0.030, s: float = 0.016) -> np.ndarray:
    return _g(np.abs(q.x), 0.045, s) * _g(q.y, cy, s) * _front_of(q, 0.0)


def _lips(q: FieldInput) -> np.ndarray:
    return np.exp(-0.5 * ((q.x / 0.024) ** 4 + ((q.y - MOUTH_Y) / 0.011) ** 2)) * _front_of(q, 0.03)


def _below_mouth_sign(q: FieldInput) -> np.ndarray:
    """+1 above the mouth line, -1 below (the slit copies use their lip side)."""
    s = np.tanh((q.y - MOUTH_Y) / 0.002)
    return np.where(q.side != 0, q.side, s)


# --------------------------------------------------------------------------------------------
# Identity components B_S
# --------------------------------------------------------------------------------------------


def _head_width(q):
    return _vec(dx=0.06 * q.x * (1 - _step(-0.12, -0.17, q.y) * 0.6))


def _head_height(q):
    return _vec(dy=0.055 * q.y * _step(-0.01, 0.03, q.y))


def _head_depth(q):
    return _vec(dz=0.065 * q.z * _step(0.0, -0.05, q.z) * _step(-0.16, -0.09, q.y))


def _face_length(q):
    low = _step(0.01, -0.09, q.y) * (1 - _step(-0.13, -0.19, q.y))
    return _vec(dy=-0.007 * low * _step(-0.06, 0.02, q.z))


def _forehead(q):
    return _vec(dz=0.007 * _step(0.035, 0.085, q.y) * (1 - _step(0.095, 0.12, q.y)) * _front(q))


def _nose_length(q):
    m = _g(q.x, 0.0, 0.009) * _step(0.035, 0.0, q.y) * _step(-0.036, -0.018, q.y) * _front_of(q, 0.05)
    return _vec(dz=0.006 * m * _step(0.03, -0.012, q.y), dy=-0.0015 * m)


def _nose_width(q):
    m = _g(q.y, -0.018, 0.011) * _g(q.x, 0.0, 0.018) * _front_of(q, 0.05)
    return _vec(dx=0.0045 * np.tanh(q.x / 0.008) * m)


def _nose_bridge(q):
    m = _g(q.x, 0.0, 0.008) * _g(q.y, 0.012, 0.012) * _front_of(q, 0.05)
    return _vec(dz=0.004 * m)


def _jaw_width(q):
    m = _step(0.02, 0.06, np.abs(q.x)) * _g(q.y, -0.070, 0.022) * _step(-0.04, 0.0, q.z)
    return _vec(dx=0.008 * np.sign(q.x) * m)


def _cheek_fullness(q):
    return _outward(q) * (0.007 * _cheeks(q, -0.035, 0.018))[:, None]


def _chin_protrusion(q):
    return _vec(dz=0.006 * _g(q.x, 0.0, 0.02) * _g(q.y, -0.095, 0.015) * _front_of(q, 0.0))


def _chin_height(q):
    return _vec(dy=-0.006 * _g(q.x, 0.0, 0.025) * _step(-0.065, -0.095, q.y) * _step(-0.15, -0.12, q.y) * _front_of(q, 0.0))


def _eye_spacing(q):
    return _vec(dx=0.003 * np.sign(q.x) * _eyes(q, 0.016, 0.014))


def _eye_height(q):
    return _vec(dy=0.003 * _eyes(q, 0.020, 0.014))


def _eye_depth(q):
    return _vec(dz=-0.004 * _eyes(q, 0.020, 0.016))


def _brow_ridge(q):
    return _vec(dz=0.0045 * _brows(q))


def _lip_thickness(q):
    m = _lips(q)
    return _vec(dy=0.0025 * _below_mouth_sign(q) * m * _step(0.0005, 0.004, np.abs(q.y - MOUTH_Y) + (q.side != 0)), dz=0.003 * m)


def _mouth_width(q):
    return _vec(dx=0.0045 * np.tanh(q.x / 0.012) * _mouth(q, 0.03, 0.013))


def _cheekbones(q):
    return _outward(q) * (0.005 * _cheeks(q, 0.0, 0.014))[:, None]


def _neck_thickness(q):
    return _outward(q) * (0.007 * _step(-0.11, -0.15, q.y))[:, None]


def _ear_protrusion(q):
    m = _step(0.06, 0.08, np.abs(q.x)) * _g(q.y, 0.006, 0.03) * _g(q.z, -0.014, 0.025)
    return _vec(dx=0.006 * np.sign(q.x) * m)


def _temple_width(q):
    return _vec(dx=0.005 * np.sign(q.x) * _g(np.abs(q.x), 0.072, 0.015) * _g(q.y, 0.05, 0.025) * _step(-0.04, 0.0, q.z))


def _face_roundness(q):
    return _vec(dz=-0.007 * (q.x / 0.06) ** 2 * _front(q) * _step(0.06, 0.0, q.y) * _step(-0.13, -0.09, q.y))


def _philtrum_length(q):
    low = _step(-0.028, -0.05, q.y) * _step(-0.125, -0.1, q.y)
    return _vec(dy=-0.004 * low * _g(q.x, 0.0, 0.035) * _front_of(q, 0.02))


SHAPE_FIELDS: list[tuple[str, Callable[[FieldInput], np.ndarray]]] = [
    ("head_width", _head_width),
    ("face_length", _face_length),
    ("nose_length", _nose_length),
    ("jaw_width", _jaw_width),
    ("cheek_fullness", _cheek_fullness),
    ("head_height", _head_height),
    ("nose_width", _nose_width),
    ("chin_protrusion", _chin_protrusion),
    ("forehead_slope", _forehead),
    ("eye_spacing", _eye_spacing),
    ("lip_thickness", _lip_thickness),
    ("head_depth", _head_depth),
    ("brow_ridge", _brow_ridge),
    ("mouth_width", _mouth_width),
    ("nose_bridge", _nose_bridge),
    ("chin_height", _chin_height),
    ("cheekbones", _cheekbones),
    ("eye_depth", _eye_depth),
    ("neck_thickness", _neck_thickness),
    ("eye_height", _eye_height),
    ("ear_protrusion", _ear_protrusion),
    ("temple_width", _temple_width),
    ("face_roundness", _face_roundness),
    ("philtrum_length", _philtrum_length),
]

# --------------------------------------------------------------------------------------------
# Expression components B_E
# --------------------------------------------------------------------------------------------


def _smile(q):
    c = _corners(q, 0.012)
    ch = _cheeks(q, -0.028, 0.014)
    return _vec(dx=0.004 * np.sign(q.x) * c, dy=0.006 * c + 0.003 * ch, dz=-0.002 * c + 0.002 * ch)


def _frown(q):
    c = _corners(q, 0.011)
    return _vec(dy=-0.006 * c, dz=-0.001 * c)


def _brows_up(q):
    m = _brows(q) + 0.4 * _g(q.y, 0.07, 0.02) * _g(q.x, 0.0, 0.04) * _front_of(q, 0.03)
    up_lid = _eyes(q, 0.016, 0.008) * _step(EY, EY + 0.008, q.y)
    return _vec(dy=0.0055 * m + 0.0015 * up_lid)


def _brows_down(q):
    m = _brows(q, inner=True) + 0.5 * _brows(q)
    return _vec(dx=-0.002 * np.sign(q.x) * _brows(q, inner=True), dy=-0.005 * m, dz=0.0015 * m)


def _eyes_closed(q):
    return q.lid.copy()


def _eye_close_left(q):
    return q.lid * (q.x > 0)[:, None]


def _eye_close_right(q):
    return q.lid * (q.x < 0)[:, None]


def _pucker(q):
    m = _lips(q) * 1.0 + 0.4 * _mouth(q, 0.03, 0.016)
    return _vec(dx=-0.0035 * np.tanh(q.x / 0.015) * m, dz=0.0055 * m)


def _cheek_puff(q):
    return _outward(q) * (0.008 * _cheeks(q, -0.048, 0.016))[:, None]


def _mouth_stretch(q):
    m = _mouth(q, 0.03, 0.012)
    return _vec(dx=0.006 * np.tanh(q.x / 0.012) * m, dy=-0.0015 * _corners(q), dz=-0.0015 * m)


def _upper_lip_raise(q):
    m = _g(q.x, 0.0, 0.02) * _step(MOUTH_Y - 0.001, MOUTH_Y + 0.004, q.y + 0.006 * (q.side > 0)) * _g(q.y, MOUTH_Y + 0.006, 0.012)
    return _vec(dy=0.004 * m * _front_of(q, 0.03), dz=0.001 * m * _front_of(q, 0.03))


def _lower_lip_down(q):
    m = _g(q.x, 0.0, 0.018) * _step(MOUTH_Y + 0.001, MOUTH_Y - 0.004, q.y - 0.006 * (q.side < 0)) * _g(q.y, MOUTH_Y - 0.006, 0.012)
    return _vec(dy=-0.004 * m * _front_of(q, 0.03), dz=0.001 * m * _front_of(q, 0.03))


def _lips_roll_in(q):
    return _vec(dz=-0.004 * _lips(q))


def _nose_wrinkle(q):
    m = _g(q.x, 0.0, 0.016) * _g(q.y, -0.012, 0.012) * _front_of(q, 0.05)
    return _vec(dy=0.003 * m, dz=-0.001 * _g(q.x, 0.0, 0.008) * _g(q.y, 0.02, 0.006))


def _squint(q):
    low = _eyes(q, 0.014, 0.010) * _step(EY + 0.002, EY - 0.006, q.y)
    return q.lid * (0.45 * _step(EY + 0.002, EY - 0.002, q.y))[:, None] + _vec(dy=0.002 * low + 0.002 * _cheeks(q, -0.01, 0.014))


def _brow_inner_up(q):
    return _vec(dy=0.006 * _brows(q, inner=True))


def _mouth_left(q):
    return _vec(dx=0.005 * _mouth(q, 0.026, 0.014))


def _chin_raise(q):
    m = _g(q.x, 0.0, 0.02) * _g(q.y, -0.078, 0.014) * _front_of(q, 0.02)
    return _vec(dy=0.004 * m, dz=0.002 * m)


def _eyes_wide(q):
    up = _eyes(q, 0.015, 0.008) * _step(EY, EY + 0.007, q.y)
    return _vec(dy=0.0025 * up + 0.003 * _brows(q))


def _cheek_suck(q):
    return _outward(q) * (-0.005 * _cheeks(q, -0.045, 0.014))[:, None]


EXPRESSION_FIELDS: list[tuple[str, Callable[[FieldInput], np.ndarray]]] = [
    ("smile", _smile),
    ("brows_up", _brows_up),
    ("eyes_closed", _eyes_closed),
    ("mouth_frown", _frown),
    ("brows_down", _brows_down),
    ("pucker", _pucker),
    ("cheek_puff", _cheek_puff),
    ("mouth_stretch", _mouth_stretch),
    ("upper_lip_raise", _upper_lip_raise),
    ("lower_lip_down", _lower_lip_down),
    ("eye_close_left", _eye_close_left),
    ("eye_close_right", _eye_close_right),
    ("brow_inner_up", _brow_inner_up),
    ("squint", _squint),
    ("nose_wrinkle", _nose_wrinkle),
    ("mouth_left", _mouth_left),
    ("lips_roll_in", _lips_roll_in),
    ("chin_raise", _chin_raise),
    ("eyes_wide", _eyes_wide),
    ("cheek_suck", _cheek_suck),
]


def evaluate(fields, p: np.ndarray, side: np.ndarray, lid: np.ndarray, eyeball: np.ndarray, eye_centres: np.ndarray, rigid_eyes: bool) -> np.ndarray:
    """Stack the fields into blendshape directions [V, 3, L].

    eyeball: [V] 0 skin, 1 left eyeball, 2 right eyeball. With ``rigid_eyes`` an eyeball moves
    with the field at its centre, otherwise it stays still.
    """
    q = FieldInput(p, side, lid)
    qc = FieldInput(eye_centres, np.zeros(2), np.zeros((2, 3)))
    out = []
    for _, f in fields:
        d = f(q)
        dc = f(qc) if rigid_eyes else np.zeros((2, 3))
        for k in (1, 2):
            d[eyeball == k] = dc[k - 1]
        out.append(d)
    return np.stack(out, -1)
