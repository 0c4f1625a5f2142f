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
Gaussian's consecutive rows. Computation is in float32 (the backward recovers transmittance in
float64), whatever the input dtype; camera parameters get no gradient here (``render`` then takes
the readable path). Both blend passes compile with fastmath (about 10 % less CPU time each,
measured; results move by ~1e-7): its no-NaN/no-inf assumption holds because the projection's
status codes reject non-finite inputs before blending.

Speed. Gaussians are small here: on the benchmark's 80K cloud a blending row spans 2.6 pixels on
average, on the lite avatar at LOD 0 five. So the pixel loop is scalar and SIMD runs across
the C channels (the colour row of a pixel, 32 floats). Blending a pair takes about 40-60 ns on
one core of an AVX2 CPU: the per-pixel chain sigma -> exp -> alpha -> T is most of it, and
the channels about 6 ns. Choices (measured; the sign flag, the table-free 2^-n and the
channels-last image together took ``bench render``'s forward at 80K from 137 to 118 ms, medians
of three alternated runs):
- sigma and alpha are float32, with an inline exp (``_exp_neg``; libm's expf was a call per pixel;
  its 2^-n is an integer shift, not a table lookup);
- a stopped pixel is marked by negating its transmittance (no second array to read per pixel);
- each Gaussian's blending inputs sit in one row (``pack``);
- each row's pixel range shrinks past pixels that have stopped;
- the image is written channels last [B, H, W, C]: one contiguous colour row per pixel, and the
  layout the refiner's convolutions read, so it needs no transposition (4.4 ms at 256x256, C = 32).
