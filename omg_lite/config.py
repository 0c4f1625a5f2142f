"""One configuration tree for omg_lite, with named presets.

``OMG_LITE_SMOKE`` is read here and nowhere else: with ``OMG_LITE_SMOKE=1`` (CI sets it) the
notebooks and demos shrink their sizes and steps through :func:`pick` so that each runs in under
two minutes on a 2-core CPU; without it they run the real sizes.

Presets (``PRESETS``) name whole configurations: ``smoke`` (CI, seconds), ``lite`` (a laptop
CPU, 128x128) and ``paper`` (the paper's settings on one GPU). Any field can be changed from the
command line with ``--set section.field=value``; :func:`apply_overrides` refuses unknown keys.
:func:`from_preset` does both, with the offline default of the head model: the ``paper`` preset
asks for FLAME's 100 shape and 50 expression components, which only a FLAME file has; without
one (``head.flame_path`` unset) the offline stand-in runs with the counts every offline set is
made with (``HeadConfig``'s 20 / 16), and says so once. ``--set head.n_shape=...`` chooses.
"""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass, field
from typing import TypeVar

from omg_lite.geometry.visibility import DEFAULT_TOL

SMOKE: bool = os.environ.get("OMG_LITE_SMOKE", "0").strip().lower() not in ("", "0", "false", "no")

T = TypeVar("T")

# Frame limits of the commands that render drivers (one place; the commands' --max-frames defaults).
MAX_FRAMES = 1000  # the longest driver rendered unless --max-frames says more (frames are never dropped silently)
DEMO_MAX_FRAMES = 250  # the demo's and personalisation's clips: 10 s at 25 fps keeps the demo within its two minutes


def pick(real: T, smoke: T) -> T:
    """The real value, or the small one when ``OMG_LITE_SMOKE=1``."""
    return smoke if SMOKE else real


@dataclass
class HeadConfig:
    # Path to a FLAME pickle (generic_model.pkl / flame2023.pkl); None uses the offline stand-in.
    flame_path: str | None = None
    # Number of identity (shape) components S taken from the head model.
    n_shape: int = 20
    # Number of expression components E taken from the head model.
    n_expr: int = 16


@dataclass
class CameraConfig:
    # Vertical field of view of the portrait camera, degrees (18: head and shoulders at 1.6 m).
    fov_deg: float = 18.0
    # Distance from the camera to the head origin, metres.
    distance: float = 1.6


@dataclass
class EncoderConfig:
    # timm DINOv2 model: vit_small_patch14_dinov2 (22M) or vit_base_patch14_dinov2 (87M, the paper's).
    name: str = "vit_small_patch14_dinov2"
    # "auto" (hub cache, else a quick download, else random with a warning), "hub", "random" or a path.
    weights: str = "auto"
    # Side of the square image fed to the ViT, a multiple of 14 (the paper: 518 -> 37x37 tokens).
    image_size: int = 224
    # Side of the dense local feature map F_local (the paper samples at 296x296).
    local_size: int = 128
    # Channels C' of F_local with the "dpt" head (the "bilinear" head keeps the ViT's C).
    local_dim: int = 64
    # Dense head: "dpt" (learned, fuses n_layers token maps) or "bilinear" (last layer upsampled).
    dense_head: str = "dpt"
    # Number of ViT layers whose tokens feed the dense head.
    n_layers: int = 4
    # Keep the backbone frozen (requires_grad False, eval mode), as the paper does.
    frozen: bool = True


@dataclass
class SynthConfig:
    # Largest head yaw (turn left/right) in degrees, shared between FLAME's root and neck joints.
    max_yaw_deg: float = 40.0
    # Largest head pitch (nod) in degrees.
    max_pitch_deg: float = 20.0
    # Largest head roll (tilt) in degrees.
    max_roll_deg: float = 8.0
    # Largest jaw opening in radians.
    max_jaw_rad: float = 0.3
    # Largest gaze rotation of the eyes in degrees.
    max_gaze_deg: float = 12.0
    # Height of the head above the camera axis, metres: the neck-and-shoulders fit below it.
    head_height: float = 0.05
    # Standard deviation of the identity coefficients beta (clipped at 2.5 std).
    shape_std: float = 0.6
    # Largest standard deviation of a frame's expression coefficients psi (clipped at 2.5 std).
    expression_std: float = 0.8
    # The colour image is rendered this many times larger and box-filtered (anti-aliasing).
    supersample: int = 2
    # Frames rendered together; memory grows with it.
    batch_frames: int = 8
    # Give every identity a hair volume outside the head mesh (omg_lite.synth.hair) and write its hair_mask/ (off: today's world, byte for byte).
    hair: bool = False


