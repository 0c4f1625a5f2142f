"""The training loss (paper Sec. 4.1, "Loss & Training").

    L = lambda1 L_2 + lambda2 L_SSIM + lambda3 L_percep + lambda4 L_reg,   lambda = (10, 1, 0.1, 0.1)

on both the coarse image I_c (the first 3 channels of the splatted feature image) and the refined
image I_r, against the driver frame I_d; the regulariser is counted once:

    L = sum_{I in {I_c, I_r}} [ lambda1 mean (I - I_d)^2 + lambda2 (1 - SSIM(I, I_d)) + lambda3 LPIPS(I, I_d) ]
        + lambda4 L_reg,        L_reg = mean_{b, v} ||delta_{b,v}||_2

with delta = Psi_offset(F_global) the per-vertex offsets [B, V0, 3]. We read the paper's
||offset||_2 as the mean Euclidean length of the vertex offsets (the norm of the whole tensor
would grow with sqrt(V) and with the batch). SSIM is torchmetrics' (Gaussian window 11, sigma 1.5,
data range 1, the standard settings; its map is averaged over the whole image, borders padded by
reflection); LPIPS is the `lpips` package's. With the refiner ablated
(``refined`` is None) only I_c is scored.

LPIPS needs ImageNet weights for its trunk (torchvision's AlexNet / VGG16 / SqueezeNet). They are
used when torchvision's file is already in the torch hub cache (TORCH_HOME); otherwise the trunk
is random (``pnet_rand=True``, fixed seed, the shipped linear heads) with ONE loud warning, and
the term is labelled "LPIPS (random trunk, offline)" wherever it is logged: it is then a fixed
random-feature distance, not the perceptual metric.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics.functional.image import structural_similarity_index_measure

LPIPS_NETS = ("alex", "vgg", "squeeze")
LPIPS_RANDOM_SEED = 0
MIN_SIZE = 32  # AlexNet's strides and pools need 32 pixels for LPIPS; SSIM's window needs 11


class LpipsRandomTrunkWarning(UserWarning):
    """LPIPS runs on a random trunk (no ImageNet weights offline): not the perceptual metric."""


def _trunk_weights(net: str):
    import torchvision.models as tv

    return {"alex": tv.AlexNet_Weights, "vgg": tv.VGG16_Weights, "squeeze": tv.SqueezeNet1_1_Weights}[net].IMAGENET1K_V1


def trunk_cached(net: str) -> bool:
    """Whether torchvision's ImageNet weights for the LPIPS trunk ``net`` are in the hub cache."""
    name = os.path.basename(_trunk_weights(net).url)
    return (Path(torch.hub.get_dir()) / "checkpoints" / name).is_file()


_WARNED: set[str] = set()  # trunks whose random stand-in was announced: once per process, not per caller


def build_lpips(net: str = "alex") -> tuple[nn.Module, str]:
    """A frozen ``lpips.LPIPS`` (real trunk when cached, else random with a warning, once per process) and its label."""
    import lpips

    if net not in LPIPS_NETS:
        raise ValueError(f"unknown LPIPS trunk {net!r}; choose one of {LPIPS_NETS}")
    real = trunk_cached(net)
    if not real and net not in _WARNED:
        _WARNED.add(net)
        warnings.warn(
            f"LPIPS: torchvision's ImageNet weights for the {net!r} trunk are not in the torch hub cache "
            f"({torch.hub.get_dir()}/checkpoints) and cannot be downloaded here: using a RANDOM trunk. "
            "The perceptual term is then a random-feature distance, logged as 'LPIPS (random trunk, offline)'. "
            "Put the weights file in that folder (or set TORCH_HOME) to train with the real metric.",
            LpipsRandomTrunkWarning,
            stacklevel=2,
        )
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.filterwarnings("ignore", message=".*(pretrained|weights).*", category=UserWarning)
        torch.manual_seed(LPIPS_RANDOM_SEED)  # the same random trunk in every process and run
        model = lpips.LPIPS(net=net, pnet_rand=not real, verbose=False)
    model.eval().requires_grad_(False)
    label = f"LPIPS ({net})" if real else f"LPIPS ({net}, random trunk, offline)"
    return model, label


def l2(pred: Tensor, target: Tensor) -> Tensor:  # [B, 3, H, W] x2 -> []
    """L_2 = mean (I - I_d)^2 over batch, channels and pixels."""
    return (pred - target).square().mean()


def ssim(pred: Tensor, target: Tensor) -> Tensor:  # [B, 3, H, W] x2 in [0, 1] -> []
    """Mean SSIM (Gaussian window 11, sigma 1.5, data range 1), differentiable."""
    return structural_similarity_index_measure(pred, target, gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=1.0)


def offset_reg(offsets: Tensor) -> Tensor:  # [B, V0, 3] -> []
    """L_reg = mean_{b, v} ||delta_{b,v}||_2."""
    return torch.linalg.vector_norm(offsets, dim=-1).mean()


@dataclass
class LossTerms:
    """The total and every weighted-in term (unweighted values), for logging."""

    total: Tensor
    terms: dict[str, Tensor]


class OMGLoss(nn.Module):
    """L = sum over {I_c, I_r} of (w_l2 L_2 + w_ssim (1 - SSIM) + w_lpips LPIPS) + w_offset L_reg.

    ``weights`` is (lambda1, lambda2, lambda3, lambda4); a zero weight skips its term's compute.
    """

    def __init__(self, weights: tuple[float, float, float, float] = (10.0, 1.0, 0.1, 0.1), lpips_net: str = "alex"):
        super().__init__()
        if len(weights) != 4 or any(w < 0 for w in weights):
            raise ValueError(f"loss weights must be four non-negative numbers (lambda1..lambda4), got {weights}")
        self.weights = tuple(float(w) for w in weights)
        self.lpips, self.lpips_label = build_lpips(lpips_net) if self.weights[2] > 0 else (None, "LPIPS (off)")

    def image_terms(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:  # [B, 3, H, W] x2 -> terms
        terms = {"l2": l2(pred, target), "ssim": ssim(pred, target)}
        if self.lpips is not None:
            terms["lpips"] = self.lpips(pred, target, normalize=True).mean()  # [0, 1] inputs -> [-1, 1] inside
        return terms

    def forward(self, coarse: Tensor, refined: Tensor | None, target: Tensor, offsets: Tensor) -> LossTerms:
        """coarse, refined, target [B, 3, H, W] in [0, 1]; offsets [B, V0, 3]."""
        if coarse.shape != target.shape or (refined is not None and refined.shape != target.shape):
            raise ValueError(f"loss: images must match the target {tuple(target.shape)}, got coarse {tuple(coarse.shape)}"
                             f"{'' if refined is None else f', refined {tuple(refined.shape)}'}")
        if min(target.shape[-2:]) < MIN_SIZE:
            raise ValueError(f"loss: images must be at least {MIN_SIZE}x{MIN_SIZE} pixels (LPIPS and SSIM windows), got {tuple(target.shape[-2:])}: raise train.image_size")
        w2, ws, wp, wr = self.weights
        total = coarse.new_zeros(())
        terms: dict[str, Tensor] = {}
        for name, image in (("coarse", coarse), ("refined", refined)):
            if image is None:
                continue
            t = self.image_terms(image.float(), target.float())
            total = total + w2 * t["l2"] + ws * (1 - t["ssim"])
            if "lpips" in t:
                total = total + wp * t["lpips"]
            terms.update({f"{name}/{k}": v for k, v in t.items()})
        terms["offset"] = offset_reg(offsets.float())
        total = total + wr * terms["offset"]
        return LossTerms(total, terms)
