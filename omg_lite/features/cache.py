"""A disk cache of the frozen encoder's backbone features (paper Sec. 4.1: DINOv2 is frozen).

A frozen encoder computes the same tokens for the same image every epoch, so a dataset's
features are computed once: one safetensors file per image, under a folder named by a digest of
the encoder's ``identity_key`` (model, weights, input size, layers), file name = digest of the
image's pixels. A different encoder misses; the learned dense head runs on the cached tokens each
time (it trains). Files are written atomically (temp file + ``os.replace``), so an interrupted run
never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from omg_lite.features.encoder import BackboneFeatures, DinoEncoder
from omg_lite.io import atomic_file

_FIELDS = ("tokens", "identity", "layers")


def image_digest(image: Tensor) -> str:  # image [3, H, W]
    """sha256 of an image's shape and float32 pixels."""
    x = image.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha256(str(tuple(x.shape)).encode())
    h.update(x.numpy().tobytes())
    return h.hexdigest()[:32]


class FeatureCache:
    """``FeatureCache(dir)``: backbone features per (encoder identity, image)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"feature cache {self.root} exists and is not a folder")
        self.hits = 0
        self.misses = 0

    def _path(self, encoder: DinoEncoder, image: Tensor) -> Path:
        enc = hashlib.sha256(encoder.identity_key.encode()).hexdigest()[:16]
        return self.root / enc / f"{image_digest(image)}.safetensors"

    def load(self, encoder: DinoEncoder, image: Tensor) -> BackboneFeatures | None:  # image [3, H, W]
        path = self._path(encoder, image)
        if not path.is_file():
            return None
        try:
            data = load_file(str(path))
        except (SafetensorError, OSError):
            return None
        if any(k not in data for k in _FIELDS):
            return None
        return BackboneFeatures(*(data[k].unsqueeze(0) for k in _FIELDS))

    def store(self, encoder: DinoEncoder, image: Tensor, feats: BackboneFeatures) -> None:  # image [3, H, W], feats batch 1
        path = self._path(encoder, image)
        tensors = {k: getattr(feats, k)[0].detach().cpu().contiguous() for k in _FIELDS}
        with atomic_file(path) as tmp:
            save_file(tensors, tmp, metadata={"encoder": encoder.identity_key})

    def features(self, encoder: DinoEncoder, image: Tensor) -> BackboneFeatures:  # image [B, 3, H, W]
        """Backbone features for a batch, from the cache where present, computed and stored otherwise."""
        if image.ndim != 4:
            raise ValueError(f"FeatureCache.features takes a batch [B, 3, H, W], got {tuple(image.shape)}")
        found = [self.load(encoder, im) for im in image]
        todo = [i for i, f in enumerate(found) if f is None]
        self.hits += len(found) - len(todo)
        self.misses += len(todo)
        if todo:
            fresh = encoder.backbone_features(image[todo])
            for j, i in enumerate(todo):
                self.store(encoder, image[i], fresh[j])
                found[i] = fresh[j]
        out = BackboneFeatures.cat(found)
        return BackboneFeatures(*(getattr(out, k).to(image.device) for k in _FIELDS))
