"""Where MediaPipe's 478 face-mesh points sit on a head model's surface (a landmark embedding).

The 3DMM estimator (paper Sec. 3.1) fits 2D landmarks l_k with model points
x_k = sum_m b_km v_{f_k, m} (face f_k, barycentrics b_k), like the iBUG-68 embedding that FLAME
files and the stand-in carry. MediaPipe's points need such an embedding too. MediaPipe's
canonical face model is not in the wheel, so it is built from a reference detection instead
(``tracking.landmarks.reference_face``: MediaPipe's own 3D output on a real, near-frontal photo):

1. Lift the reference to 3D head axes: X = (u, -v, -z) (pixels; MediaPipe's z grows away from
   the camera, FLAME's +z faces it).
2. Similarity-align it to the head's neutral iBUG landmarks through the shared interior points
   (iBUG 17-67; the jaw contour depends on the view): min_{s,R,t} sum_k ||s R X_k + t - L_k||^2
   (Umeyama's closed form).
3. Warp the aligned cloud with a thin-plate spline that moves those shared points exactly onto
   the head's landmarks (absorbing the reference's expression and identity), then
4. project every point onto the closest point of the head's surface (skin regions for the 468
   mesh points, the eyeballs for the 10 iris points) and keep its face and barycentrics.
   The iBUG subset keeps the head's own embedding exactly.

Approximation, stated: away from the shared points the correspondence is as good as the warp,
a few millimetres on the stand-in; fitting weights the dense points below the iBUG ones. The
closest-point search is a vectorised brute force over the allowed triangles (no spatial index
needed for 478 points).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.interpolate import RBFInterpolator
from torch import Tensor

SKIN_REGIONS = ("face", "lips", "nose", "brows", "eye_openings")
IRIS_REGIONS = ("eyeballs",)
N_MESH = 468  # MediaPipe points 468..477 are the irises


@dataclass
class SurfaceEmbedding:
    """K points on a mesh: face index and barycentric coordinates each."""

    faces_idx: Tensor  # [K]
    bary: Tensor  # [K, 3]
    distance: Tensor  # [K] how far the warped reference point was from the surface (model units)

    def points(self, vertices: Tensor, faces: Tensor) -> Tensor:  # vertices [B, V, 3], faces [F, 3] -> [B, K, 3]
        tri = vertices[:, faces[self.faces_idx]]  # [B, K, 3, 3]
        return (tri * self.bary[None, :, :, None].to(vertices.dtype)).sum(2)


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:  # [K, 3], [K, 3]
    """Least-squares similarity dst ~ s R src + t -> (s, R [3, 3], t [3])."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    U, D, Vt = np.linalg.svd(b.T @ a / len(src))
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1.0
    R = U @ S @ Vt
    s = float(np.trace(np.diag(D) @ S) / a.var(0).sum())
    return s, R, mu_d - s * R @ mu_s


