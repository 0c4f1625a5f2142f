"""The GPU path: gsplat 1.5.3's CUDA rasterizer with omg_lite's inputs and outputs.

gsplat already uses the conventions ``render()`` documents (OpenCV camera, pixel centres at
+0.5, near plane 0.01, 0.3 px^2 dilation, alpha in [1/255, 0.999], early stop at T <= 1e-4),
so this is a thin wrapper: one camera per batch element, "RGB+ED" appends the expected depth.

PyPI's gsplat compiles its CUDA kernels on first use (it needs nvcc and ninja); where that build
or the first call fails, :func:`gsplat_usable` says so once and ``render(backend="auto")`` falls
back to the numba backend on the same device. Any exception counts as a failure there: the
build raises whatever the compiler, ninja or the loader raise, and each means "not usable".
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from omg_lite.geometry.camera import Camera

PREBUILT = "https://docs.gsplat.studio/whl (wheels for torch 2.0-2.4: pip install gsplat --index-url https://docs.gsplat.studio/whl/pt24cu124)"
_USABLE: dict[str, bool] = {}


class GsplatUnavailableWarning(UserWarning):
    """gsplat's CUDA rasterizer did not build or run: backend "auto" uses the numba backend."""


def _probe(device: torch.device) -> None:
    """Build gsplat's kernels (first use) and render one Gaussian at 8x8 on ``device``."""
    from gsplat.cuda._backend import _C

    if _C is None:
        raise RuntimeError("gsplat found no CUDA toolkit (nvcc) to build its kernels with")
    one = lambda *v: torch.tensor([[v]], device=device)  # noqa: E731
    render_gsplat(one(0.0, 0.0, 0.0), one(1.0, 0.0, 0.0, 0.0), one(0.1, 0.1, 0.1), torch.ones(1, 1, device=device),
                  one(1.0, 1.0, 1.0), Camera.frontal(batch=1, size=8).to(device))
    torch.cuda.synchronize(device)


def gsplat_usable(device: torch.device) -> bool:
    """Whether gsplat's rasterizer builds and runs on ``device``; the first failure warns once, later calls return False."""
    key = str(device)
    if key not in _USABLE:
        try:
            _probe(device)
            _USABLE[key] = True
        except Exception as e:  # noqa: BLE001 (see the module docstring)
            first = (str(e).strip().splitlines() or [""])[0][:300]
            warnings.warn(
                f"gsplat's CUDA rasterizer is not usable on {key} ({type(e).__name__}: {first}): backend 'auto' renders with "
                f"omg_lite's numba backend on {key} instead (same images, slower). For gsplat, give its first-use build nvcc and "
                f"ninja (the CUDA toolkit of your torch build), or install a prebuilt wheel: {PREBUILT}",
                GsplatUnavailableWarning,
                stacklevel=3,
            )
            _USABLE[key] = False
    return _USABLE[key]


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
        raise ValueError("backend='gsplat' needs CUDA tensors; use backend='numba' on the CPU")
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

