"""The frozen image encoder: DINOv2 through timm (paper Sec. 3.1, "Hierarchical Global-Local
Feature Extraction").

The source image I_s goes through a frozen DINOv2 ViT-B/14 (518x518 -> 37x37 patch tokens). Three
things come out of it:

- the patch tokens  F_tok  [B, T, C]  that the global branch cross-attends to,
- the identity vector F_id  [B, C]  (the CLS token of the last layer),
- the dense local feature map F_local = D(F_tok^(l1), ..., F_tok^(l4))  [B, C', h, w], where D is a
  light learned upsampling head in the spirit of the paper's DPT head (reassemble the tokens of
  four layers as maps, fuse them deep-to-shallow while upsampling x2 per step), or plain bilinear
  upsampling of the last layer for the smallest presets. The paper samples F_local at 296x296
  = 8 x 37, which is exactly three x2 steps from the 518-pixel token grid.

Resize policy: any input [B, 3, H, W] in [0, 1] is resized (bilinear, antialiased) to
``image_size x image_size`` before the ViT. The feature map therefore always spans the whole
input image, and the normalised coordinates ``x_n = 2 u / W - 1`` of ``geometry.camera`` address
the same point of the image in F_local whatever H and W are. A non-square input is stretched,
not padded; the tracker's crops are square, so nothing in the pipeline is stretched.

Weights: ``"hub"`` (timm's pretrained DINOv2 from the Hugging Face hub), a path to a local
``.pth`` / ``.safetensors`` (timm's ``pretrained_cfg_overlay=dict(file=...)``), ``"random"``
(offline stand-in, fixed seed), or ``"auto"``: a copy already in the hub cache, else a download
when the hub answers within a few seconds, else random weights with one loud warning. With
random weights the features carry no learned meaning; ``weights_source`` says so plainly.
"""

from __future__ import annotations

import hashlib
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omg_lite.config import EncoderConfig

_DEFAULT = EncoderConfig()

MODELS = ("vit_small_patch14_dinov2", "vit_base_patch14_dinov2")
RANDOM_SOURCE = "random (offline stand-in)"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HUB_TIMEOUT_S = 3.0
RANDOM_SEED = 0


class RandomWeightsWarning(UserWarning):
    """The encoder fell back to random weights: its features carry no learned meaning."""


@dataclass
class BackboneFeatures:
    """What the frozen backbone computes for a batch (the part worth caching)."""

    tokens: Tensor  # [B, T, C] last-layer patch tokens (normalised)
    identity: Tensor  # [B, C] last-layer CLS token
    layers: Tensor  # [B, L, C, h, w] patch tokens of L layers as maps, for the dense head

    def __getitem__(self, idx) -> "BackboneFeatures":
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return BackboneFeatures(self.tokens[idx], self.identity[idx], self.layers[idx])

    @staticmethod
    def cat(items: list["BackboneFeatures"]) -> "BackboneFeatures":
        return BackboneFeatures(*(torch.cat([getattr(f, n) for f in items]) for n in ("tokens", "identity", "layers")))


@dataclass
class EncoderOutput:
    tokens: Tensor  # [B, T, C] patch tokens for the global cross-attention
    identity: Tensor  # [B, C] identity vector F_id
    local: Tensor  # [B, C', h, w] dense local feature map F_local


class DenseHead(nn.Module):
    """A light DPT-style head: L token maps at h x w -> one map at ``out_size``.

    x_L = P_L(F^(L));  x_l = U(x_{l+1}) + P_l(F^(l)) resized;  x_l <- x_l + R(x_l)
    with P_l a 1x1 projection, U bilinear x2 upsampling and R a residual conv unit.
    """

    def __init__(self, in_dim: int, out_dim: int, n_layers: int, out_size: int):
        super().__init__()
        self.out_size = out_size
        self.project = nn.ModuleList(nn.Conv2d(in_dim, out_dim, 1) for _ in range(n_layers))
        self.refine = nn.ModuleList(
            nn.Sequential(nn.GELU(), nn.Conv2d(out_dim, out_dim, 3, padding=1), nn.GELU(), nn.Conv2d(out_dim, out_dim, 3, padding=1))
            for _ in range(n_layers - 1)
        )
        self.out = nn.Conv2d(out_dim, out_dim, 1)

    def forward(self, layers: Tensor) -> Tensor:  # [B, L, C, h, w] -> [B, C', out, out]
        x = self.project[-1](layers[:, -1])
        for i in range(layers.shape[1] - 2, -1, -1):
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            skip = F.interpolate(self.project[i](layers[:, i]), size=x.shape[-2:], mode="bilinear", align_corners=False)
            x = x + skip
            x = x + self.refine[i](x)
        x = F.interpolate(x, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)
        return self.out(x)


