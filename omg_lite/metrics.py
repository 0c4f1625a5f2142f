"""Image metrics of a render against its truth: one path for training's held-out pass and ``omg-lite eval``.

The truth of a self-reenactment render is the driver frame on the renderer's background outside
its portrait mask M (the Gaussians model head and shoulders, not the backdrop):

    I_d = M rgb + (1 - M) bg                                   (:func:`composite`)

Whole-image scores, each image alone:

    PSNR  = 10 log10(1 / MSE)          torchmetrics, data range 1
    SSIM                               torchmetrics (Gaussian window 11, sigma 1.5, data range 1)
    LPIPS                              the lpips package, SqueezeNet trunk as in the release's evaluation
                                       (random trunk offline, labelled)

Face-region scores (``face_psnr``, ``face_ssim``, ``face_lpips``): the same three inside the
truth's **head mask** A (:func:`face_region`), the pixels where the head mesh, posed by the truth's
own (true or tracked) parameters and seen by its camera, is the nearest surface, its neck left out,
within the portrait mask. Whole-image PSNR is dominated by background and shirt; these say how the
face itself is rendered:

    face PSNR  = 10 log10(1 / MSE_A),   MSE_A = sum_{p in A} |I(p) - I_d(p)|^2 / (3 |A|)
    face SSIM  = mean_{p in A} SSIM(p)      the per-pixel SSIM map (torchmetrics), channels averaged
    face LPIPS = mean_{p in A} LPIPS(p)     lpips's spatial map (each layer's distance upsampled to the image)

The SSIM and LPIPS maps look at a window around each pixel, so pixels just outside A still weigh
in at its border; face PSNR sees A alone. An image whose region is empty has no face scores (NaN).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor

FACE_REGION = ("face region: inside the truth's head mask (the head mesh posed by the truth's parameters, neck left out, "
               "within the portrait mask)")


def composite(rgb: Tensor, mask: Tensor, background: float) -> Tensor:  # [B, 3, H, W], [B, 1, H, W] -> [B, 3, H, W]
    """I_d = M rgb + (1 - M) bg."""
    return rgb * mask + background * (1 - mask)


def psnr(pred: Tensor, target: Tensor) -> Tensor:  # [B, 3, H, W] x2 in [0, 1] -> [B]
    """PSNR per image, data range 1 (torchmetrics)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(pred: Tensor, target: Tensor) -> Tensor:  # [B, 3, H, W] x2 in [0, 1] -> [B]
    """SSIM per image (torchmetrics: Gaussian window 11, sigma 1.5, data range 1)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none")


def ssim_map(pred: Tensor, target: Tensor) -> Tensor:  # [B, 3, H, W] x2 -> [B, 1, H, W]
    """The per-pixel SSIM map, channels averaged; its mean over the image is :func:`ssim`."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _, full = structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none", return_full_image=True)
    return full.mean(1, keepdim=True)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:  # [B, C, H, W], [B, 1, H, W] {0, 1} -> [B] (NaN where the mask is empty)
    """Mean of ``x`` over the pixels (and channels) where ``mask`` is on."""
    m = mask.to(x.dtype).expand_as(x)
    return (x * m).sum((1, 2, 3)) / m.sum((1, 2, 3))


def masked_psnr(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:  # [B, 3, H, W] x2, [B, 1, H, W] -> [B]
    """PSNR over the pixels in ``mask`` only: 10 log10(1 / MSE_A)."""
    return -10 * torch.log10(masked_mean((pred - target).square(), mask))


def akd(pred: np.ndarray, target: np.ndarray) -> np.ndarray:  # [B, K, 2] x2 pixels -> [B]
    """Mean absolute coordinate error of landmarks, per image."""
    return np.abs(np.asarray(pred) - np.asarray(target)).mean(axis=(1, 2))


class Lpips:
    """LPIPS with the SqueezeNet trunk; ``label`` says whether the trunk is real or random (offline)."""

    def __init__(self, device: torch.device | str = "cpu"):
        from omg_lite.train.losses import build_lpips

        self.net, self.label = build_lpips("squeeze")
        self.net.to(device)
        self._spatial = copy.copy(self.net)  # the same layers, returning the distance map
        self._spatial.spatial = True

    @torch.no_grad()
    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:  # [B, 3, H, W] x2 in [0, 1] -> [B]
        return self.net(pred, target, normalize=True).flatten()

    @torch.no_grad()
    def map(self, pred: Tensor, target: Tensor) -> Tensor:  # [B, 3, H, W] x2 in [0, 1] -> [B, 1, H, W]
        return self._spatial(pred, target, normalize=True)


@torch.no_grad()
def face_region(head, params, camera, portrait_mask: Tensor) -> Tensor:  # -> [B, 1, H, W] float {0, 1}
    """The truth's head mask A: the head mesh posed by ``params`` [B] through ``camera`` [B], nearest
    surface and not a neck face (all three vertices in the head model's "neck" region), AND the portrait
    mask [B, 1, H, W]."""
    from omg_lite.geometry.zbuffer import rasterize

    dev = portrait_mask.device
    head_dev = head.faces.device
    verts = camera.to(head_dev).world_to_camera(head(params.to(head_dev)).vertices)  # [B, V, 3]
    faces = head.faces.long()
    neck = head.regions.get("neck")
    keep = torch.ones(len(faces), dtype=torch.bool, device=head_dev) if neck is None else ~neck[faces].all(1)
    frags = rasterize(verts, faces, camera.K.to(head_dev), camera.height, camera.width)
    on = frags.mask & keep[frags.face_idx.clamp_min(0)]  # [B, H, W]
    return on[:, None].to(dev, portrait_mask.dtype) * (portrait_mask > 0.5).to(portrait_mask.dtype)


class ImageMetrics:
    """PSNR / SSIM / LPIPS of renders against truths, whole image and (with a region) face region."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.lpips = Lpips(device)

    @property
    def label(self) -> str:
        return self.lpips.label

    @torch.no_grad()
    def __call__(self, pred: Tensor, truth: Tensor, face: Tensor | None = None) -> dict[str, Tensor]:  # -> name: [B]
        """``pred``, ``truth`` [B, 3, H, W] in [0, 1]; ``face`` [B, 1, H, W] the region A (:func:`face_region`)."""
        out = {"psnr": psnr(pred, truth), "ssim": ssim(pred, truth), "lpips": self.lpips(pred, truth)}
        if face is not None:
            out.update(face_psnr=masked_psnr(pred, truth, face), face_ssim=masked_mean(ssim_map(pred, truth), face),
                       face_lpips=masked_mean(self.lpips.map(pred, truth), face))
        return out
