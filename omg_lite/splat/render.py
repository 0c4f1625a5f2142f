"""``render()``: 3D Gaussian splatting of multi-channel features (paper Sec. 3, "Rendering").

    C(p) = sum_i f_i alpha_i T_i + T_N bg,   alpha_i = min(0.999, o_i exp(-1/2 d^T Sigma'^-1 d)),
    T_i = prod_{j<i} (1 - alpha_j),           Sigma' = J W Sigma W^T J^T + 0.3 I

Conventions, the same for every backend (they are gsplat 1.5.3's defaults):

- Camera: ``omg_lite.geometry.camera.Camera``, OpenCV axes (x right, y down, z forward);
  the image is ``camera.width`` x ``camera.height``.
- Pixels: pixel (i, j) is evaluated at its centre (j + 0.5, i + 0.5).
- Near plane 0.01 (camera z, same units as ``means``): Gaussians with z <= 0.01 are dropped
  (z >= 1e10 too). Gaussians whose box (below) misses the image contribute nothing.
- Low-pass: 0.3 px^2 is added to the diagonal of every 2D covariance, with no opacity
  compensation (gsplat's "classic" mode).
- Radius: the box culling Gaussians spans ceil(k sqrt(Sigma'_xx)) by ceil(k sqrt(Sigma'_yy))
  pixels with k = min(3.33, sqrt(2 ln(255 o))): exactly where alpha can reach 1/255.
- Alpha: alpha < 1/255 is skipped, alpha is clamped to 0.999.
- Early termination: a pixel stops before the first Gaussian that would bring its
  transmittance T to 1e-4 or below (that Gaussian is not blended).
- Outputs: ``image`` [B, C, H, W] (background blended as T_N bg; channels-last memory on the
  CPU paths, the layout the refiner's convolutions read), ``alpha`` = 1 - T_N
  [B, 1, H, W], ``depth`` [B, 1, H, W] = the alpha-weighted expected camera z,
  sum_i z_i alpha_i T_i / max(alpha, 1e-10) (0 where nothing was drawn; no background).

Input handling: quaternions (w, x, y, z) are normalised inside (a zero one is a ValueError);
scales are linear, clamped below at 1e-8 (a negative one is a ValueError); opacities must lie in
[0, 1]; NaN or Inf in any input is a ValueError naming it; N = 0 renders the background.

Backends, named for what runs: ``"numba"`` is ours: on CPU tensors the compiled path of
``numba_render.py`` (EWA projection and 16x16-tile blending, forward and backward, in float32);
on other devices, or when the camera itself needs gradients, the readable path (projection of
``project.py`` and the compositor of ``torch_render.py``, autograd for gradients).
``"reference"`` always takes the readable pure-torch path; ``"gsplat"`` calls
``gsplat.rasterization`` (CUDA only); ``"auto"`` picks gsplat on CUDA tensors and numba
otherwise, and numba on CUDA too where gsplat's kernels fail to build or run (one warning,
``gsplat_backend.gsplat_usable``). Deprecated: ``"torch"``, the old name of ``"numba"``, is still
accepted (old scripts, notebooks and command lines) with a ``DeprecationWarning``. All are differentiable with respect to means, quats,
scales, opacities, features and background. ``RenderOutput.pairs`` counts the Gaussian-pixel
pairs blended (alpha >= 1/255, before the pixel's early stop); gsplat does not report it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from omg_lite.geometry.camera import Camera
from omg_lite.splat.gsplat_backend import gsplat_usable, render_gsplat
from omg_lite.splat.project import INPUT_ERRORS, SCALE_MIN, project_gaussians
from omg_lite.splat.torch_render import composite_torch

BACKENDS = ("auto", "numba", "reference", "gsplat")
BACKEND_ALIASES = {"torch": "numba"}  # deprecated name -> backend


@dataclass
class RenderOutput:
    image: Tensor  # [B, C, H, W]
    alpha: Tensor  # [B, 1, H, W] accumulated opacity 1 - T_N
    depth: Tensor  # [B, 1, H, W] alpha-weighted expected camera z (0 where alpha = 0)
    pairs: int | None = None  # Gaussian-pixel pairs blended (numba / reference; None for gsplat)


def render(
    means: Tensor,  # [B, N, 3] world
    quats: Tensor,  # [B, N, 4] (w, x, y, z), any norm but zero
    scales: Tensor,  # [B, N, 3] linear
    opacities: Tensor,  # [B, N] in [0, 1]
    features: Tensor,  # [B, N, C]
    camera: Camera,
    background: Tensor | None = None,  # [B, C] or [C]; None = zeros
    backend: str = "auto",
) -> RenderOutput:
    """Splat Gaussians with C-channel features into [B, C, H, W] images (see the module docstring)."""
    if backend in BACKEND_ALIASES:
        warnings.warn(f"render(backend={backend!r}) is deprecated: say backend={BACKEND_ALIASES[backend]!r}", DeprecationWarning, stacklevel=2)
        backend = BACKEND_ALIASES[backend]
    background = _check_shapes(means, quats, scales, opacities, features, camera, background, backend)
    C = features.shape[2]
    W, H = camera.width, camera.height
    if backend == "auto":
        backend = "gsplat" if means.is_cuda and gsplat_usable(means.device) else "numba"
    camera_grad = any(x.requires_grad for x in (camera.K, camera.R, camera.t))
    if backend == "numba" and not means.is_cuda and not camera_grad:
        fast = _fast_renderer()
        if fast is not None:  # validates the values itself, inside its projection kernel
            image, alpha, depth, pairs = fast(means, quats, scales, opacities, features, background, camera)
            return RenderOutput(image=image, alpha=alpha, depth=depth, pairs=pairs)

    _check_values(means, quats, scales, opacities, features)
    scales = scales.clamp_min(SCALE_MIN)
    if backend == "gsplat":
        colour, alpha, depth = render_gsplat(means, quats, scales, opacities, features, camera)
        pairs = None
    else:
        proj = project_gaussians(means, quats, scales, camera.to(means.device, means.dtype), opacities)
        colors = torch.cat([features, proj.depths[..., None]], -1)  # depth rides along as channel C
        acc, alpha, pairs = composite_torch(proj, opacities, colors, W, H)
        colour, depth = acc[..., :C], acc[..., C] / alpha.clamp_min(1e-10)

    image = colour + (1.0 - alpha)[..., None] * background[:, None, None, :]  # + T_N bg
    return RenderOutput(
        image=image.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last),
        alpha=alpha[:, None],
        depth=depth[:, None],
        pairs=pairs,
    )


def _fast_renderer():
    """The compiled CPU renderer, or None (with a warning) where numba is missing."""
    try:
        from omg_lite.splat.numba_render import render_numba
    except ImportError:
        warnings.warn("numba is not installed: rendering on the CPU with the slow readable compositor "
                      "(pip install numba for the fast one)", stacklevel=3)
        return None
    return render_numba


def _check_shapes(means, quats, scales, opacities, features, camera, background, backend) -> Tensor:
    """Validate shapes, devices and the camera (one clear ValueError each); return the background [B, C]."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if not isinstance(camera, Camera):
        raise ValueError(f"camera must be an omg_lite.geometry.camera.Camera, got {type(camera).__name__}")
    if features.ndim != 3:
        raise ValueError(f"features must be [B, N, C], got shape {list(features.shape)}")
    B, N, C = features.shape
    expected = {"means": (B, N, 3), "quats": (B, N, 4), "scales": (B, N, 3), "opacities": (B, N)}
    given = {"means": means, "quats": quats, "scales": scales, "opacities": opacities}
    for name, x in given.items():
        if tuple(x.shape) != expected[name]:
            raise ValueError(f"{name} must be {list(expected[name])} to match features [B, N, C] = "
                             f"{[B, N, C]}, got {list(x.shape)}: every input needs the same B and N")
    if camera.batch != B:
        raise ValueError(f"camera has batch {camera.batch} but the Gaussians have batch {B}: one camera per batch element")
    if background is None:
        background = features.new_zeros(B, C)
    elif tuple(background.shape) == (C,):
        background = background.expand(B, C)
    elif tuple(background.shape) != (B, C):
        raise ValueError(f"background must be [B, C] = {[B, C]} or [C], got {list(background.shape)}")
    tensors = {**given, "features": features, "background": background,
               "camera.K": camera.K, "camera.R": camera.R, "camera.t": camera.t}
    for name, x in tensors.items():
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
        if x.device != means.device:
            raise ValueError(f"{name} is on {x.device} but means is on {means.device}: move every input to one device")
    for name in ("background", "camera.K", "camera.R", "camera.t"):
        if not bool(torch.isfinite(tensors[name]).all()):
            raise ValueError(f"{name} contains NaN or Inf")
    return background


def _check_values(means, quats, scales, opacities, features) -> None:
    """NaN/Inf, zero quaternions, negative scales, opacities outside [0, 1]: one clear ValueError."""
    for code, x in enumerate((means, quats, scales, opacities, features), start=1):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(INPUT_ERRORS[code])
    if bool((quats.detach() == 0).all(-1).any()):
        raise ValueError(INPUT_ERRORS[6])
    if bool((scales.detach() < 0).any()):
        raise ValueError(INPUT_ERRORS[7])
    if bool(((opacities.detach() < 0) | (opacities.detach() > 1)).any()):
        raise ValueError(INPUT_ERRORS[8])
