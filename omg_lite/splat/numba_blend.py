"""The blend kernels of the fast CPU path (``numba_render.py``): tiles in parallel, forward and backward.

Why hand-written: see ``numba_render.py`` (gsplat's rasterizer is CUDA only).

Backward, per pixel back to front from its last blended Gaussian, with g = dL/dC(p),
S_i = sum_{j>i} alpha_j T_j (c_j . g) and dL/dT_N from alpha, depth and background:

    dL/dc_i     = alpha_i T_i g
    dL/dalpha_i = T_i (c_i . g) - (S_i + T_N dL/dT_N) / (1 - alpha_i)
    T_i         = T_{i+1} / (1 - alpha_i)                    (recovered, not stored)
    dL/do_i     = dL/dalpha_i exp(-sigma_i),  dL/dsigma_i = -dL/dalpha_i alpha_i  (0 where clamped)

Each tile writes the gradient of each of its list entries into a row of its own, laid out
Gaussian-major (no races, a fixed summation order); the projection's backward then sums each
Gaussian's consecutive rows. Computation is in float32 (float64 for transmittance), whatever
the input dtype; camera parameters get no gradient here (``render`` then takes the readable path).
Both blend passes compile with fastmath (about 10 % less CPU time each, measured; results move
by ~1e-7): its no-NaN/no-inf assumption holds because the projection's status codes reject
non-finite inputs before blending.

Speed (profiled per stage on the benchmark's 80K cloud, one thread: projection 10 ms, sort 2 ms,
binning 6 ms, blending 90-100 ms, of which the per-pixel loop is most): sigma and alpha are float32
with an inline exp (``_exp_neg``; libm's expf was a call per pixel), each Gaussian's blending
inputs sit in one row (``pack``), each row's pixel range shrinks past pixels that have stopped,
and the tile's image is written (its upstream gradient read) channel by channel, rows in order:
pixel by pixel it touched 32 pages per pixel (8 ms of a 256x256 render).
"""


from __future__ import annotations

import math

import numba as nb
import numpy as np

from omg_lite.splat.project import ALPHA_MIN
from omg_lite.splat.torch_render import ALPHA_MAX, T_MIN

TILE = 16
# Row layout per list entry: du, dv, d conic (a, b, c), d opacity, d depth, then d colour [C].
NG = 7
HALF = np.float32(0.5)
LOG2E, LN2 = np.float32(1.0 / math.log(2.0)), np.float32(math.log(2.0))
POW2_NEG = np.float32(2.0) ** -np.arange(33, dtype=np.float32)  # 2^-n
ALPHA_MIN32, ALPHA_MAX32 = np.float32(ALPHA_MIN), np.float32(ALPHA_MAX)


@nb.njit(cache=True)
def _rows(v, ry, y0, y1):
    """Pixel rows [lo, hi) whose centres may lie within ry of v."""
    return max(y0, int(math.floor(np.float64(v - ry)))), min(y1, int(math.ceil(np.float64(v + ry))))


@nb.njit(cache=True, fastmath=True)
def _span(u, dy, ca, cb, cc, inv_a, level, x0, x1):
    """Pixels [lo, hi) of a row where sigma <= level can hold (a margin of one pixel each side).

    sigma = 1/2 (a dx^2 + c dy^2) + b dx dy <= level  <=>  a dx^2 + 2 b dy dx + c dy^2 - 2 level <= 0.
    """
    disc = (cb * dy) ** 2 - ca * (cc * dy * dy - np.float32(2.0) * level)
    if disc < 0.0:
        return 0, 0
    root = math.sqrt(disc) * inv_a
    mid = -cb * dy * inv_a
    lo, hi = np.float64(u - mid - root - HALF), np.float64(u - mid + root - HALF)  # float64 floor: an instruction, not a call
    return max(x0, int(math.floor(lo))), min(x1, int(math.floor(hi)) + 2)


@nb.njit(cache=True, fastmath=True)
def _exp_neg(s):
    """exp(-s) in float32 for s >= 0, inline (numba's math.exp calls libm's expf per pixel).

    exp(-s) = 2^-n exp(-y), n = round(s log2 e), y = (s log2 e - n) ln 2, |y| <= 0.35: a degree-6
    Taylor polynomial (error y^7/7! < 1.3e-7 relative) times 2^-n from a table (exact); s is
    capped where exp(-s) < 2^-31.
    """
    x = min(s * LOG2E, np.float32(31.0))
    n = int(x + HALF)
    y = (x - np.float32(n)) * LN2
    p = np.float32(1.0) - y * (np.float32(1.0) - y * (np.float32(1 / 2) - y * (np.float32(1 / 6) - y * (
        np.float32(1 / 24) - y * (np.float32(1 / 120) - y * np.float32(1 / 720))))))
    return p * POW2_NEG[n]


