"""The stand-in head's surface: a lofted skull-and-neck grid sculpted into a face.

FLAME is licence-gated, so omg_lite ships a procedural head in FLAME's units and axes (metres,
+y up, the face towards +z, the subject's left eye at +x) that plays FLAME's role offline
(paper Sec. 3.1 builds on FLAME; nothing here comes from FLAME's data).

Construction, all closed-form and deterministic:

1. Loft. A grid of rows (crown -> neck bottom) and columns (azimuth u, 0 = facing +z). Each of
   eight key azimuths carries a profile of control points (rho_k, y_k), the horizontal distance
   from the vertical axis and the height; profiles are interpolated around u and along the row
   parameter t with uniform Catmull-Rom splines:

       p(u, t) = (rho(u, t) sin u, y(u, t), rho(u, t) cos u)

   Row 0 collapses to the crown vertex, the last row is the neck's open boundary. Columns are
   denser in front (u = s - a sin s) and rows denser at the eyes and the mouth.
2. Relief. A height field h(x, y) of smooth bumps and dents (nose, brows, eye sockets,
   cheekbones, lips, chin) is added along +z on the front, faded out towards the ears; ears are
   bumps along the outward normal on the sides.
3. Eyes. Each eyeball is a UV sphere (its own closed mesh, pole towards +z). The lids are the
   skin lifted just in front of the eyeball, z_lid = z_ball + 1.5 mm, except inside an almond
   opening A(x, y) where the skin sinks behind the eyeball so that it shows through.
4. Mouth. The grid row at the mouth is split between the corners (upper-lip and lower-lip
   copies of each vertex) and the slit is closed from inside by a pouch (the mouth cavity)
   ending in a fan, so the skin stays one manifold whose only boundary is the neck.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ---------------------------------------------------------------------------------------------
# Loft: key profiles (rho, y) in metres at the key azimuths 0, 45, 90, 135, 180 degrees
# (mirrored for 225 .. 315). Control index k names the same feature on every profile:
# 0 crown, 1 upper skull, 2 forehead top, 3 brows, 4 eyes / ears, 5 nose / cheeks, 6 mouth,
# 7 chin, 8 under the chin, 9 throat, 10 neck bottom.
# ---------------------------------------------------------------------------------------------
KEY_PROFILES = {
    0: [(0.0, 0.125), (0.055, 0.113), (0.083, 0.082), (0.092, 0.046), (0.091, 0.020), (0.093, -0.020), (0.092, -0.055), (0.083, -0.094), (0.050, -0.118), (0.040, -0.136), (0.045, -0.200)],
    45: [(0.0, 0.125), (0.057, 0.112), (0.083, 0.080), (0.088, 0.046), (0.088, 0.020), (0.087, -0.020), (0.080, -0.055), (0.066, -0.090), (0.050, -0.112), (0.047, -0.136), (0.052, -0.200)],
    90: [(0.0, 0.125), (0.057, 0.111), (0.075, 0.080), (0.079, 0.046), (0.078, 0.020), (0.076, -0.020), (0.071, -0.052), (0.065, -0.080), (0.060, -0.102), (0.058, -0.132), (0.061, -0.200)],
    135: [(0.0, 0.125), (0.062, 0.110), (0.086, 0.076), (0.096, 0.040), (0.095, 0.010), (0.088, -0.022), (0.076, -0.050), (0.067, -0.075), (0.065, -0.100), (0.065, -0.132), (0.068, -0.200)],
    180: [(0.0, 0.125), (0.066, 0.108), (0.096, 0.075), (0.108, 0.035), (0.106, 0.000), (0.097, -0.030), (0.082, -0.055), (0.075, -0.075), (0.073, -0.100), (0.073, -0.132), (0.076, -0.200)],
}
T_MOUTH = 6.0  # control index of the mouth row
N_COLS = 72
COL_WARP = 0.62  # u = s - COL_WARP sin s: columns ~2.6x denser in front than at the back
N_ROWS = 60
# Row density along t (control index): (t0, t1, relative density).
ROW_DENSITY = [(0.0, 2.0, 0.45), (2.0, 2.6, 1.0), (2.6, 3.2, 1.7), (3.2, 4.0, 2.6), (4.0, 5.4, 1.2), (5.4, 6.8, 2.0), (6.8, 8.6, 1.1), (8.6, 10.0, 0.45)]

# Eyes (left eye at +x; the right one is mirrored).
EYE_CENTRE = (0.032, 0.030, 0.060)
EYE_RADIUS = 0.0120
EYE_RINGS, EYE_SEGMENTS = 12, 18
LID_GAP = 0.0015  # lids sit this far in front of the eyeball
ALMOND_HALF_WIDTH = 0.0145
ALMOND_UP, ALMOND_DOWN = 0.0058, 0.0042  # opening above / below the eye centre
ALMOND_EDGE = 0.0009  # softness of the lid margin

# Mouth.
MOUTH_HALF_WIDTH = 0.025
POUCH = [(0.003, 0.0025, 0.97), (0.012, 0.008, 0.90), (0.024, 0.011, 0.72), (0.034, 0.008, 0.45)]  # (depth, half-height, x scale)


@dataclass
class StandinSurface:
    """The stand-in's rest mesh and the bookkeeping the rest of the stand-in needs."""

    vertices: np.ndarray  # [V, 3]
    faces: np.ndarray  # [F, 3]
    part: np.ndarray  # [V] 0 skin, 1 mouth pouch, 2 left eyeball, 3 right eyeball
    grid_t: np.ndarray  # [V] row parameter t of skin vertices (NaN elsewhere)
    grid_u: np.ndarray  # [V] azimuth u of skin vertices (NaN elsewhere)
    lip_side: np.ndarray  # [V] +1 upper lip / pouch roof, -1 lower lip / pouch floor, 0 else
    upper_slit: np.ndarray  # [n + 2] vertex ids along the upper lip's edge, corner to corner (-x -> +x)
    lower_slit: np.ndarray  # [n + 2] vertex ids along the lower lip's edge, corner to corner (-x -> +x)
    eye_centres: np.ndarray  # [2, 3] left (+x), right (-x)
    almond: np.ndarray  # [V] opening mask A in [0, 1] of the skin (1 inside the eye openings)
    lid_lift: np.ndarray  # [V, 3] displacement that closes the eyes (skin inside the almonds -> lids)


