"""EWA projection compiled with numba: forward and hand-written backward (paper Sec. 3; 3DGS).

The same projection as the readable ``project.py`` (read its docstring for the equations and
gsplat's conventions), fused into one parallel loop over Gaussians so that a render costs a few
kernel launches instead of dozens of small torch ops. The backward applies the chain rule by
hand, in this order (G_X = dL/dX, every G symmetric):

    conic Q = Sigma'^-1:            G_Sigma' = -Q G_Q Q
    Sigma' = J Sigma_c J^T:         G_Sigma_c = J^T G_Sigma' J,   G_J = 2 G_Sigma' J Sigma_c
    J(x, y, z), u = fx x/z + cx:    G_p from G_J, G_u, G_v and G_z (x/z, y/z clamped: no G there)
    p = W mu + t:                   G_mu = W^T G_p
    Sigma_c = W Sigma W^T:          G_Sigma = W^T G_Sigma_c W
    Sigma = M M^T, M = R(q) S:      G_M = 2 G_Sigma M,  G_s_j = sum_i G_M_ij R_ij,  G_R = G_M S
    q_hat = q / |q|:                G_q = (G_q_hat - q_hat (q_hat . G_q_hat)) / |q|

Inputs are float32 (computed in float64 inside). Each Gaussian also gets a status code (the keys
of ``project.INPUT_ERRORS``) so that bad values raise one clear error without another pass.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from omg_lite.splat.project import ALPHA_MIN, EPS2D, EXTENT, FAR_PLANE, INPUT_ERRORS, NEAR_PLANE, SCALE_MIN

@nb.njit(cache=True)
def _rotmat(w, x, y, z):
    """R(q) of a unit quaternion, row-major 9-tuple."""
    return (
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    )


@nb.njit(cache=True)
def _mm(a, b):
    """a @ b for row-major 3x3 9-tuples."""
    return (
        a[0] * b[0] + a[1] * b[3] + a[2] * b[6], a[0] * b[1] + a[1] * b[4] + a[2] * b[7], a[0] * b[2] + a[1] * b[5] + a[2] * b[8],
        a[3] * b[0] + a[4] * b[3] + a[5] * b[6], a[3] * b[1] + a[4] * b[4] + a[5] * b[7], a[3] * b[2] + a[4] * b[5] + a[5] * b[8],
        a[6] * b[0] + a[7] * b[3] + a[8] * b[6], a[6] * b[1] + a[7] * b[4] + a[8] * b[7], a[6] * b[2] + a[7] * b[5] + a[8] * b[8],
    )


@nb.njit(cache=True)
def _t(a):
    """Transpose of a row-major 3x3 9-tuple."""
    return (a[0], a[3], a[6], a[1], a[4], a[7], a[2], a[5], a[8])


@nb.njit(cache=True)
def _camera_space(means, quats, scales, Rc, tc, b, g):
    """Unit quaternion, R(q), clamped scales, M = R S, camera-space mean p and Sigma_c."""
    qw, qx, qy, qz = quats[b, g, 0], quats[b, g, 1], quats[b, g, 2], quats[b, g, 3]
    qn = math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
    qw, qx, qy, qz = qw / qn, qx / qn, qy / qn, qz / qn
    R = _rotmat(qw, qx, qy, qz)
    s0 = max(scales[b, g, 0], SCALE_MIN)
    s1 = max(scales[b, g, 1], SCALE_MIN)
    s2 = max(scales[b, g, 2], SCALE_MIN)
    M = (R[0] * s0, R[1] * s1, R[2] * s2, R[3] * s0, R[4] * s1, R[5] * s2, R[6] * s0, R[7] * s1, R[8] * s2)
    W = (Rc[b, 0, 0], Rc[b, 0, 1], Rc[b, 0, 2], Rc[b, 1, 0], Rc[b, 1, 1], Rc[b, 1, 2], Rc[b, 2, 0], Rc[b, 2, 1], Rc[b, 2, 2])
    mx, my, mz = means[b, g, 0], means[b, g, 1], means[b, g, 2]
    x = W[0] * mx + W[1] * my + W[2] * mz + tc[b, 0]
    y = W[3] * mx + W[4] * my + W[5] * mz + tc[b, 1]
    z = W[6] * mx + W[7] * my + W[8] * mz + tc[b, 2]
    WM = _mm(W, M)
    cov_c = _mm(WM, _t(WM))  # W M M^T W^T
    return (qw, qx, qy, qz, qn), R, (s0, s1, s2), M, W, (x, y, z), cov_c


@nb.njit(cache=True)
def _jacobian(x, y, z, K, b, width, height):
    """J = [[fx/z, 0, -fx x'/z^2], [0, fy/z, -fy y'/z^2]] with x'/z, y'/z clamped to 1.3 x the FOV."""
    fx, fy, cx, cy = K[b, 0, 0], K[b, 1, 1], K[b, 0, 2], K[b, 1, 2]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lo_x, hi_x = -(cx / fx + 0.3 * tan_x), (width - cx) / fx + 0.3 * tan_x
    lo_y, hi_y = -(cy / fy + 0.3 * tan_y), (height - cy) / fy + 0.3 * tan_y
    xz, yz = x / z, y / z
    clamp_x, clamp_y = xz < lo_x or xz > hi_x, yz < lo_y or yz > hi_y
    xz, yz = min(max(xz, lo_x), hi_x), min(max(yz, lo_y), hi_y)
    J = (fx / z, 0.0, -fx * xz / z, 0.0, fy / z, -fy * yz / z)
    return J, xz, yz, clamp_x, clamp_y


@nb.njit(cache=True)
def _cov2d(J, S):
    """Sigma' = J S J^T (2x3 J, 3x3 S) as (a, b, c), before the low-pass."""
    JS0 = (J[0] * S[0] + J[1] * S[3] + J[2] * S[6], J[0] * S[1] + J[1] * S[4] + J[2] * S[7], J[0] * S[2] + J[1] * S[5] + J[2] * S[8])
    JS1 = (J[3] * S[0] + J[4] * S[3] + J[5] * S[6], J[3] * S[1] + J[4] * S[4] + J[5] * S[7], J[3] * S[2] + J[4] * S[5] + J[5] * S[8])
    a = JS0[0] * J[0] + JS0[1] * J[1] + JS0[2] * J[2]
    b = JS0[0] * J[3] + JS0[1] * J[4] + JS0[2] * J[5]
    c = JS1[0] * J[3] + JS1[1] * J[4] + JS1[2] * J[5]
    return a, b, c