class BilinearHead(nn.Module):
    """The smallest presets' head: bilinear upsampling of the last layer's token map."""

    def __init__(self, out_size: int):
        super().__init__()
        self.out_size = out_size

    def forward(self, layers: Tensor) -> Tensor:  # [B, L, C, h, w] -> [B, C, out, out]
        return F.interpolate(layers[:, -1], size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)


def _hub_offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return env or bool(constants.HF_HUB_OFFLINE)


def _hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    from huggingface_hub import constants

    host = constants.ENDPOINT.split("://", 1)[-1].split("/", 1)[0]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hub_file(name: str, download: bool) -> str | None:
    """Local path of timm's hub weights for ``name``: from the cache, else downloaded when allowed
    and the hub answers within ``HUB_TIMEOUT_S`` (never a long retry loop)."""
    import huggingface_hub
    import timm

    repo = timm.models.get_pretrained_cfg(name).hf_hub_id
    cached = huggingface_hub.try_to_load_from_cache(repo, "model.safetensors")
    if isinstance(cached, str):
        return cached
    if not download or _hub_offline() or not _hub_reachable():
        return None
    return huggingface_hub.hf_hub_download(repo, "model.safetensors")


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


class DinoEncoder(nn.Module):
    """DINOv2 (timm) -> patch tokens, identity vector and a dense local feature map.

    ``image_size`` must be a multiple of the patch size 14 (224, 518, ...). ``layers`` picks the
    blocks whose tokens feed the dense head (default: four evenly spaced, ending at the last).
    ``dense_head`` is ``"dpt"`` (learned, ``local_dim`` channels) or ``"bilinear"`` (C' = C).
    """

    def __init__(  # the defaults are config.EncoderConfig's (one default per setting)
        self,
        name: str = _DEFAULT.name,
        weights: str = _DEFAULT.weights,
        image_size: int = _DEFAULT.image_size,
        local_size: int = _DEFAULT.local_size,
        local_dim: int = _DEFAULT.local_dim,
        dense_head: str = _DEFAULT.dense_head,
        n_layers: int = _DEFAULT.n_layers,
        frozen: bool = _DEFAULT.frozen,
    ):
        super().__init__()
        if name not in MODELS:
            raise ValueError(f"unknown encoder {name!r}; choose one of {MODELS}")
        if image_size <= 0 or image_size % 14:
            raise ValueError(f"encoder image_size must be a positive multiple of 14 (224, 518, ...), got {image_size}")
        if dense_head not in ("dpt", "bilinear"):
            raise ValueError(f"encoder dense_head must be 'dpt' or 'bilinear', got {dense_head!r}")
        self.name, self.image_size, self.frozen = name, image_size, frozen
        self.backbone, self.weights_source, self._weights_id = self._build(name, weights, image_size)
        depth = len(self.backbone.blocks)
        if not 1 <= n_layers <= depth:
            raise ValueError(f"encoder n_layers must be in 1..{depth}, got {n_layers}")
        self.layer_ids = [round(depth * (i + 1) / n_layers) - 1 for i in range(n_layers)]
        C = self.backbone.embed_dim
        self.dense_head = DenseHead(C, local_dim, n_layers, local_size) if dense_head == "dpt" else BilinearHead(local_size)
        self.local_dim = local_dim if dense_head == "dpt" else C
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if frozen:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    @staticmethod
    def _build(name: str, weights: str, image_size: int) -> tuple[nn.Module, str, str]:
        """-> (timm model, human-readable source, identity of the weights for caches)."""
        import timm

        kw = dict(img_size=image_size, dynamic_img_size=True, num_classes=0)
        if weights in ("auto", "hub"):
            path = _hub_file(name, download=True)
            if path is None and weights == "hub":
                raise ValueError(
                    f"could not get the pretrained {name} weights from the Hugging Face hub (offline, "
                    "HF_HUB_OFFLINE set, or the hub did not answer); pass weights=PATH to a local "
                    ".pth/.safetensors file, or weights='random' for the offline stand-in"
                )
            if path is not None:
                model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path), **kw)
                return model, "hub", f"hub:{timm.models.get_pretrained_cfg(name).hf_hub_id}"
            warnings.warn(
                f"DINOv2 weights for {name} are not available offline (no hub cache, no network): using "
                "RANDOM weights. The tokens, identity vector and local features then carry no learned "
                "meaning; anything trained or shown on them is a pipeline check, not a result. Pass "
                "weights=PATH to a downloaded DINOv2 file to use the real encoder.",
                RandomWeightsWarning,
                stacklevel=3,
            )
            weights = "random"
        if weights == "random":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_SEED)
                model = timm.create_model(name, pretrained=False, **kw)
            return model, RANDOM_SOURCE, f"random:seed{RANDOM_SEED}"
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"encoder weights file {path} does not exist (weights= takes 'auto', 'hub', 'random' or a path)")
        if path.suffix not in (".pth", ".pt", ".bin", ".safetensors"):
            raise ValueError(f"encoder weights {path.name}: expected a .pth, .pt, .bin or .safetensors file")
        try:
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kw)
        except (RuntimeError, KeyError) as e:
            lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
            detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(e).__name__)
            raise ValueError(
                f"encoder weights {path.name} do not fit {name} (saved from another architecture? "
                f"e.g. vit_base vs vit_small): {detail}"
            ) from None
        return model, path.name, f"file:{_file_digest(path)}"

    @property
    def identity_key(self) -> str:
        """Everything that determines the backbone's output: the feature cache's key."""
        return f"{self.name}|{self._weights_id}|{self.image_size}|layers={','.join(map(str, self.layer_ids))}"

    def train(self, mode: bool = True) -> "DinoEncoder":
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def preprocess(self, image: Tensor) -> Tensor:  # [B, 3, H, W] in [0, 1] -> [B, 3, S, S] normalised
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"encoder input must be an RGB batch [B, 3, H, W], got {tuple(image.shape)}")
        if not image.is_floating_point():
            raise ValueError(f"encoder input must be float in [0, 1], got {image.dtype} (divide uint8 images by 255)")
        if image.numel() and (image.min() < -1e-3 or image.max() > 1 + 1e-3):
            raise ValueError(
                f"encoder input must lie in [0, 1], got values in [{image.min():.3g}, {image.max():.3g}] "
                "(divide 0-255 images by 255)"
            )
        S = self.image_size
        if image.shape[-2:] != (S, S):
            image = F.interpolate(image, size=(S, S), mode="bilinear", align_corners=False, antialias=True)
        return (image - self.mean) / self.std

    def backbone_features(self, image: Tensor) -> BackboneFeatures:  # image [B, 3, H, W]
        x = self.preprocess(image)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            final, inter = self.backbone.forward_intermediates(x, indices=self.layer_ids, norm=True, output_fmt="NCHW")
        P = self.backbone.num_prefix_tokens
        return BackboneFeatures(tokens=final[:, P:], identity=final[:, 0], layers=torch.stack(inter, 1))

    def decode(self, feats: BackboneFeatures) -> EncoderOutput:
        """Backbone features (fresh or cached) -> tokens, identity and the dense local map."""
        return EncoderOutput(feats.tokens, feats.identity, self.dense_head(feats.layers))

    def forward(self, image: Tensor) -> EncoderOutput:  # image [B, 3, H, W] in [0, 1]
        return self.decode(self.backbone_features(image))


def build_encoder(cfg) -> DinoEncoder:
    """An encoder from a ``config.EncoderConfig``."""
    return DinoEncoder(
        name=cfg.name,
        weights=cfg.weights,
        image_size=cfg.image_size,
        local_size=cfg.local_size,
        local_dim=cfg.local_dim,
        dense_head=cfg.dense_head,
        n_layers=cfg.n_layers,
        frozen=cfg.frozen,
    )
