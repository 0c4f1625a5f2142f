"""The GPU path: gsplat 1.5.3's CUDA rasterizer with omg_lite's inputs and outputs.

gsplat already uses the conventions ``render()`` documents (OpenCV camera, pixel centres at
+0.5, near plane 0.01, 0.3 px^2 dilation, alpha in [1/255, 0.999], early stop at T <= 1e-4),
so this is a thin wrapper: one camera per batch element, "RGB+ED" appends the expected depth.
"""

from __future__ import annotations

from torch import Tensor

from omg_lite.geometry.camera import Camera


def render_gsplat(
    means: Tensor,  # [B, N, 3]
    quats: Tensor,  # [B, N, 4]
    scales: Tensor,  # [B, N, 3]
    opacities: Tensor,  # [B, N]
    features: Tensor,  # [B, N, C]
    camera: Camera,
) -> tuple[Tensor, Tensor, Tensor]:
    """(colour sum [B, H, W, C], alpha [B, H, W], expected depth [B, H, W]) on a background of zeros."""
    if not means.is_cuda:
        raise ValueError("backend='gsplat' needs CUDA tensors; use backend='torch' on the CPU")
    from gsplat import rasterization

    cam = camera.to(means.device, means.dtype)
    colors, alphas, _ = rasterization(
        means, quats, scales, opacities, features,
        viewmats=cam.viewmat[:, None], Ks=cam.K[:, None],
        width=camera.width, height=camera.height,
        render_mode="RGB+ED", packed=False,
    )  # [B, 1, H, W, C + 1], [B, 1, H, W, 1]
    colors, alphas = colors[:, 0], alphas[:, 0, ..., 0]
    return colors[..., :-1], alphas, colors[..., -1]