@nb.njit(cache=True)
def _finite(x):
    return not (math.isnan(x) or math.isinf(x))


@nb.njit(cache=True)
def _status(means, quats, scales, opacities, features, b, g):
    for k in range(3):
        if not _finite(means[b, g, k]):
            return 1
    for k in range(4):
        if not _finite(quats[b, g, k]):
            return 2
    for k in range(3):
        if not _finite(scales[b, g, k]):
            return 3
    if not _finite(opacities[b, g]):
        return 4
    for k in range(features.shape[2]):
        if not _finite(features[b, g, k]):
            return 5
    if quats[b, g, 0] == 0 and quats[b, g, 1] == 0 and quats[b, g, 2] == 0 and quats[b, g, 3] == 0:
        return 6
    if scales[b, g, 0] < 0 or scales[b, g, 1] < 0 or scales[b, g, 2] < 0:
        return 7
    if opacities[b, g] < 0 or opacities[b, g] > 1:
        return 8
    return 0


@nb.njit(parallel=True, cache=True)
def project_forward(means, quats, scales, opacities, features, K, Rc, tc, width, height, tight,
                    means2d, conics, depths, radii, status):
    """Fill means2d [B, N, 2], conics [B, N, 3], depths [B, N], radii [B, N, 2] (0 = culled), status [B, N].

    ``tight``: opacity-aware radii k = min(3.33, sqrt(2 ln(255 o))), else k = 3.33.
    """
    B, N = opacities.shape
    for i in nb.prange(B * N):
        b, g = i // N, i % N
        radii[b, g, 0] = 0
        radii[b, g, 1] = 0
        status[b, g] = _status(means, quats, scales, opacities, features, b, g)
        if status[b, g] != 0:
            continue
        _, _, _, _, _, p, cov_c = _camera_space(means, quats, scales, Rc, tc, b, g)
        x, y, z = p
        depths[b, g] = z
        if not (z > NEAR_PLANE and z < FAR_PLANE):
            continue
        J, _, _, _, _ = _jacobian(x, y, z, K, b, width, height)
        a, bb, c = _cov2d(J, cov_c)
        a += EPS2D
        c += EPS2D
        det = a * c - bb * bb
        if det <= 0:
            continue
        o = opacities[b, g]
        extent = EXTENT
        if tight:
            if o < ALPHA_MIN:
                continue
            extent = min(extent, math.sqrt(2.0 * math.log(o / ALPHA_MIN)))
        rx, ry = math.ceil(extent * math.sqrt(a)), math.ceil(extent * math.sqrt(c))
        u = K[b, 0, 0] * x / z + K[b, 0, 2]
        v = K[b, 1, 1] * y / z + K[b, 1, 2]
        if rx <= 0 and ry <= 0:
            continue
        if u + rx <= 0 or u - rx >= width or v + ry <= 0 or v - ry >= height:
            continue
        means2d[b, g, 0], means2d[b, g, 1] = u, v
        conics[b, g, 0], conics[b, g, 1], conics[b, g, 2] = c / det, -bb / det, a / det
        radii[b, g, 0], radii[b, g, 1] = rx, ry


