"""The fast CPU path: 16x16 tiles compiled with numba, forward and backward (paper Sec. 3, 3DGS).

Same blending as the readable twin in ``torch_render.py``, same projection as ``project.py``:

    alpha_i = min(0.999, o_i exp(-sigma_i)),  T_i = prod_{j<i} (1 - alpha_j),
    C(p) = sum_i c_i alpha_i T_i + T_N bg,    D(p) = sum_i z_i alpha_i T_i / max(1 - T_N, 1e-10)

Why hand-written: gsplat's rasterizer is CUDA only, and in plain torch the pair lists cost
sorts and [pairs, C] tensors, and every small op pays a thread wake-up. Here a render is four
compiled passes: project (``numba_project.py``), bin (one depth sort, then a counting sort of
Gaussians into the tiles their boxes touch, so each tile's list is depth-ordered), blend (tiles
in parallel; each walks its list once, visits per row only the pixels where
sigma <= ln(255 o) can hold, and stops when every pixel is done) and, for gradients, the
reverse. numba is a pip wheel; the kernels are compiled on first use and cached on disk. They
run on numba's thread pool (all cores; set NUMBA_NUM_THREADS to use fewer on a shared machine).
The pool is numba's own ``workqueue`` layer unless NUMBA_THREADING_LAYER says otherwise: with
its OpenMP layer, numba and torch share one OpenMP runtime, every render resets torch's thread
count to numba's (``torch.set_num_threads(1)`` stops holding), and torch's convolutions then
ran 5-6x slower on a loaded 2-core machine (measured: the lite refiner at 256x256, 300 ms of
CPU instead of 51). The workqueue layer blends as fast; it must not be entered from two Python
threads at once (omg_lite renders from one).

The blend kernels, forward and backward, are in ``numba_blend.py``.
"""

from __future__ import annotations

import math
import os

import numba as nb
import numpy as np
import torch
from torch import Tensor

from omg_lite.geometry.camera import Camera
from omg_lite.splat import numba_project as nproj
from omg_lite.splat.numba_blend import NG, TILE, blend_backward, blend_forward, pack

if "NUMBA_THREADING_LAYER" not in os.environ:  # before the first parallel kernel runs (see the docstring)
    nb.config.THREADING_LAYER = "workqueue"

# Tiles handed to a thread at a time: tiles cost very different amounts (background vs face),
# so threads take small chunks as they finish instead of one equal share each.
CHUNK = 8


def depth_order(
    depths: np.ndarray,  # [B, N] float32
    radii: np.ndarray,  # [B, N, 2] int32
) -> np.ndarray:  # [B, N] int64
    """Gaussian ids by increasing depth, ties by id, culled ones last.

    Sorts int64 keys (depth bits << 32 | id): positive float32 depths order like their bit
    patterns, and distinct keys make any sort behave like a stable one (numpy's SIMD sort).
    """
    B, N = depths.shape
    keys = (depths.view(np.int32).astype(np.int64) << 32) | np.arange(N, dtype=np.int64)
    culled = (radii == 0).all(-1)
    keys[culled] = (np.int64(0x7FFFFFFF) << 32) | keys[culled] & 0xFFFFFFFF  # above every finite depth
    return np.sort(keys, axis=1) & 0xFFFFFFFF


@nb.njit(cache=True)
def bin_tiles(means2d, radii, order, width, height):
    """Depth-ordered Gaussian ids per tile (CSR: tile_offsets, ids), and for each list entry its
    slot in a Gaussian-major layout (Gaussian (b, g) owns slots g_offsets[b N + g] onwards)."""
    B, N = order.shape
    TW = (width + TILE - 1) // TILE
    TH = (height + TILE - 1) // TILE
    box = np.zeros((B, N, 4), np.int64)  # tiles [tx0, tx1) x [ty0, ty1)
    per_tile = np.zeros(B * TH * TW + 1, np.int64)
    g_offsets = np.zeros(B * N + 1, np.int64)
    for b in range(B):
        for g in range(N):
            rx, ry = radii[b, g, 0], radii[b, g, 1]
            if rx == 0 and ry == 0:
                continue
            u, v = means2d[b, g, 0], means2d[b, g, 1]
            tx0 = min(max(int(math.floor((u - rx) / TILE)), 0), TW)
            tx1 = min(max(int(math.ceil((u + rx) / TILE)), 0), TW)
            ty0 = min(max(int(math.floor((v - ry) / TILE)), 0), TH)
            ty1 = min(max(int(math.ceil((v + ry) / TILE)), 0), TH)
            box[b, g, 0], box[b, g, 1], box[b, g, 2], box[b, g, 3] = tx0, tx1, ty0, ty1
            g_offsets[b * N + g + 1] = (tx1 - tx0) * (ty1 - ty0)
            for ty in range(ty0, ty1):
                for tx in range(tx0, tx1):
                    per_tile[(b * TH + ty) * TW + tx + 1] += 1
    tile_offsets = np.cumsum(per_tile)
    g_offsets = np.cumsum(g_offsets)
    ids = np.empty(tile_offsets[-1], np.int32)  # Gaussian id of each list entry
    slots = np.empty(tile_offsets[-1], np.int64)  # Gaussian-major slot of each list entry
    cursor = tile_offsets[:-1].copy()
    for b in range(B):
        for g in order[b]:
            k = g_offsets[b * N + g]
            for ty in range(box[b, g, 2], box[b, g, 3]):
                for tx in range(box[b, g, 0], box[b, g, 1]):
                    t = (b * TH + ty) * TW + tx
                    ids[cursor[t]] = g
                    slots[cursor[t]] = k
                    cursor[t] += 1
                    k += 1
    return tile_offsets, ids, g_offsets, slots