def pack(means2d: np.ndarray, conics: np.ndarray, opacities: np.ndarray) -> np.ndarray:  # -> [B, N, 8] float32
    """Per Gaussian (u, v, a, b, c, o, ln(255 o), 1/a): what blending reads, in one cache line."""
    a = conics[..., 0]
    levels = np.log(np.maximum(opacities, ALPHA_MIN) / np.float32(ALPHA_MIN))  # sigma <= ln(255 o) where alpha >= 1/255
    inv_a = np.divide(1.0, a, out=np.zeros_like(a), where=a > 0)
    return np.concatenate([means2d, conics, opacities[..., None], levels[..., None], inv_a[..., None]], -1)


@nb.njit(cache=True)
def _tile(t, TW, TH, W, H):
    """Tile t of a [B, TH, TW] grid -> (b, x0, y0, x1, y1): its image and pixel box [x0, x1) x [y0, y1)."""
    ty, tx = (t // TW) % TH, t % TW
    x0, y0 = tx * TILE, ty * TILE
    return t // (TH * TW), x0, y0, min(x0 + TILE, W), min(y0 + TILE, H)


@nb.njit(parallel=True, cache=True, fastmath=True)
def blend_forward(gauss, colors, depths, radii, background, tile_offsets, ids,
                  image, alpha_out, depth_out, t_final, last, used, pairs):
    """Fill image [B, C, H, W], alpha_out/depth_out [B, 1, H, W], t_final/last [B, H, W],
    used [M] (list entries that blended at least one pixel) and pairs [tiles]."""
    B, _, C = colors.shape
    H, W = t_final.shape[1:]
    TW, TH = (W + TILE - 1) // TILE, (H + TILE - 1) // TILE
    for t in nb.prange(B * TH * TW):
        b, x0, y0, x1, y1 = _tile(t, TW, TH, W, H)
        n_pix = (x1 - x0) * (y1 - y0)
        T = np.ones(TILE * TILE)
        acc = np.zeros((TILE * TILE, C), np.float32)
        acc_z = np.zeros(TILE * TILE)
        end = np.zeros(TILE * TILE, np.int64)  # one past the last blended list entry
        done = np.zeros(TILE * TILE, np.bool_)
        lo = np.full(TILE, x0)  # pixels [lo, hi) of each row hold every one still blending
        hi = np.full(TILE, x1)
        n_done = 0
        n_pairs = 0
        for e in range(tile_offsets[t], tile_offsets[t + 1]):
            g = ids[e]
            u, v, ca, cb, cc = gauss[b, g, 0], gauss[b, g, 1], gauss[b, g, 2], gauss[b, g, 3], gauss[b, g, 4]
            o, level, inv_a = gauss[b, g, 5], gauss[b, g, 6], gauss[b, g, 7]
            z = depths[b, g]
            hit = False
            jy0, jy1 = _rows(v, radii[b, g, 1], y0, y1)
            for py in range(jy0, jy1):
                r = py - y0
                if lo[r] >= hi[r]:
                    continue
                dy = v - (np.float32(py) + HALF)
                jx0, jx1 = _span(u, dy, ca, cb, cc, inv_a, level, lo[r], hi[r])
                for px in range(jx0, jx1):  # no branch but the channels' and a pixel's stop
                    p = r * TILE + px - x0
                    dx = u - (np.float32(px) + HALF)
                    sigma = HALF * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
                    alpha = min(ALPHA_MAX32, o * _exp_neg(max(sigma, np.float32(0.0))))
                    Tp = T[p]
                    t_next = Tp * (1.0 - alpha)
                    ok = (sigma >= 0.0) & (alpha >= ALPHA_MIN32) & (not done[p])
                    blend = ok & (t_next > T_MIN)
                    w = alpha * Tp if blend else 0.0
                    if blend:
                        w32 = np.float32(w)
                        for k in range(C):
                            acc[p, k] += w32 * colors[b, g, k]
                    acc_z[p] += w * z
                    T[p] = t_next if blend else Tp
                    end[p] = e + 1 if blend else end[p]
                    n_pairs += blend
                    hit |= blend
                    if ok and not blend:  # T would reach T_MIN: the pixel stops here
                        done[p] = True
                        n_done += 1
                        while lo[r] < hi[r] and done[r * TILE + lo[r] - x0]:
                            lo[r] += 1
                        while hi[r] > lo[r] and done[r * TILE + hi[r] - 1 - x0]:
                            hi[r] -= 1
            used[e] = hit
            if n_done == n_pix:
                break
        for k in range(C):  # channel by channel: each image row is written in order (pixel by pixel
            for py in range(y0, y1):  # touched 32 pages per pixel: 8 ms at 256x256)
                for px in range(x0, x1):
                    p = (py - y0) * TILE + px - x0
                    image[b, k, py, px] = acc[p, k] + np.float32(T[p]) * background[b, k]
        for py in range(y0, y1):
            for px in range(x0, x1):
                p = (py - y0) * TILE + px - x0
                a = np.float32(1.0) - np.float32(T[p])
                alpha_out[b, 0, py, px] = a
                depth_out[b, 0, py, px] = acc_z[p] / max(a, 1e-10)
                t_final[b, py, px] = T[p]
                last[b, py, px] = end[p]
        pairs[t] = n_pairs


@nb.njit(parallel=True, cache=True, fastmath=True)
def blend_backward(gauss, colors, depths, radii, background, tile_offsets, ids, slots,
                   t_final, last, used, alpha_out, depth_out, g_image, g_alpha, g_depth, rows, g_background):
    """Fill rows [M, 7 + C] (list entry e in row slots[e]) and g_background [tiles, C] (per-tile sums)."""
    B, _, C = colors.shape
    H, W = t_final.shape[1:]
    TW, TH = (W + TILE - 1) // TILE, (H + TILE - 1) // TILE
    for t in nb.prange(B * TH * TW):
        b, x0, y0, x1, y1 = _tile(t, TW, TH, W, H)
        start = tile_offsets[t]
        T = np.ones(TILE * TILE)
        S = np.zeros(TILE * TILE)  # sum_{j>i} alpha_j T_j (c_j . g)
        tail = np.zeros(TILE * TILE)  # T_N dL/dT_N
        g_acc_z = np.zeros(TILE * TILE)  # dL/d(sum_i z_i alpha_i T_i)
        gl = np.zeros((TILE * TILE, C), np.float32)  # dL/dC(p), pixel-major
        end = np.zeros(TILE * TILE, np.int64)
        row_end = np.zeros(TILE, np.int64)  # max of end over each row
        e_max = start
        for k in range(C):  # channel by channel, rows in order (as the forward writes them)
            for py in range(y0, y1):
                for px in range(x0, x1):
                    gl[(py - y0) * TILE + px - x0, k] = g_image[b, k, py, px]
        for py in range(y0, y1):
            for px in range(x0, x1):
                p = (py - y0) * TILE + px - x0
                Tn = t_final[b, py, px]
                a = alpha_out[b, 0, py, px]
                gT = -g_alpha[b, 0, py, px]  # alpha = 1 - T_N
                for k in range(C):
                    gT += gl[p, k] * background[b, k]  # + T_N bg
                    g_background[t, k] += gl[p, k] * Tn
                if a > 1e-10:  # depth = acc_z / alpha
                    g_acc_z[p] = g_depth[b, 0, py, px] / a
                    gT += g_depth[b, 0, py, px] * depth_out[b, 0, py, px] / a
                T[p] = Tn
                tail[p] = gT * Tn
                end[p] = last[b, py, px]
                row_end[py - y0] = max(row_end[py - y0], end[p])
                e_max = max(e_max, end[p])
        d_colour = np.zeros(C, np.float32)
        for e in range(e_max - 1, start - 1, -1):
            if not used[e]:  # blended nowhere: its rows stay zero
                continue
            g = ids[e]
            u, v, ca, cb, cc = gauss[b, g, 0], gauss[b, g, 1], gauss[b, g, 2], gauss[b, g, 3], gauss[b, g, 4]
            o, level, inv_a = gauss[b, g, 5], gauss[b, g, 6], gauss[b, g, 7]
            z = depths[b, g]
            du = dv = da = db = dc = do = dz = 0.0
            d_colour[:] = 0.0
            jy0, jy1 = _rows(v, radii[b, g, 1], y0, y1)
            for py in range(jy0, jy1):
                if e >= row_end[py - y0]:
                    continue
                dy = v - (np.float32(py) + HALF)
                jx0, jx1 = _span(u, dy, ca, cb, cc, inv_a, level, x0, x1)
                for px in range(jx0, jx1):
                    p = (py - y0) * TILE + px - x0
                    if e >= end[p]:
                        continue
                    dx = u - (np.float32(px) + HALF)
                    sigma = HALF * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
                    if sigma < 0.0:
                        continue
                    vis = _exp_neg(sigma)
                    alpha = min(ALPHA_MAX32, o * vis)
                    if alpha < ALPHA_MIN32:
                        continue
                    inv = 1.0 / (1.0 - alpha)
                    T_i = T[p] * inv
                    w = alpha * T_i
                    cg = np.float32(0.0)  # c_i . g, and dL/dc_i += w g (one pass over the channels, no array views)
                    w32 = np.float32(w)
                    for k in range(C):
                        cg += colors[b, g, k] * gl[p, k]
                        d_colour[k] += w32 * gl[p, k]
                    cg_all = cg + z * g_acc_z[p]
                    dz += w * g_acc_z[p]
                    d_alpha = T_i * cg_all - (S[p] + tail[p]) * inv
                    S[p] += w * cg_all
                    T[p] = T_i
                    if o * vis <= ALPHA_MAX32:
                        do += d_alpha * vis
                        d_sigma = -d_alpha * alpha
                        ex, ey = np.float64(dx), np.float64(dy)
                        du += d_sigma * (ca * ex + cb * ey)
                        dv += d_sigma * (cc * ey + cb * ex)
                        da += d_sigma * 0.5 * ex * ex
                        db += d_sigma * ex * ey
                        dc += d_sigma * 0.5 * ey * ey
            r = slots[e]
            rows[r, 0], rows[r, 1], rows[r, 2], rows[r, 3] = du, dv, da, db
            rows[r, 4], rows[r, 5], rows[r, 6] = dc, do, dz
            for k in range(C):
                rows[r, NG + k] = d_colour[k]
