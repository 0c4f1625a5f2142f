"""The offline stand-in for FLAME: a procedural head with FLAME's structure (paper Sec. 3.1).

It fills every slot of FLAME's model so that :class:`omg_lite.head.model.HeadModel` treats
both alike: template T, faces, identity and expression blendshapes B_S, B_E (see
:mod:`omg_lite.head.standin_blendshapes`), a joint regressor R_J, skinning weights W over
FLAME's 5 joints (root, neck, jaw, left eye, right eye), a 68-point landmark embedding in
the iBUG order and vertex regions. There are no pose correctives (B_P = 0). The components'
names (``HeadModel.shape_names`` / ``expression_names``) are listed in
:mod:`omg_lite.head.standin_blendshapes`; S <= 24 identity and E <= 20 expression components.

- Joint regressor: each row is non-negative, sums to 1 and mixes surface vertices near the
  joint, J_k = sum_i R_ki T_i; the weights are a Gaussian kernel around the joint's intended
  position, tilted (minimum KL change) so that the rest joint lands on it; eye joints mix
  their eyeball's vertices and land on the sphere's centre.
- Skinning weights: eyeballs follow their eye joint; the neck blends from root (bottom) to
  neck (head) along y; the jaw takes the lower lip, chin and lower cheeks, with a sharp step at
  the mouth slit and a wide one on the cheeks. Rows sum to 1.
- Landmarks: rays along -z through 2D feature positions hit the skin (face index +
  barycentric coordinates); the inner-lip points sit on the slit's two edges.

Everything is deterministic and built once per process (:func:`standin_arrays` is cached).
"""

from __future__ import annotations

import functools

import numpy as np

from omg_lite.head import standin_blendshapes as bs
from omg_lite.head.regions import regions_from_geometry
from omg_lite.head.standin_shape import (
    ALMOND_HALF_WIDTH,
    EYE_CENTRE,
    EYE_RADIUS,
    MOUTH_HALF_WIDTH,
    StandinSurface,
    almond_edges,
    build_surface,
)

PARENTS = np.array([-1, 0, 1, 1, 1])
# Intended rest joint positions (metres) for root, neck and jaw; eyes are the eyeball centres.
JOINT_TARGETS = {0: (0.0, -0.150, -0.018), 1: (0.0, -0.095, -0.022), 2: (0.0, -0.008, 0.000)}
JOINT_RADIUS = {0: 0.08, 1: 0.08, 2: 0.09}
MOUTH_Y = bs.MOUTH_Y


def _step(e0, e1, a):
    s = np.clip((a - e0) / (e1 - e0), 0.0, 1.0)
    return s * s * (3 - 2 * s)


def _regressor_row(verts: np.ndarray, candidates: np.ndarray, target: np.ndarray, radius: float) -> np.ndarray:
    """Non-negative weights over nearby ``candidates``, summing to 1, whose weighted mean is ``target``.

    Start from a Gaussian kernel w0 and tilt it, w_i ~ w0_i exp(lambda . (p_i - target)), with
    lambda minimising log sum_i w0_i exp(lambda . (p_i - target)) (Newton's method): at the
    minimum the gradient sum_i w_i (p_i - target) vanishes. This is the closest distribution to
    w0 in KL divergence with the required mean.
    """
    d = verts[candidates] - target
    near = (d**2).sum(1) < radius**2
    keep, d = candidates[near], d[near]
    logw0 = -0.5 * (d**2).sum(1) / (0.5 * radius) ** 2
    lam = np.zeros(3)

    def weights(lam):
        a = logw0 + d @ lam
        w = np.exp(a - a.max())
        return w / w.sum(), a.max() + np.log(np.exp(a - a.max()).sum())

    w, f = weights(lam)
    for _ in range(100):
        g = w @ d
        if np.linalg.norm(g) < 1e-12:
            break
        H = (d * w[:, None]).T @ d - np.outer(g, g)
        step = np.linalg.solve(H + 1e-12 * np.eye(3), g)
        t = 1.0
        while True:
            w_new, f_new = weights(lam - t * step)
            if f_new <= f or t < 1e-6:
                break
            t *= 0.5
        lam, w, f = lam - t * step, w_new, f_new
    row = np.zeros(len(verts))
    row[keep] = w
    return row