def closest_on_triangles(points: np.ndarray, tris: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """points [K, 3], tris [F, 3, 3] -> (triangle index [K], barycentrics [K, 3], distance [K]).

    For each pair the closest point is the plane projection when its barycentrics are all >= 0,
    otherwise the closest point on one of the three edges.
    """
    p = torch.as_tensor(points, dtype=torch.float64)[:, None, None, :]  # [K, 1, 1, 3]
    T = torch.as_tensor(tris, dtype=torch.float64)[None]  # [1, F, 3, 3]
    a, b, c = T[..., 0, :], T[..., 1, :], T[..., 2, :]  # [1, F, 3]
    best_d = torch.full((len(points),), float("inf"), dtype=torch.float64)
    best_f = torch.zeros(len(points), dtype=torch.int64)
    best_w = torch.zeros(len(points), 3, dtype=torch.float64)
    for lo in range(0, T.shape[1], 1024):
        A, B, C = a[:, lo : lo + 1024], b[:, lo : lo + 1024], c[:, lo : lo + 1024]
        q = p[:, 0]  # [K, 1, 3]
        cands = []
        # plane projection, barycentrics by the normal-equation solve of q ~ A + u (B - A) + v (C - A)
        e0, e1, d = B - A, C - A, q - A
        d00, d01, d11 = (e0 * e0).sum(-1), (e0 * e1).sum(-1), (e1 * e1).sum(-1)
        d20, d21 = (d * e0).sum(-1), (d * e1).sum(-1)
        den = (d00 * d11 - d01 * d01).clamp_min(1e-30)
        v = (d11 * d20 - d01 * d21) / den
        w = (d00 * d21 - d01 * d20) / den
        bary = torch.stack([1 - v - w, v, w], -1)  # [K, f, 3]
        inside = (bary >= 0).all(-1)
        proj = A + v[..., None] * e0 + w[..., None] * e1
        cands.append((torch.where(inside, (q - proj).norm(dim=-1), torch.inf), bary))
        for i, (P, Q) in enumerate(((A, B), (B, C), (C, A))):
            e = Q - P
            s = (((q - P) * e).sum(-1) / (e * e).sum(-1).clamp_min(1e-30)).clamp(0, 1)
            dist = (q - (P + s[..., None] * e)).norm(dim=-1)
            wb = torch.zeros_like(bary)
            wb[..., i] = 1 - s
            wb[..., (i + 1) % 3] = s
            cands.append((dist, wb))
        dists = torch.stack([c_[0] for c_ in cands], -1)  # [K, f, 4]
        dmin, which = dists.min(-1)
        ws = torch.stack([c_[1] for c_ in cands], -2)  # [K, f, 4, 3]
        wbest = torch.gather(ws, 2, which[..., None, None].expand(-1, -1, 1, 3))[:, :, 0]
        dchunk, fchunk = dmin.min(-1)
        better = dchunk < best_d
        best_d = torch.where(better, dchunk, best_d)
        best_f = torch.where(better, fchunk + lo, best_f)
        best_w[better] = wbest[better, fchunk[better]]
    return best_f.numpy(), best_w.numpy(), best_d.numpy()


def _allowed_faces(head, regions: tuple[str, ...]) -> np.ndarray:
    """Faces whose three vertices lie in ``regions`` (all faces when the model names none of them)."""
    faces = head.faces.cpu().numpy()
    have = [r for r in regions if r in head.region_names]
    if not have:
        return np.arange(len(faces))
    mask = np.zeros(head.num_vertices, dtype=bool)
    for r in have:
        mask |= head.regions[r].cpu().numpy()
    return np.nonzero(mask[faces].all(1))[0]


def embed_mediapipe(head, reference: np.ndarray, mp_to_ibug68: np.ndarray) -> SurfaceEmbedding:
    """The 478 MediaPipe points on ``head``'s surface, from a reference detection.

    ``reference`` [478, 3] is MediaPipe's output (u, v pixels, relative depth) on a near-frontal
    face; ``mp_to_ibug68`` [68] gives the MediaPipe index of each iBUG point.
    """
    reference = np.asarray(reference, dtype=np.float64)
    if reference.shape != (478, 3):
        raise ValueError(f"the MediaPipe reference must be [478, 3], got {reference.shape}")
    if not head.has_landmarks:
        raise ValueError("the head model has no iBUG landmark embedding to anchor the MediaPipe points on")
    with torch.no_grad():
        out = head(head.zeros(1))
    verts = out.vertices[0].double().cpu().numpy()
    lmk = out.landmarks[0].double().cpu().numpy()  # [K68, 3]
    ids = head.lmk_ids.cpu().numpy()
    anchor = ids >= 17
    mp_anchor = np.asarray(mp_to_ibug68)[ids[anchor]]

    X = reference * np.array([1.0, -1.0, -1.0])
    s, R, t = umeyama(X[mp_anchor], lmk[anchor])
    Y = s * X @ R.T + t
    warp = RBFInterpolator(Y[mp_anchor], lmk[anchor] - Y[mp_anchor], kernel="thin_plate_spline")
    Y = Y + warp(Y)

    faces = head.faces.cpu().numpy()
    faces_idx = np.zeros(478, dtype=np.int64)
    bary = np.zeros((478, 3))
    dist = np.zeros(478)
    for sel, regions in ((np.arange(N_MESH), SKIN_REGIONS), (np.arange(N_MESH, 478), IRIS_REGIONS)):
        allowed = _allowed_faces(head, regions)
        f, w, d = closest_on_triangles(Y[sel], verts[faces[allowed]])
        faces_idx[sel], bary[sel], dist[sel] = allowed[f], w, d
    own = np.asarray(mp_to_ibug68)[ids]
    faces_idx[own] = head.lmk_faces_idx.cpu().numpy()
    bary[own] = head.lmk_bary_coords.double().cpu().numpy()
    dist[own] = 0.0
    dev = head.faces.device
    return SurfaceEmbedding(
        torch.as_tensor(faces_idx, device=dev), torch.as_tensor(bary, dtype=torch.float32, device=dev), torch.as_tensor(dist, dtype=torch.float32)
    )