@nb.njit(parallel=True, cache=True)
def project_backward(means, quats, scales, K, Rc, tc, width, height, radii, conics, rows, g_offsets,
                     g_means, g_quats, g_scales, g_opacities, g_features):
    """Sum each Gaussian's rows g_offsets[i]:g_offsets[i + 1] (du, dv, da, db, dc, do, dz, dcolour[C])
    and push them through the projection to the inputs."""
    B, N = radii.shape[:2]
    C = g_features.shape[2]
    for i in nb.prange(B * N):
        b, g = i // N, i % N
        gu = gv = gA = gB = gC = go = gz = 0.0
        for r in range(g_offsets[i], g_offsets[i + 1]):
            gu += rows[r, 0]
            gv += rows[r, 1]
            gA += rows[r, 2]
            gB += rows[r, 3]
            gC += rows[r, 4]
            go += rows[r, 5]
            gz += rows[r, 6]
            for k in range(C):
                g_features[b, g, k] += rows[r, 7 + k]
        g_opacities[b, g] = go
        if radii[b, g, 0] == 0 and radii[b, g, 1] == 0:
            continue
        qhat, R, s, M, W, p, cov_c = _camera_space(means, quats, scales, Rc, tc, b, g)
        x, y, z = p
        J, xz, yz, clamp_x, clamp_y = _jacobian(x, y, z, K, b, width, height)
        fx, fy = K[b, 0, 0], K[b, 1, 1]

        # conic Q -> Sigma': G = -Q G_Q Q, with G_Q = [[gA, gB/2], [gB/2, gC]]
        qa, qb, qc = conics[b, g, 0], conics[b, g, 1], conics[b, g, 2]
        h = 0.5 * gB
        t00, t01 = qa * gA + qb * h, qa * h + qb * gC  # Q G_Q
        t10, t11 = qb * gA + qc * h, qb * h + qc * gC
        s00 = -(t00 * qa + t01 * qb)
        s01 = -(t00 * qb + t01 * qc)
        s11 = -(t10 * qb + t11 * qc)
        G2 = (s00, s01, s01, s11)  # row-major 2x2, symmetric

        # Sigma' = J Sigma_c J^T: G_Sigma_c = J^T G2 J, G_J = 2 G2 J Sigma_c
        GJ = (G2[0] * J[0] + G2[1] * J[3], G2[0] * J[1] + G2[1] * J[4], G2[0] * J[2] + G2[1] * J[5],
              G2[2] * J[0] + G2[3] * J[3], G2[2] * J[1] + G2[3] * J[4], G2[2] * J[2] + G2[3] * J[5])  # G2 J
        Gc = (
            J[0] * GJ[0] + J[3] * GJ[3], J[0] * GJ[1] + J[3] * GJ[4], J[0] * GJ[2] + J[3] * GJ[5],
            J[1] * GJ[0] + J[4] * GJ[3], J[1] * GJ[1] + J[4] * GJ[4], J[1] * GJ[2] + J[4] * GJ[5],
            J[2] * GJ[0] + J[5] * GJ[3], J[2] * GJ[1] + J[5] * GJ[4], J[2] * GJ[2] + J[5] * GJ[5],
        )
        # only J00, J02, J11, J12 vary; G_J[r, c] = 2 sum_m (G2 J)[r, m] Sigma_c[m, c]
        dJ00 = 2.0 * (GJ[0] * cov_c[0] + GJ[1] * cov_c[3] + GJ[2] * cov_c[6])
        dJ02 = 2.0 * (GJ[0] * cov_c[2] + GJ[1] * cov_c[5] + GJ[2] * cov_c[8])
        dJ11 = 2.0 * (GJ[3] * cov_c[1] + GJ[4] * cov_c[4] + GJ[5] * cov_c[7])
        dJ12 = 2.0 * (GJ[3] * cov_c[2] + GJ[4] * cov_c[5] + GJ[5] * cov_c[8])

        # J(x, y, z) and (u, v) = (fx x/z + cx, fy y/z + cy), depth = z
        z2 = z * z
        gx = gu * fx / z
        gy = gv * fy / z
        gzz = gz - gu * fx * x / z2 - gv * fy * y / z2
        gzz += -dJ00 * fx / z2 + dJ02 * fx * xz / z2 - dJ11 * fy / z2 + dJ12 * fy * yz / z2
        g_xz, g_yz = -dJ02 * fx / z, -dJ12 * fy / z
        if not clamp_x:
            gx += g_xz / z
            gzz -= g_xz * x / z2
        if not clamp_y:
            gy += g_yz / z
            gzz -= g_yz * y / z2
        for k in range(3):
            g_means[b, g, k] = W[k] * gx + W[3 + k] * gy + W[6 + k] * gzz

        # Sigma_c = W Sigma W^T, Sigma = M M^T, M = R S
        GS = _mm(_mm(_t(W), Gc), W)
        GM = _mm(GS, M)
        GM = (2 * GM[0], 2 * GM[1], 2 * GM[2], 2 * GM[3], 2 * GM[4], 2 * GM[5], 2 * GM[6], 2 * GM[7], 2 * GM[8])
        for k in range(3):
            gs = GM[k] * R[k] + GM[3 + k] * R[3 + k] + GM[6 + k] * R[6 + k]
            g_scales[b, g, k] = gs if scales[b, g, k] > SCALE_MIN else 0.0
        G = (GM[0] * s[0], GM[1] * s[1], GM[2] * s[2], GM[3] * s[0], GM[4] * s[1], GM[5] * s[2],
             GM[6] * s[0], GM[7] * s[1], GM[8] * s[2])  # G_R
        w_, x_, y_, z_, qn = qhat
        gw = 2 * (-z_ * G[1] + y_ * G[2] + z_ * G[3] - x_ * G[5] - y_ * G[6] + x_ * G[7])
        gx_ = 2 * (y_ * G[1] + z_ * G[2] + y_ * G[3] - 2 * x_ * G[4] - w_ * G[5] + z_ * G[6] + w_ * G[7] - 2 * x_ * G[8])
        gy_ = 2 * (-2 * y_ * G[0] + x_ * G[1] + w_ * G[2] + x_ * G[3] + z_ * G[5] - w_ * G[6] + z_ * G[7] - 2 * y_ * G[8])
        gz_ = 2 * (-2 * z_ * G[0] - w_ * G[1] + x_ * G[2] + w_ * G[3] - 2 * z_ * G[4] + y_ * G[5] + x_ * G[6] + y_ * G[7])
        dot = w_ * gw + x_ * gx_ + y_ * gy_ + z_ * gz_
        g_quats[b, g, 0] = (gw - w_ * dot) / qn
        g_quats[b, g, 1] = (gx_ - x_ * dot) / qn
        g_quats[b, g, 2] = (gy_ - y_ * dot) / qn
        g_quats[b, g, 3] = (gz_ - z_ * dot) / qn


def status_error(status: np.ndarray) -> str | None:
    """The message of the first failing check, or None when every Gaussian passed."""
    bad = status[status > 0]
    return INPUT_ERRORS[int(bad.min())] if bad.size else None