def _catmull_rom(p0, p1, p2, p3, s):
    """Uniform Catmull-Rom between p1 and p2 at s in [0, 1] (broadcasts)."""
    s2, s3 = s * s, s * s * s
    return 0.5 * ((2 * p1) + (-p0 + p2) * s + (2 * p0 - 5 * p1 + 4 * p2 - p3) * s2 + (-p0 + 3 * p1 - 3 * p2 + p3) * s3)


def _profiles_at(u: np.ndarray) -> np.ndarray:
    """Control profiles at azimuths u [Nu] -> [Nu, K, 2] (periodic Catmull-Rom over the keys)."""
    keys = [KEY_PROFILES[a] for a in (0, 45, 90, 135, 180)]
    keys = keys + keys[3:0:-1]  # 225, 270, 315 mirror 135, 90, 45
    P = np.asarray(keys, dtype=np.float64)  # [8, K, 2]
    x = (np.mod(u, 2 * np.pi) / (np.pi / 4))
    i = np.floor(x).astype(int)
    s = (x - i)[:, None, None]
    g = lambda k: P[np.mod(i + k, 8)]  # noqa: E731
    return _catmull_rom(g(-1), g(0), g(1), g(2), s)


def _along_t(prof: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Evaluate profiles [Nu, K, 2] at row parameters t [Nv] -> [Nu, Nv, 2]."""
    K = prof.shape[1]
    first = prof[:, 1:2] * np.array([-1.0, 1.0])  # crown ghost: the profile continues over the pole
    last = 2 * prof[:, -1:] - prof[:, -2:-1]
    ext = np.concatenate([first, prof, last], axis=1)  # [Nu, K + 2, 2]
    i = np.clip(np.floor(t).astype(int), 0, K - 2)
    s = (t - i)[None, :, None]
    return _catmull_rom(ext[:, i], ext[:, i + 1], ext[:, i + 2], ext[:, i + 3], s)


def _row_params() -> np.ndarray:
    """Row parameters t [N_ROWS] from the piecewise density, with the mouth row exactly at T_MOUTH."""
    fine = np.linspace(0.0, 10.0, 4001)
    dens = np.zeros_like(fine)
    for t0, t1, d in ROW_DENSITY:
        dens[(fine >= t0) & (fine <= t1)] = d
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(fine))])
    t = np.interp(np.linspace(0, cdf[-1], N_ROWS), cdf, fine)
    t[np.argmin(np.abs(t - T_MOUTH))] = T_MOUTH
    return t


def _col_params() -> np.ndarray:
    s = np.linspace(-np.pi, np.pi, N_COLS, endpoint=False) + np.pi / N_COLS
    return s - COL_WARP * np.sin(s)


def _bump(x, y, cx, cy, sx, sy):
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _smoothstep(e0, e1, x):
    s = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return s * s * (3 - 2 * s)


def relief(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Height field h(x, y) of the face in metres (added along +z on the front)."""
    ax = np.abs(x)
    h = np.zeros_like(x)
    # Nose: a ridge from the nasion (y 0.028) to the tip (y -0.013), narrow at the bridge.
    tip_y, root_y = -0.013, 0.030
    along = np.clip((root_y - y) / (root_y - tip_y), 0.0, 1.0)
    height = 0.0025 + 0.0215 * along**1.45
    width = 0.0055 + 0.0045 * along**2
    below = _smoothstep(tip_y - 0.002, tip_y - 0.016, y)  # fades under the tip to the subnasale
    above = _smoothstep(root_y + 0.012, root_y - 0.004, y)
    h += height * np.exp(-0.5 * (x / width) ** 2) * (1 - below) * above
    h += 0.006 * _bump(x, y, 0.0, tip_y - 0.002, 0.0075, 0.0065)  # rounded tip
    h += 0.0085 * _bump(ax, y, 0.0155, -0.020, 0.0060, 0.0055)  # alae
    h -= 0.004 * _bump(ax, y, 0.0100, -0.027, 0.0030, 0.0022)  # nostril shadow under the alae
    # Brows and forehead.
    h += 0.0045 * _bump(ax, y, 0.030, 0.046, 0.020, 0.0065)
    h += 0.0030 * _bump(x, y, 0.0, 0.043, 0.010, 0.008)  # glabella
    # Eye sockets and cheekbones.
    h -= 0.0120 * _bump(ax, y, EYE_CENTRE[0], EYE_CENTRE[1] + 0.001, 0.0155, 0.0105)
    h += 0.0060 * _bump(ax, y, 0.046, -0.006, 0.014, 0.011)
    h -= 0.0025 * _bump(ax, y, 0.030, -0.030, 0.010, 0.012)  # under-cheek hollow
    # Lips, the mouth line and the corners.
    mouth_y = -0.055
    h += 0.0055 * _bump(x, y, 0.0, mouth_y + 0.0065, 0.017, 0.0045)
    h += 0.0048 * _bump(x, y, 0.0, mouth_y - 0.0075, 0.016, 0.0050)
    h += 0.0020 * _bump(x, y, 0.0, mouth_y + 0.016, 0.008, 0.006)  # philtrum
    h -= 0.0022 * _bump(x, y, 0.0, mouth_y, 0.020, 0.0018) * (ax < MOUTH_HALF_WIDTH + 0.004)
    h -= 0.0040 * _bump(ax, y, MOUTH_HALF_WIDTH + 0.002, mouth_y, 0.0045, 0.0050)
    # Chin and the groove above it.
    h -= 0.0030 * _bump(x, y, 0.0, -0.075, 0.012, 0.0035)
    h += 0.0060 * _bump(x, y, 0.0, -0.092, 0.014, 0.0090)
    return h


def front_fade(u: np.ndarray) -> np.ndarray:
    """1 on the face (|u| < 40 deg), 0 behind 80 deg."""
    return 1.0 - _smoothstep(np.radians(40.0), np.radians(80.0), np.abs(u))


def _ears(p: np.ndarray) -> np.ndarray:
    """Outward bump of the ears [V] (metres): an oval attached at its front edge and lifting
    towards the back, with a soft raised rim (the side grid is ~7 mm, so no finer detail)."""
    ax = np.abs(p[:, 0])
    y, z = p[:, 1], p[:, 2]
    cy, cz = 0.004, -0.016
    r = np.sqrt(((y - cy) / 0.031) ** 2 + ((z - cz) / 0.018) ** 2)
    side = _smoothstep(0.045, 0.065, ax)
    back = _smoothstep(-1.4, 0.9, (cz - z) / 0.018)  # 0 at the front edge, 1 at the back
    lift = (0.002 + 0.010 * back) * (1 - _smoothstep(0.75, 1.1, r))
    rim = 0.003 * np.exp(-0.5 * ((r - 0.75) / 0.15) ** 2) * back
    return side * (lift + rim)


def _eye_sphere(centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A UV sphere whose pole looks along +z, rings denser at the front (iris, pupil):
    vertices [2 + (R - 1) S, 3], faces."""
    R, S = EYE_RINGS, EYE_SEGMENTS
    theta = np.pi * np.linspace(0, 1, R + 1)[1:-1] ** 1.5
    phi = np.linspace(0, 2 * np.pi, S, endpoint=False)
    st, ct = np.sin(theta)[:, None], np.cos(theta)[:, None]
    ring = np.stack([st * np.cos(phi), st * np.sin(phi), ct * np.ones_like(phi)], -1).reshape(-1, 3)
    verts = np.concatenate([[[0, 0, 1.0]], ring, [[0, 0, -1.0]]]) * EYE_RADIUS + centre
    faces = [[0, 1 + j, 1 + (j + 1) % S] for j in range(S)]
    for r in range(R - 2):
        for j in range(S):
            a, b = 1 + r * S + j, 1 + r * S + (j + 1) % S
            faces += [[a, a + S, b + S], [a, b + S, b]]
    last = len(verts) - 1
    base = 1 + (R - 2) * S
    faces += [[last, base + (j + 1) % S, base + j] for j in range(S)]
    return verts, np.asarray(faces)


def almond_edges(x: np.ndarray, cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
    """Heights (upper lid, lower lid) of the rim of the eye opening centred at (cx, cy), at x.

    s runs from -1 at the inner corner to +1 at the outer one; the outer corner sits higher.
    """
    s = np.sign(cx) * (x - cx) / ALMOND_HALF_WIDTH
    k = np.clip(1 - s * s, 0.0, None)
    tilt = 0.0012 * s
    return cy + tilt + ALMOND_UP * k**0.75 * (1 - 0.25 * s), cy + tilt - ALMOND_DOWN * k**0.85


def _almond(x: np.ndarray, y: np.ndarray, cx: float, cy: float) -> np.ndarray:
    """Soft mask of one eye opening: 1 inside the lids' almond, 0 outside."""
    up, down = almond_edges(x, cx, cy)
    inside = np.minimum(up - y, y - down)
    return _smoothstep(-ALMOND_EDGE, ALMOND_EDGE, inside) * (np.abs(x - cx) < ALMOND_HALF_WIDTH)


def build_surface() -> StandinSurface:
    """Build the stand-in's rest mesh (deterministic, closed-form)."""
    u = _col_params()  # [Nu]
    t = _row_params()  # [Nv]
    Nu, Nv = len(u), len(t)
    prof = _along_t(_profiles_at(u), t)  # [Nu, Nv, 2]
    rho, y = prof[..., 0], prof[..., 1]
    grid = np.stack([rho * np.sin(u)[:, None], y, rho * np.cos(u)[:, None]], -1)  # [Nu, Nv, 3]

    # Relief on the front, ears on the sides.
    g = grid.reshape(-1, 3)
    uu = np.repeat(u, Nv)
    g[:, 2] += relief(g[:, 0], g[:, 1]) * front_fade(uu)
    normal_xz = np.stack([np.sin(uu), np.cos(uu)], -1)
    ear = _ears(g)
    g[:, 0] += ear * normal_xz[:, 0]
    g[:, 2] += ear * normal_xz[:, 1]

    # Lids over the eyeballs, opening inside the almond.
    centres = np.array([EYE_CENTRE, (-EYE_CENTRE[0], EYE_CENTRE[1], EYE_CENTRE[2])])
    almond = np.zeros(len(g))
    lid_lift = np.zeros_like(g)
    for c in centres:
        dx, dy = g[:, 0] - c[0], g[:, 1] - c[1]
        r2 = dx * dx + dy * dy
        ball = c[2] + np.sqrt(np.clip(EYE_RADIUS**2 - r2, 0.0, None))
        near = (r2 < (EYE_RADIUS + 0.008) ** 2) & (np.abs(uu) < np.radians(60))
        skin = np.where(near & (r2 < EYE_RADIUS**2), np.maximum(g[:, 2], ball + LID_GAP), g[:, 2])
        A = _almond(g[:, 0], g[:, 1], c[0], c[1]) * near
        sunk = np.maximum(np.minimum(ball - 0.0035, skin), skin - 0.006)  # behind the ball, at most 6 mm in
        z = skin * (1 - A) + sunk * A
        lid_lift[:, 2] += (skin - z) * near
        almond = np.maximum(almond, A)
        g[:, 2] = np.where(near, z, g[:, 2])
    grid = g.reshape(Nu, Nv, 3)

    # Skin vertex ids: crown is one vertex, then rows 1.. in column-major order.
    ids = np.full((Nu, Nv), -1)
    ids[:, 0] = 0
    ids[:, 1:] = 1 + np.arange(Nu * (Nv - 1)).reshape(Nv - 1, Nu).T
    verts = [grid[0, 0:1] * 0 + np.array([0.0, grid[0, 0, 1], 0.0])]
    verts.append(grid[:, 1:].transpose(1, 0, 2).reshape(-1, 3))
    verts = np.concatenate(verts)
    vt = np.concatenate([[t[0]], np.repeat(t[1:], Nu)])
    vu = np.concatenate([[0.0], np.tile(u, Nv - 1)])
    valm = np.concatenate([[0.0], almond.reshape(Nu, Nv)[:, 1:].T.reshape(-1)])
    vlift = np.concatenate([[[0.0, 0.0, 0.0]], lid_lift.reshape(Nu, Nv, 3)[:, 1:].transpose(1, 0, 2).reshape(-1, 3)])

    # Mouth slit: duplicate the mouth row between the corners for the lower lip.
    r_m = int(np.argmin(np.abs(t - T_MOUTH)))
    x_m = grid[:, r_m, 0]
    split_cols = np.where((np.abs(x_m) < MOUTH_HALF_WIDTH) & (np.cos(u) > 0))[0]
    split_cols = split_cols[np.argsort(x_m[split_cols])]
    lower_ids = ids.copy()
    dup = len(verts) + np.arange(len(split_cols))
    lower_ids[split_cols, r_m] = dup
    verts = np.concatenate([verts, verts[ids[split_cols, r_m]]])
    vt = np.concatenate([vt, np.full(len(split_cols), T_MOUTH)])
    vu = np.concatenate([vu, u[split_cols]])
    valm = np.concatenate([valm, np.zeros(len(split_cols))])
    vlift = np.concatenate([vlift, np.zeros((len(split_cols), 3))])

    faces = []
    for c in range(Nu):
        c1 = (c + 1) % Nu
        # Crown fan (outward normals: counter-clockwise seen from outside).
        faces.append([0, ids[c, 1], ids[c1, 1]])
        for r in range(1, Nv - 1):
            top = ids if r < r_m else lower_ids
            a, b = top[c, r], top[c1, r]
            cc, d = ids[c, r + 1], ids[c1, r + 1]
            faces += [[a, cc, d], [a, d, b]]
    faces = np.asarray(faces)
    # Orient outward: the crown fan must point up.
    if np.cross(verts[faces[0, 1]] - verts[faces[0, 0]], verts[faces[0, 2]] - verts[faces[0, 0]])[1] < 0:
        faces = faces[:, [0, 2, 1]]

    # Pouch behind the slit: rings from the lips' edge to a fan at the back.
    corner_neg = ids[(split_cols[0] - 1) % Nu, r_m]  # the subject's right mouth corner (-x)
    corner_pos = ids[(split_cols[-1] + 1) % Nu, r_m]
    upper = np.concatenate([[corner_neg], ids[split_cols, r_m], [corner_pos]])
    lower = np.concatenate([[corner_neg], dup, [corner_pos]])
    loop = np.concatenate([upper, lower[-2:0:-1]])  # around the slit
    side = np.concatenate([[0], np.ones(len(split_cols)), [0], -np.ones(len(split_cols))])
    rings = [loop]
    p_loop = verts[loop]
    mouth_y = verts[upper, 1].mean()
    n_before = len(verts)
    new = []
    for depth, half_h, sx in POUCH:
        ring = np.stack([p_loop[:, 0] * sx, mouth_y + side * half_h * np.sqrt(np.clip(1 - (p_loop[:, 0] / (MOUTH_HALF_WIDTH * 1.05)) ** 2, 0, 1)), p_loop[:, 2] - depth], -1)
        rings.append(n_before + len(new) * len(loop) + np.arange(len(loop)))
        new.append(ring)
    back = np.array([[0.0, mouth_y, p_loop[:, 2].mean() - POUCH[-1][0] - 0.006]])
    pouch_verts = np.concatenate(new + [back])
    apex = n_before + len(pouch_verts) - 1
    L = len(loop)
    pf = []
    for k in range(len(rings) - 1):
        a_ring, b_ring = rings[k], rings[k + 1]
        for i in range(L):
            i1 = (i + 1) % L
            pf += [[a_ring[i], a_ring[i1], b_ring[i1]], [a_ring[i], b_ring[i1], b_ring[i]]]
    for i in range(L):
        pf.append([rings[-1][i], rings[-1][(i + 1) % L], apex])
    pf = np.asarray(pf)
    verts = np.concatenate([verts, pouch_verts])
    n_pouch = len(pouch_verts)
    part = np.concatenate([np.zeros(n_before, int), np.ones(n_pouch, int)])
    lip_side = np.zeros(len(verts))
    lip_side[upper[1:-1]] = 1
    lip_side[lower[1:-1]] = -1
    lip_side[n_before:-1] = np.tile(side, len(POUCH))
    # Pouch faces must wind like the lip faces they continue across the slit edge.
    e = (upper[1], upper[2])
    skin_dir = any((f[i], f[(i + 1) % 3]) == e for f in faces for i in range(3))
    pouch_dir = any((f[i], f[(i + 1) % 3]) == e for f in pf for i in range(3))
    if skin_dir == pouch_dir:
        pf = pf[:, [0, 2, 1]]
    faces = np.concatenate([faces, pf])

    # Eyeballs.
    vt = np.concatenate([vt, np.full(n_pouch, np.nan)])
    vu = np.concatenate([vu, np.full(n_pouch, np.nan)])
    valm = np.concatenate([valm, np.zeros(n_pouch)])
    vlift = np.concatenate([vlift, np.zeros((n_pouch, 3))])
    for k, c in enumerate(centres):
        ev, ef = _eye_sphere(c)
        faces = np.concatenate([faces, ef + len(verts)])
        verts = np.concatenate([verts, ev])
        part = np.concatenate([part, np.full(len(ev), 2 + k)])
        lip_side = np.concatenate([lip_side, np.zeros(len(ev))])
        vt = np.concatenate([vt, np.full(len(ev), np.nan)])
        vu = np.concatenate([vu, np.full(len(ev), np.nan)])
        valm = np.concatenate([valm, np.zeros(len(ev))])
        vlift = np.concatenate([vlift, np.zeros((len(ev), 3))])

    return StandinSurface(
        vertices=verts,
        faces=faces.astype(np.int64),
        part=part,
        grid_t=vt,
        grid_u=vu,
        lip_side=lip_side,
        upper_slit=upper,
        lower_slit=lower,
        eye_centres=centres,
        almond=valm,
        lid_lift=vlift,
    )
