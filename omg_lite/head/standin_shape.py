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
EYE_CENTRES = np.array([EYE_CENTRE, (-EYE_CENTRE[0], EYE_CENTRE[1], EYE_CENTRE[2])])  # left (+x), right
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


def _sculpted_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Loft + relief + ears + lids: (grid [Nu, Nv, 3], row params t [Nv], opening mask A [Nu, Nv],
    lid closing displacement [Nu, Nv, 3])."""
    u = _col_params()  # [Nu]
    t = _row_params()  # [Nv]
    Nu, Nv = len(u), len(t)
    prof = _along_t(_profiles_at(u), t)  # [Nu, Nv, 2]
    rho, y = prof[..., 0], prof[..., 1]
    g = np.stack([rho * np.sin(u)[:, None], y, rho * np.cos(u)[:, None]], -1).reshape(-1, 3)
    uu = np.repeat(u, Nv)
    g[:, 2] += relief(g[:, 0], g[:, 1]) * front_fade(uu)
    ear = _ears(g)
    g[:, 0] += ear * np.sin(uu)
    g[:, 2] += ear * np.cos(uu)

    # Lids wrap the eyeballs (z_lid = z_ball + gap); inside the almond the skin sinks behind them.
    almond = np.zeros(len(g))
    lid_lift = np.zeros_like(g)
    for c in EYE_CENTRES:
        r2 = (g[:, 0] - c[0]) ** 2 + (g[:, 1] - c[1]) ** 2
        ball = c[2] + np.sqrt(np.clip(EYE_RADIUS**2 - r2, 0.0, None))
        near = (r2 < (EYE_RADIUS + 0.008) ** 2) & (np.abs(uu) < np.radians(60))
        skin = np.where(near & (r2 < EYE_RADIUS**2), np.maximum(g[:, 2], ball + LID_GAP), g[:, 2])
        A = _almond(g[:, 0], g[:, 1], c[0], c[1]) * near
        sunk = np.maximum(np.minimum(ball - 0.0035, skin), skin - 0.006)  # behind the ball, at most 6 mm in
        z = skin * (1 - A) + sunk * A
        lid_lift[:, 2] += (skin - z) * near
        almond = np.maximum(almond, A)
        g[:, 2] = np.where(near, z, g[:, 2])
    return g.reshape(Nu, Nv, 3), t, almond.reshape(Nu, Nv), lid_lift.reshape(Nu, Nv, 3)


def _grid_mesh(Nu: int, Nv: int, r_m: int, split_cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Topology of the skin grid with the mouth row split between the corners.

    Vertex 0 is the crown; grid vertex (c, r >= 1) is 1 + (r - 1) Nu + c; the lower lip's copies
    of the split vertices follow. Returns (faces [F, 3], grid ids [Nu, Nv], upper-lip chain,
    lower-lip chain), the chains running corner to corner in the order of ``split_cols``.
    """
    ids = np.zeros((Nu, Nv), dtype=np.int64)
    ids[:, 1:] = 1 + np.arange(Nu * (Nv - 1)).reshape(Nv - 1, Nu).T
    lower_ids = ids.copy()
    dup = 1 + Nu * (Nv - 1) + np.arange(len(split_cols))
    lower_ids[split_cols, r_m] = dup
    c, c1 = np.arange(Nu), (np.arange(Nu) + 1) % Nu
    faces = [np.stack([np.zeros(Nu, np.int64), ids[c, 1], ids[c1, 1]], -1)]  # crown fan, normals outward
    for r in range(1, Nv - 1):
        top = ids if r < r_m else lower_ids  # rows below the slit hang from the lower copies
        a, b, d, e = top[c, r], top[c1, r], ids[c, r + 1], ids[c1, r + 1]
        faces += [np.stack([a, d, e], -1), np.stack([a, e, b], -1)]
    corners = ids[(split_cols[0] - 1) % Nu, r_m], ids[(split_cols[-1] + 1) % Nu, r_m]
    upper = np.concatenate([[corners[0]], ids[split_cols, r_m], [corners[1]]])
    lower = np.concatenate([[corners[0]], dup, [corners[1]]])
    return np.concatenate(faces), ids, upper, lower