Tried, not kept (no gain): lanes of 8 pixels per row half in SIMD, whole or with the channels
per pixel (slower: at 2.6-5 pixels per row most lanes are idle); branch-free pixel updates.
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
POW2_M31 = np.float32(2.0**-31)
ZERO, ONE = np.float32(0.0), np.float32(1.0)
ALPHA_MIN32, ALPHA_MAX32, T_MIN32 = np.float32(ALPHA_MIN), np.float32(ALPHA_MAX), np.float32(T_MIN)


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
    Taylor polynomial (truncation y^7/7! < 1.3e-7 relative; with float32 rounding of s log2 e the
    error stays below 2.5e-7 (1 + s) relative, tested against libm) times 2^-n = (1 << (31 - n)) 2^-31
    (exact, integer arithmetic: no table to look up); s is capped where exp(-s) < 2^-31.
    """
    x = min(s * LOG2E, np.float32(31.0))
    n = int(x + HALF)  # 0..31
    y = (x - np.float32(n)) * LN2
    p = ONE - y * (ONE - y * (np.float32(1 / 2) - y * (np.float32(1 / 6) - y * (
        np.float32(1 / 24) - y * (np.float32(1 / 120) - y * np.float32(1 / 720))))))
    return p * (np.float32(np.int64(1) << (31 - n)) * POW2_M31)  # int64: 1 << 31 must not wrap


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
    """Fill image [B, H, W, C] (channels last), alpha_out/depth_out [B, 1, H, W], t_final/last [B, H, W],
    used [M] (list entries that blended at least one pixel) and pairs [tiles]."""
    B, _, C = colors.shape
    H, W = t_final.shape[1:]
    TW, TH = (W + TILE - 1) // TILE, (H + TILE - 1) // TILE
    for t in nb.prange(B * TH * TW):
        b, x0, y0, x1, y1 = _tile(t, TW, TH, W, H)
        n_pix = (x1 - x0) * (y1 - y0)
        T = np.ones(TILE * TILE, np.float32)  # transmittance; negated once the pixel has stopped
        acc = np.zeros((TILE * TILE, C), np.float32)
        acc_z = np.zeros(TILE * TILE, np.float32)
        end = np.zeros(TILE * TILE, np.int64)  # one past the last blended list entry
        lo = np.full(TILE, x0)  # pixels [lo, hi) of each row hold every one still blending
        hi = np.full(TILE, x1)
        n_done = 0
        n_pairs = 0
        for e in range(tile_offsets[t], tile_offsets[t + 1]):
            g = ids[e]
            u, v, ca, cb, cc = gauss[b, g, 0], gauss[b, g, 1], gauss[b, g, 2], gauss[b, g, 3], gauss[b, g, 4]
            o, level, inv_a = gauss[b, g, 5], gauss[b, g, 6], gauss[b, g, 7]
            z = depths[b, g]
            colour = colors[b, g]
            hit = False
            jy0, jy1 = _rows(v, radii[b, g, 1], y0, y1)
            for py in range(jy0, jy1):
                r = py - y0
                if lo[r] >= hi[r]:
                    continue
                dy = v - (np.float32(py) + HALF)
                jx0, jx1 = _span(u, dy, ca, cb, cc, inv_a, level, lo[r], hi[r])
                sigma_y, b_dy = HALF * cc * dy * dy, cb * dy  # sigma = 1/2 a dx^2 + b dy dx + 1/2 c dy^2
                for px in range(jx0, jx1):
                    p = r * TILE + px - x0
                    dx = u - (np.float32(px) + HALF)
                    sigma = HALF * ca * dx * dx + b_dy * dx + sigma_y
                    alpha = min(ALPHA_MAX32, o * _exp_neg(max(sigma, ZERO)))
                    Tp = T[p]
                    if not ((sigma >= ZERO) & (alpha >= ALPHA_MIN32) & (Tp > ZERO)):
                        continue
                    t_next = Tp * (ONE - alpha)
                    if t_next > T_MIN32:
                        w = alpha * Tp
                        acc_p = acc[p]
                        for k in range(C):
                            acc_p[k] += w * colour[k]
                        acc_z[p] += w * z
                        T[p] = t_next
                        end[p] = e + 1
                        n_pairs += 1
                        hit = True
                    else:  # T would reach T_MIN: the pixel stops here
                        T[p] = -Tp
                        n_done += 1
                        while lo[r] < hi[r] and T[r * TILE + lo[r] - x0] < ZERO:
                            lo[r] += 1
                        while hi[r] > lo[r] and T[r * TILE + hi[r] - 1 - x0] < ZERO:
                            hi[r] -= 1
            used[e] = hit
            if n_done == n_pix:
                break
        for py in range(y0, y1):
            for px in range(x0, x1):
                p = (py - y0) * TILE + px - x0
                Tp = abs(T[p])
                for k in range(C):
                    image[b, py, px, k] = acc[p, k] + Tp * background[b, k]
                a = ONE - Tp
                alpha_out[b, 0, py, px] = a
                depth_out[b, 0, py, px] = acc_z[p] / max(a, np.float32(1e-10))
                t_final[b, py, px] = Tp
                last[b, py, px] = end[p]
        pairs[t] = n_pairs


@nb.njit(parallel=True, cache=True, fastmath=True)
def blend_backward(gauss, colors, depths, radii, background, tile_offsets, ids, slots,
                   t_final, last, used, alpha_out, depth_out, g_image, g_alpha, g_depth, rows, g_background):
    """Fill rows [M, 7 + C] (list entry e in row slots[e]) and g_background [tiles, C] (per-tile sums);
    g_image is [B, H, W, C] (channels last, as the forward writes the image)."""
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
        for py in range(y0, y1):
            for px in range(x0, x1):
                p = (py - y0) * TILE + px - x0
                Tn = t_final[b, py, px]
                a = alpha_out[b, 0, py, px]
                gT = -g_alpha[b, 0, py, px]  # alpha = 1 - T_N
                for k in range(C):
                    gl[p, k] = g_image[b, py, px, k]
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
            colour = colors[b, g]
            du = dv = da = db = dc = do = dz = 0.0
            d_colour[:] = 0.0
            jy0, jy1 = _rows(v, radii[b, g, 1], y0, y1)
            for py in range(jy0, jy1):
                if e >= row_end[py - y0]:
                    continue
                dy = v - (np.float32(py) + HALF)
                jx0, jx1 = _span(u, dy, ca, cb, cc, inv_a, level, x0, x1)
                sigma_y, b_dy = HALF * cc * dy * dy, cb * dy
                for px in range(jx0, jx1):
                    p = (py - y0) * TILE + px - x0
                    if e >= end[p]:
                        continue
                    dx = u - (np.float32(px) + HALF)
                    sigma = HALF * ca * dx * dx + b_dy * dx + sigma_y
                    if sigma < 0.0:
                        continue
                    vis = _exp_neg(sigma)
                    alpha = min(ALPHA_MAX32, o * vis)
                    if alpha < ALPHA_MIN32:
                        continue
                    inv = 1.0 / (1.0 - alpha)
                    T_i = T[p] * inv
                    w = alpha * T_i
                    cg = np.float32(0.0)  # c_i . g, and dL/dc_i += w g (one pass over the channels)
                    w32 = np.float32(w)
                    gl_p = gl[p]
                    for k in range(C):
                        cg += colour[k] * gl_p[k]
                        d_colour[k] += w32 * gl_p[k]
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