def _f32(x: Tensor) -> np.ndarray:
    return x.detach().to(torch.float32).contiguous().numpy()


def _f64(x: Tensor) -> np.ndarray:
    return x.detach().to(torch.float64).contiguous().numpy()


class _FastSplat(torch.autograd.Function):
    """(means, quats, scales, opacities, features, background) -> (image, alpha, depth, pairs)."""

    @staticmethod
    def forward(ctx, means, quats, scales, opacities, features, background, camera: Camera):
        B, N, C = features.shape
        W, H = camera.width, camera.height
        m, q, s, o, f, bg = (_f32(x) for x in (means, quats, scales, opacities, features, background))
        K, R, t = _f64(camera.K), _f64(camera.R), _f64(camera.t)
        means2d = np.zeros((B, N, 2), np.float32)
        conics = np.zeros((B, N, 3), np.float32)
        depths = np.zeros((B, N), np.float32)
        radii = np.zeros((B, N, 2), np.int32)
        status = np.zeros((B, N), np.int8)
        nproj.project_forward(m, q, s, o, f, K, R, t, W, H, True, means2d, conics, depths, radii, status)
        message = nproj.status_error(status)
        if message is not None:
            raise ValueError(message)
        tile_offsets, ids, g_offsets, slots = bin_tiles(means2d, radii, depth_order(depths, radii), W, H)
        image = np.empty((B, H, W, C), np.float32)  # channels last: the refiner's convolutions read this layout
        alpha = np.empty((B, 1, H, W), np.float32)
        depth = np.empty((B, 1, H, W), np.float32)
        t_final = np.empty((B, H, W), np.float64)
        last = np.empty((B, H, W), np.int64)
        used = np.zeros(len(ids), np.bool_)
        pairs = np.zeros(len(tile_offsets) - 1, np.int64)
        gauss = pack(means2d, conics, o)
        with nb.parallel_chunksize(CHUNK):
            blend_forward(gauss, f, depths, radii, bg, tile_offsets, ids,
                          image, alpha, depth, t_final, last, used, pairs)
        ctx.arrays = (m, q, s, gauss, f, bg, K, R, t, means2d, conics, depths, radii,
                      tile_offsets, ids, g_offsets, slots, t_final, last, used, alpha.copy(), depth.copy())
        ctx.size = (W, H)
        dtype = means.dtype
        outs = [torch.from_numpy(x).to(dtype) for x in (image.transpose(0, 3, 1, 2), alpha, depth)]  # image [B, C, H, W] view
        pairs_t = torch.tensor(int(pairs.sum()))
        ctx.mark_non_differentiable(pairs_t)
        return (*outs, pairs_t)

    @staticmethod
    def backward(ctx, g_image, g_alpha, g_depth, _g_pairs):
        (m, q, s, gauss, f, bg, K, R, t, means2d, conics, depths, radii,
         tile_offsets, ids, g_offsets, slots, t_final, last, used, alpha, depth) = ctx.arrays
        W, H = ctx.size
        B, N, C = f.shape
        rows = np.zeros((len(ids), NG + C), np.float32)
        g_bg = np.zeros((len(tile_offsets) - 1, C), np.float64)
        g_means = np.zeros((B, N, 3), np.float32)
        g_quats = np.zeros((B, N, 4), np.float32)
        g_scales = np.zeros((B, N, 3), np.float32)
        g_opac = np.zeros((B, N), np.float32)
        g_feat = np.zeros((B, N, C), np.float32)
        with nb.parallel_chunksize(CHUNK):
            blend_backward(gauss, f, depths, radii, bg, tile_offsets, ids, slots, t_final, last,
                           used, alpha, depth, _f32(g_image.permute(0, 2, 3, 1)), _f32(g_alpha), _f32(g_depth), rows, g_bg)
        nproj.project_backward(m, q, s, K, R, t, W, H, radii, conics, rows, g_offsets,
                               g_means, g_quats, g_scales, g_opac, g_feat)
        g_bg = g_bg.reshape(B, -1, C).sum(1)
        dtype = g_image.dtype
        grads = [torch.from_numpy(x).to(dtype) for x in (g_means, g_quats, g_scales, g_opac, g_feat, g_bg)]
        return (*grads, None)


def render_numba(
    means: Tensor,  # [B, N, 3]
    quats: Tensor,  # [B, N, 4]
    scales: Tensor,  # [B, N, 3]
    opacities: Tensor,  # [B, N]
    features: Tensor,  # [B, N, C]
    background: Tensor,  # [B, C]
    camera: Camera,
) -> tuple[Tensor, Tensor, Tensor, int]:
    """(image [B, C, H, W], alpha [B, 1, H, W], depth [B, 1, H, W], pairs blended); CPU tensors."""
    image, alpha, depth, pairs = _FastSplat.apply(means, quats, scales, opacities, features, background, camera)
    return image, alpha, depth, int(pairs)