def _skinning_weights(s: StandinSurface, verts: np.ndarray) -> np.ndarray:
    x, y, z = verts.T
    ax = np.abs(x)
    W = np.zeros((len(verts), 5))
    # Jaw: below a line that follows the mouth slit between the corners and rises towards the
    # jaw joint on the cheeks; sharp at the slit (the lips are cut apart), wide on the cheeks.
    rise = np.clip(ax - MOUTH_HALF_WIDTH, 0.0, None)
    y_line = MOUTH_Y + np.minimum(0.9 * rise, 0.006)  # never above the upper lip
    width = 0.002 + 0.016 * _step(MOUTH_HALF_WIDTH - 0.003, MOUTH_HALF_WIDTH + 0.02, ax)
    jaw = _step(y_line, y_line - width, y)
    jaw *= _step(-0.045, 0.0, z)  # the ramus: nothing behind the jaw joint
    # Below the mandible's lower edge (chin -> jaw angle) the neck takes over over ~3 cm.
    y_mandible = np.interp(z, [-0.03, 0.0, 0.08], [-0.085, -0.095, -0.112])
    jaw *= _step(y_mandible - 0.032, y_mandible + 0.004, y)
    jaw = np.where(s.lip_side > 0, 0.0, np.where(s.lip_side < 0, 1.0, jaw))
    pouch = s.part == 1
    jaw[pouch & (s.lip_side == 0)] = 0.5
    root = _step(-0.130, -0.175, y) * ~pouch
    jaw = jaw * (1 - root)
    W[:, 0] = root
    W[:, 2] = jaw
    W[:, 1] = 1 - root - jaw
    for k in (2, 3):
        W[s.part == k] = 0.0
        W[s.part == k, k + 1] = 1.0
    return W


def _joint_regressor(s: StandinSurface, verts: np.ndarray) -> np.ndarray:
    R = np.zeros((5, len(verts)))
    skin = np.where(s.part == 0)[0]
    for j, target in JOINT_TARGETS.items():
        R[j] = _regressor_row(verts, skin, np.asarray(target), JOINT_RADIUS[j])
    for j, k in ((3, 2), (4, 3)):
        R[j] = _regressor_row(verts, np.where(s.part == k)[0], s.eye_centres[k - 2], 2 * EYE_RADIUS)
    return R


def _landmark_targets() -> np.ndarray:
    """2D (x, y) positions of the 68 iBUG landmarks on the stand-in's face (subject's right = -x)."""
    jaw_r = [(-0.071, 0.018), (-0.070, 0.000), (-0.068, -0.018), (-0.065, -0.036), (-0.060, -0.053), (-0.052, -0.069), (-0.041, -0.083), (-0.024, -0.096)]
    jaw = jaw_r + [(0.0, -0.103)] + [(-a, b) for a, b in jaw_r[::-1]]
    brow_r = [(-0.050, 0.045), (-0.042, 0.050), (-0.033, 0.052), (-0.024, 0.051), (-0.014, 0.048)]
    brows = brow_r + [(-a, b) for a, b in brow_r[::-1]]
    nose = [(0.0, 0.030), (0.0, 0.017), (0.0, 0.004), (0.0, -0.012), (-0.011, -0.024), (-0.0055, -0.026), (0.0, -0.027), (0.0055, -0.026), (0.011, -0.024)]
    eyes = []
    for cx in (-EYE_CENTRE[0], EYE_CENTRE[0]):
        # Each eye from its corner at smaller x, along the upper lid, back along the lower lid.
        xs = cx + np.array([-1, -0.35, 0.35, 1]) * ALMOND_HALF_WIDTH * 0.97
        up, low = almond_edges(xs, cx, EYE_CENTRE[1])
        eyes += [(xs[0], (up[0] + low[0]) / 2), (xs[1], up[1] + 0.0004), (xs[2], up[2] + 0.0004)]
        eyes += [(xs[3], (up[3] + low[3]) / 2), (xs[2], low[2] - 0.0004), (xs[1], low[1] - 0.0004)]
    outer = [(-0.0245, -0.055), (-0.017, -0.0495), (-0.007, -0.0465), (0.0, -0.0475), (0.007, -0.0465), (0.017, -0.0495), (0.0245, -0.055), (0.017, -0.062), (0.008, -0.0655), (0.0, -0.0665), (-0.008, -0.0655), (-0.017, -0.062)]
    return np.asarray(jaw + brows + nose + eyes + outer)


