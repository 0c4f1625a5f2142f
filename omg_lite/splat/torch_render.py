"""The readable compositor: front-to-back alpha blending in plain torch (paper Sec. 3, 3DGS).

Every pixel p blends the Gaussians that cover it, nearest first:

    sigma_i = 1/2 (a dx^2 + c dy^2) + b dx dy,      (dx, dy) = mu'_i - (p + 0.5)
    alpha_i = min(0.999, o_i exp(-sigma_i))          (skipped when alpha_i < 1/255 or sigma_i < 0)
    T_i     = prod_{j<i} (1 - alpha_j)
    C(p)    = sum_i c_i alpha_i T_i

and stops before the first Gaussian that would bring T below 1e-4 (that one is not blended).

This is the teaching twin of the compiled tile compositor in ``numba_render.py``: same inputs,
same outputs, any device, autograd for the gradients. It lists every (Gaussian, pixel) pair in
the Gaussians' pixel boxes, sorts the pairs by pixel (a stable sort keeps depth order), takes
T_i = exp(sum_{j<i} log(1 - alpha_j)) as a segmented cumulative sum (float64, so long pixels
lose no precision) and adds the weighted colours with ``index_add``. Memory grows with the
number of pairs times channels, which is why the CPU default is the tile compositor.
"""

from __future__ import annotations

import torch
from torch import Tensor

from omg_lite.splat.project import ALPHA_MIN, Projection, pixel_box

ALPHA_MAX = 0.999
T_MIN = 1e-4


def composite_torch(
    proj: Projection,  # means2d [B, N, 2], conics [B, N, 3], radii [B, N, 2]
    opacities: Tensor,  # [B, N]
    colors: Tensor,  # [B, N, C]
    width: int,
    height: int,
) -> tuple[Tensor, Tensor, int]:
    """Blend Gaussians front to back: (colour sum [B, H, W, C], alpha [B, H, W], pairs blended)."""
    B, N, C = colors.shape
    device = colors.device

    # 1. Visible Gaussians, nearest first (a stable sort keeps this order inside each pixel).
    b, g = torch.nonzero((proj.radii > 0).any(-1), as_tuple=True)  # [M], [M]
    order = torch.argsort(proj.depths.detach()[b, g], stable=True)
    b, g = b[order], g[order]

    # 2. One pair per pixel of each Gaussian's box.
    x0, x1, y0, y1 = pixel_box(proj.means2d[b, g], proj.radii[b, g], width, height)
    w, h = x1 - x0, y1 - y0
    n = w * h  # [M] pixels per box
    gi = torch.repeat_interleave(torch.arange(len(n), device=device), n)  # [P] box of each pair
    k = torch.arange(len(gi), device=device) - (torch.cumsum(n, 0) - n)[gi]
    px = x0[gi] + k % w[gi]
    py = y0[gi] + torch.div(k, w[gi], rounding_mode="floor")
    pb, pg = b[gi], g[gi]

    # 3. alpha_i = min(0.999, o exp(-sigma)), kept when >= 1/255.
    d = proj.means2d[pb, pg] - torch.stack([px, py], -1).to(colors.dtype) - 0.5  # [P, 2]
    q = proj.conics[pb, pg]  # [P, 3]
    sigma = 0.5 * (q[:, 0] * d[:, 0] ** 2 + q[:, 2] * d[:, 1] ** 2) + q[:, 1] * d[:, 0] * d[:, 1]
    alpha = (opacities[pb, pg] * torch.exp(-sigma)).clamp(max=ALPHA_MAX)
    keep = (sigma >= 0) & (alpha >= ALPHA_MIN)
    alpha, pix, pb, pg = alpha[keep], ((pb * height + py) * width + px)[keep], pb[keep], pg[keep]

    # 4. Group the pairs by pixel; T before and after each pair from a segmented cumsum of log(1 - alpha).
    perm = torch.argsort(pix, stable=True)
    alpha, pix, pb, pg = alpha[perm], pix[perm], pb[perm], pg[perm]
    log_t = torch.log1p(-alpha.double())
    cum = torch.cumsum(log_t, 0)
    first = torch.ones_like(pix, dtype=torch.bool)
    first[1:] = pix[1:] != pix[:-1]
    seg = torch.cumsum(first.long(), 0) - 1
    cum = cum - (cum - log_t)[first][seg]  # sum over the pixel's pairs up to and including this one
    t_after = torch.exp(cum)
    t_before = torch.exp(cum - log_t).to(colors.dtype)

    # 5. Early termination: blend while T stays above 1e-4.
    live = t_after > T_MIN
    weight = (alpha * t_before)[live]  # alpha_i T_i
    pix, pb, pg = pix[live], pb[live], pg[live]
    image = torch.zeros(B * height * width, C, dtype=colors.dtype, device=device)
    image = image.index_add(0, pix, weight[:, None] * colors[pb, pg])
    acc = torch.zeros(B * height * width, dtype=colors.dtype, device=device).index_add(0, pix, weight)
    return image.reshape(B, height, width, C), acc.reshape(B, height, width), int(live.sum())