@dataclass
class TrainConfig:
    # Training clips (an `omg-lite synth` set or tracked clips, see omg_lite.train.data); "" renders a synthetic set into RUN/data.
    data: str = ""
    # The synthetic set rendered when data is "": identities, frames per identity and seed (size = image_size).
    synth_identities: int = 8
    synth_frames: int = 8
    synth_seed: int = 0
    # Identities held out from training (the last clips by name), for the held-out metrics.
    heldout: int = 1
    # Side of the square training images; frames are resized to it and their intrinsics scaled.
    image_size: int = 128
    # Pairs per optimisation step, all processes together (DDP splits it evenly).
    batch_size: int = 4
    # Optimisation steps; epochs > 0 sets them instead (steps = ceil(epochs x pairs / batch_size)).
    steps: int = 2000
    epochs: float = 0.0
    # Adam learning rate.
    lr: float = 1e-4
    # Loss weights lambda1..lambda4 of L = l1 L2 + l2 (1 - SSIM) + l3 LPIPS + l4 ||offset||_2 (paper: 10, 1, 0.1, 0.1).
    w_l2: float = 10.0
    w_ssim: float = 1.0
    w_lpips: float = 0.1
    w_offset: float = 0.1
    # LPIPS trunk: alex, vgg or squeeze (random trunk with a warning when its ImageNet weights are not cached).
    lpips_net: str = "alex"
    # Coarse-to-fine: the fractions of the run at which the level of detail goes up (lod 0, then 1, then 2).
    lod_schedule: tuple[float, ...] = (1 / 3, 2 / 3)
    # Once the level is k > 0, the share of steps that train a coarser level instead (drawn uniformly
    # from 0..k-1), so every level's Gaussian head keeps up with the shared layers; 0 trains k only.
    coarser_share: float = 0.5
    # Seed of the model's initialisation and of the order of pairs.
    seed: int = 0
    # "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N".
    device: str = "auto"
    # bfloat16 autocast for the forward pass; used on CUDA only.
    amp: bool = False
    # Cache the frozen backbone's features of source images on disk ("" = RUN/feature_cache); "off" disables.
    feature_cache: str = ""
    # DataLoader worker processes.
    num_workers: int = 0
    # Log scalars every N steps, sample images every M steps, a checkpoint every K steps (and at the end).
    log_every: int = 10
    image_every: int = 200
    ckpt_every: int = 500
    # Checkpoints kept on disk (the newest ones; 0 keeps all).
    keep: int = 3


@dataclass
class ModelConfig:
    # Width C of the encoder's tokens and identity vector (ViT-S/14: 384, ViT-B/14: 768); derived from the
    # encoder when the network is built (AvatarModel.from_config), recorded here for the checkpoint.
    token_dim: int = 384
    # Channels C' of the encoder's local map F_local (encoder.local_dim; the "bilinear" head: token_dim); derived likewise.
    local_dim: int = 64
    # Width D of the per-vertex features: the global queries, Psi_k and the fused F_h.
    dim: int = 64
    # Cross-attention decoder layers of the global branch (queries attend to tokens only).
    layers: int = 2
    # Attention heads per decoder layer (dim must be divisible by it).
    attention_heads: int = 4
    # Hidden width of each decoder layer's MLP, as a multiple of dim.
    mlp_ratio: int = 2
    # Finest subdivision level K: LOD 0..K with the same weights (FLAME: 5023 -> 20018 -> 79936).
    levels: int = 2
    # Colour feature channels C per Gaussian, the first 3 are the coarse RGB (the paper: 32).
    channels: int = 32
    # Hidden width of the per-level Gaussian heads and of the shoulder conv head.
    head_hidden: int = 64
    # Bound of the vertex offsets Psi_offset in canonical space, metres (FLAME's unit).
    max_offset: float = 0.05
    # Bound of the shoulder offsets O_s along the plane normal, metres.
    shoulder_offset: float = 0.1
    # Refiner UNet: channels at full resolution (doubled at each stride-2 step).
    refiner_width: int = 16
    # Refiner UNet: number of stride-2 steps.
    refiner_depth: int = 2
    # Background value of the rendered RGB channels (the other feature channels get 0).
    background: float = 1.0
    # Relative depth tolerance of OAFF's visibility test z <= zhat (1 + tol).
    visibility_tol: float = DEFAULT_TOL
    # Ablations (paper Table "w/o ..."): the cross-attention branch and its offsets.
    use_global: bool = True
    # Ablation: projectively sampled local features in the head Gaussians.
    use_local: bool = True
    # Ablation: the UNet refiner (off: refined = coarse).
    use_refiner: bool = True
    # Ablation: the shoulder Gaussians (off: head Gaussians only).
    use_shoulder: bool = True
    # Ablation: OAFF's visibility mask (off: M = 1).
    use_visibility: bool = True