def _ray_cast_front(verts: np.ndarray, faces: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each (x, y), the front-most face hit by a ray along -z: (face ids [K], barycentrics [K, 3])."""
    tri = verts[faces]  # [F, 3, 3]
    a, b, c = tri[:, 0, :2], tri[:, 1, :2], tri[:, 2, :2]
    fid = np.empty(len(xy), int)
    bary = np.empty((len(xy), 3))
    for k, p in enumerate(xy):
        v0, v1, v2 = b - a, c - a, p - a
        den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
        ok = np.abs(den) > 1e-14
        den = np.where(ok, den, 1.0)
        l1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
        l2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
        l0 = 1 - l1 - l2
        hit = ok & (l0 >= -1e-9) & (l1 >= -1e-9) & (l2 >= -1e-9)
        if not hit.any():
            raise RuntimeError(f"stand-in landmark {k} at {p} misses the mesh")
        zs = l0 * tri[:, 0, 2] + l1 * tri[:, 1, 2] + l2 * tri[:, 2, 2]
        best = np.where(hit)[0][np.argmax(zs[hit])]
        fid[k] = best
        bary[k] = (l0[best], l1[best], l2[best])
    return fid, np.clip(bary, 0.0, 1.0) / np.clip(bary, 0.0, 1.0).sum(1, keepdims=True)


def _on_edge(faces: np.ndarray, chain: np.ndarray, verts: np.ndarray, x: float, skin: np.ndarray) -> tuple[int, np.ndarray]:
    """A point on the slit edge ``chain`` at horizontal position x, as (skin face, barycentrics)."""
    xs = verts[chain, 0]
    i = int(np.clip(np.searchsorted(xs, x) - 1, 0, len(chain) - 2))
    t = float(np.clip((x - xs[i]) / (xs[i + 1] - xs[i]), 0.0, 1.0))
    a, b = chain[i], chain[i + 1]
    for f, tri in enumerate(faces):
        if a in tri and b in tri and skin[tri].all():
            return f, np.array([(1 - t) if v == a else t if v == b else 0.0 for v in tri])
    raise RuntimeError("no face along the mouth slit")


def _landmarks(s: StandinSurface, verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    skin_faces = np.where((s.part[faces] == 0).all(1))[0]
    xy = _landmark_targets()
    fid, bary = _ray_cast_front(verts, faces[skin_faces], xy)
    fid = skin_faces[fid]
    inner = []
    up, low = s.upper_slit, s.lower_slit
    corner_r, corner_l = verts[up[0], 0], verts[up[-1], 0]
    skin = s.part == 0
    for x, chain in ((corner_r, up), (-0.010, up), (0.0, up), (0.010, up), (corner_l, low), (0.010, low), (0.0, low), (-0.010, low)):
        inner.append(_on_edge(faces, chain, verts, x, skin))
    fid = np.concatenate([fid, [f for f, _ in inner]])
    bary = np.concatenate([bary, np.stack([b for _, b in inner])])
    return fid, bary


@functools.lru_cache(maxsize=1)
def standin_arrays() -> dict:
    """Every array of the stand-in model (numpy, float64), built once per process."""
    s = build_surface()
    verts, faces = s.vertices, s.faces
    eyeball = np.where(s.part >= 2, s.part - 1, 0)
    shapedirs = bs.evaluate(bs.SHAPE_FIELDS, verts, s.lip_side, s.lid_lift, eyeball, s.eye_centres, rigid_eyes=True)
    exprdirs = bs.evaluate(bs.EXPRESSION_FIELDS, verts, s.lip_side, s.lid_lift, eyeball, s.eye_centres, rigid_eyes=False)
    lmk_faces, lmk_bary = _landmarks(s, verts, faces)
    return {
        "v_template": verts,
        "faces": faces,
        "shapedirs": shapedirs,
        "exprdirs": exprdirs,
        "J_regressor": _joint_regressor(s, verts),
        "weights": _skinning_weights(s, verts),
        "parents": PARENTS.copy(),
        "lmk_faces_idx": lmk_faces,
        "lmk_bary_coords": lmk_bary,
        "regions": regions_from_geometry(verts, s.part >= 2, s.part == 1, s.lip_side != 0, s.almond, s.eye_centres),
        "shape_names": [n for n, _ in bs.SHAPE_FIELDS],
        "expression_names": [n for n, _ in bs.EXPRESSION_FIELDS],
    }