def _pouch(verts: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mouth cavity closing the slit from inside: rings that widen into a flat bag, then a fan.

    Returns (new vertices [P, 3], faces [F', 3] indexing the whole mesh, lip side of the new
    vertices [P]: +1 roof, -1 floor, 0 at the corners and the back).
    """
    n = len(upper) - 2
    loop = np.concatenate([upper, lower[-2:0:-1]])  # around the slit: corner, upper lip, corner, lower lip
    side = np.concatenate([[0], np.ones(n), [0], -np.ones(n)])
    p = verts[loop]
    mouth_y = verts[upper, 1].mean()
    opening = np.sqrt(np.clip(1 - (p[:, 0] / (1.05 * MOUTH_HALF_WIDTH)) ** 2, 0.0, 1.0))
    rings = [np.stack([p[:, 0] * sx, mouth_y + side * half_h * opening, p[:, 2] - depth], -1) for depth, half_h, sx in POUCH]
    back = np.array([[0.0, mouth_y, p[:, 2].mean() - POUCH[-1][0] - 0.006]])
    new = np.concatenate(rings + [back])
    L, V0 = len(loop), len(verts)
    ring_ids = [loop] + [V0 + k * L + np.arange(L) for k in range(len(POUCH))]
    apex = V0 + len(new) - 1
    i, i1 = np.arange(L), (np.arange(L) + 1) % L
    faces = []
    for a, b in zip(ring_ids[:-1], ring_ids[1:]):
        faces += [np.stack([a[i], b[i1], a[i1]], -1), np.stack([a[i], b[i], b[i1]], -1)]
    faces.append(np.stack([ring_ids[-1][i], np.full(L, apex), ring_ids[-1][i1]], -1))
    return new, np.concatenate(faces), np.concatenate([np.tile(side, len(POUCH)), [0]])


def _directed_edges(faces: np.ndarray) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for f in faces for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))}


def build_surface() -> StandinSurface:
    """Build the stand-in's rest mesh (deterministic, closed-form)."""
    grid, t, almond, lid_lift = _sculpted_grid()
    Nu, Nv = grid.shape[:2]
    u = _col_params()
    r_m = int(np.argmin(np.abs(t - T_MOUTH)))
    split_cols = np.where((np.abs(grid[:, r_m, 0]) < MOUTH_HALF_WIDTH) & (np.cos(u) > 0))[0]
    split_cols = split_cols[np.argsort(grid[split_cols, r_m, 0])]  # -x (subject's right) first
    faces, ids, upper, lower = _grid_mesh(Nu, Nv, r_m, split_cols)

    def per_vertex(a: np.ndarray) -> np.ndarray:  # grid array [Nu, Nv, ...] -> skin vertices in id order
        rows = np.moveaxis(a[:, 1:], 0, 1).reshape(-1, *a.shape[2:])
        return np.concatenate([a[:1, 0], rows, a[split_cols, r_m]])

    crown = grid.copy()
    crown[:, 0] = (0.0, grid[0, 0, 1], 0.0)
    verts = per_vertex(crown)
    n_skin = len(verts)
    lip_side = np.zeros(n_skin)
    lip_side[upper[1:-1]], lip_side[lower[1:-1]] = 1, -1

    pouch_v, pouch_f, pouch_side = _pouch(verts, upper, lower)
    # The cavity must wind like the lip faces it continues across the slit's edge.
    if (int(upper[1]), int(upper[2])) in _directed_edges(faces) & _directed_edges(pouch_f):
        pouch_f = pouch_f[:, [0, 2, 1]]
    eyes = [_eye_sphere(c) for c in EYE_CENTRES]
    offsets = np.cumsum([n_skin + len(pouch_v)] + [len(v) for v, _ in eyes])
    verts = np.concatenate([verts, pouch_v] + [v for v, _ in eyes])
    faces = np.concatenate([faces, pouch_f] + [f + o for (_, f), o in zip(eyes, offsets)])
    extra = len(verts) - n_skin
    return StandinSurface(
        vertices=verts,
        faces=faces,
        part=np.concatenate([np.zeros(n_skin, int), np.ones(len(pouch_v), int)] + [np.full(len(v), 2 + k) for k, (v, _) in enumerate(eyes)]),
        lip_side=np.concatenate([lip_side, pouch_side, np.zeros(extra - len(pouch_v))]),
        upper_slit=upper,
        lower_slit=lower,
        eye_centres=EYE_CENTRES.copy(),
        almond=np.concatenate([per_vertex(almond), np.zeros(extra)]),
        lid_lift=np.concatenate([per_vertex(lid_lift), np.zeros((extra, 3))]),
    )