@dataclass
class TrackConfig:
    # Side of the square portrait crop the tracker writes (the model's input size).
    size: int = 512
    # Crop side as a multiple of the face size, and the crop centre's shift from the eyes towards
    # the mouth in eye-to-mouth units (defaults frame faces like `omg-lite synth`).
    crop_ratio: float = 3.1
    crop_shift: float = 0.95
    # Landmark noise as a fraction of the face size: sets the strength of the fitting priors.
    noise: float = 0.005
    # Weight of the jaw-contour points (they slide along the model's jaw line).
    contour_weight: float = 0.3
    # Weight of MediaPipe's dense points (embedded on the head model) relative to the iBUG-68.
    dense_weight: float = 0.0
    # Temporal smoothing for videos, 1 / sigma_v^2 for the per-frame change of pose (rad),
    # expression and translation (dm); 0 turns it off.
    smooth: float = 1e4
    # L-BFGS iterations of the rigid and the full fitting stages.
    rigid_iters: int = 50
    full_iters: int = 1000
    # Read at most this many video frames (0: all, up to 3000; a longer video asks for it to be set).
    max_frames: int = 0
    # Which face when a frame shows several: 0 the largest, 1 the next largest, ...
    face: int = 0


@dataclass
class Config:
    head: HeadConfig = field(default_factory=HeadConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


PRESETS: dict[str, Config] = {
    "smoke": Config(
        encoder=EncoderConfig(local_size=64, dense_head="bilinear"),
        model=ModelConfig(local_dim=384, dim=32, layers=1, attention_heads=2, channels=8, head_hidden=16, refiner_width=8, refiner_depth=1),
        train=TrainConfig(synth_identities=3, synth_frames=3, image_size=64, batch_size=2, steps=3, log_every=1, image_every=3, ckpt_every=2),
    ),
    "lite": Config(train=TrainConfig(synth_identities=24, synth_frames=8, heldout=4, image_size=128, batch_size=4, steps=800, lod_schedule=(0.5, 0.8))),
    "paper": Config(
        # FLAME's counts, used with a FLAME file; without one from_preset falls back to the stand-in's 20 / 16
        head=HeadConfig(n_shape=100, n_expr=50),
        encoder=EncoderConfig(name="vit_base_patch14_dinov2", image_size=518, local_size=296, local_dim=128),
        model=ModelConfig(token_dim=768, local_dim=128, dim=256, layers=2, attention_heads=8, mlp_ratio=4, head_hidden=128, refiner_width=32, refiner_depth=3),
        train=TrainConfig(image_size=512, batch_size=8, epochs=6.0, lpips_net="vgg", amp=True, feature_cache="off", num_workers=8, log_every=50, image_every=2000, ckpt_every=5000),
    ),
}


def preset(name: str) -> Config:
    """A fresh copy of a named preset."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


class OfflineHeadWarning(UserWarning):
    """A preset's FLAME component counts were lowered to the offline stand-in's defaults."""


def from_preset(name: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A named preset with ``section.field=value`` overrides and the offline head default.

    Without a FLAME file the head counts of a preset that asks for more than the defaults
    (``paper``: FLAME's 100 / 50) fall back to ``HeadConfig``'s 20 / 16, the counts of every
    ``omg-lite synth`` set and of the shipped samples, with one warning; counts set explicitly
    with ``head.n_shape`` / ``head.n_expr`` are kept (and refused by the stand-in if too many).
    """
    cfg = apply_overrides(preset(name), list(overrides))
    chosen = {item.split("=", 1)[0].strip() for item in overrides}
    default = HeadConfig()
    head = cfg.head
    asks_more = head.n_shape > default.n_shape or head.n_expr > default.n_expr
    if head.flame_path is None and asks_more and not chosen & {"head.n_shape", "head.n_expr"}:
        warnings.warn(
            f"preset {name!r} asks for FLAME's {head.n_shape} shape / {head.n_expr} expression components, but no FLAME file "
            f"is given (head.flame_path): using the offline stand-in head with {default.n_shape} / {default.n_expr}, the counts "
            "of every omg-lite synth set; set head.flame_path=generic_model.pkl for FLAME's, or head.n_shape / head.n_expr to choose",
            OfflineHeadWarning,
            stacklevel=2,
        )
        head.n_shape, head.n_expr = default.n_shape, default.n_expr
    return cfg


# Reading settings (overrides, checkpoints' config records, ranges) lives in omg_lite.config_parse;
# its public names are importable from here, the one place a config comes from.
from omg_lite.config_parse import (  # noqa: E402 - it builds on the dataclasses above
    CHOICES, PATH_KEYS, RANGES, apply_overrides, config_from_dict, strip_paths, validate,
)
