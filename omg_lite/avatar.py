"""One photo in, an animated multi-LOD avatar out (paper Sec. 3.4, "Real-time Enactment").

Reconstruction runs ONCE per source photo I_s (tracking, encoder, global branch, hierarchy,
Gaussian heads, shoulders; see ``omg_lite.model.omg``) and keeps the Gaussian set

    G = H_k U S,   H_k = {p_h, c, o, s, r} for every level k = 0..lod.

Enactment, per driving frame d, changes the head positions only:

    V_0 = LBS(T + B_S(beta_s) + B_P(theta_d) + B_E(psi_d) + o) + t_d,    p_h = Phi^k(V_0)
    F_r = Splat(H_k(p_h) U S, P),    I_c = F_r[:3],    I_r = I_c + R(F_r)

colour c, opacity o, scale s, rotation r and the shoulders S are reused as they are: no encoder,
no cross-attention, no Gaussian head runs per frame. ``avatar.lod = k`` picks another kept
level without reconstructing; only levels 0..lod of the reconstruction exist (reconstruct with
``lod=model.levels`` to switch freely).

Drivers (:class:`Driver`, :func:`load_driver`): HeadParams, a params.npz (``omg-lite synth`` /
``omg-lite track`` / the shipped ``data_samples/driver``), a folder holding one, a driving image
or video (tracked with ``omg_lite.tracking``), or :func:`synthetic_path`. How the driver's head is
placed (:func:`retarget`):

- ``"absolute"``: the driver's own translation t_d (self-reenactment: same person, same camera);
- ``"neck"`` (foreign drivers): t_d is chosen so the neck's end ring stays where it is in the
  source frame, c_ring(LBS(beta_s, psi_d, theta_d) + t_d) = c_ring(source), the rule the
  synthetic world uses to keep heads on their shoulders (the shoulder Gaussians do not move).
  The driver's own translation is not used.

Length and frame rate: any driver length up to ``max_frames`` is accepted (longer: an error, no
silent trimming); every driver frame is rendered once and the output plays at the driver's own
frame rate (a video's stream rate, a params.npz's ``fps`` entry, else 25): no frame is dropped
or repeated.

Checkpoints: :meth:`AvatarModel.load` reads a run folder (``omg-lite train --out RUN``) or one
weights file through ``omg_lite.train.checkpoint``; the config travels in the weights' metadata,
so a lone ``step_XXXXXX.safetensors`` is enough. The default is ``data_samples/lite``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from omg_lite.config import Config, from_preset, strip_paths
from omg_lite.config import preset as named_preset
from omg_lite.features.encoder import DinoEncoder, EncoderOutput
from omg_lite.geometry.camera import Camera
from omg_lite.head.params import HeadParams
from omg_lite.model.omg import GaussianSet, ModelOutput, OMGModel

DATA_SAMPLES = Path(__file__).resolve().parents[1] / "data_samples"
DEFAULT_CHECKPOINT = DATA_SAMPLES / "lite"
LITE_COMMAND = "omg-lite train --preset lite --out data_samples/lite"
DEFAULT_FPS = 25.0
MAX_FRAMES = 1000
NECK_END_BAND = 0.01  # metres: neck vertices this close to the neck's lowest point form its end ring
TRANSLATION_MODES = ("absolute", "neck")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".gif", ".m4v")

log = logging.getLogger(__name__)


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> CUDA when present, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resize_camera(camera: Camera, size: int) -> Camera:
    """The same view at size x size pixels: K' = diag(s, s, 1) K with s = size / width (square images)."""
    if camera.width != camera.height:
        raise ValueError(f"resize_camera needs a square camera, got {camera.width}x{camera.height}")
    if size == camera.width:
        return camera
    s = size / camera.width
    S = torch.diag(torch.tensor([s, s, 1.0], dtype=camera.K.dtype, device=camera.device))
    return Camera(S @ camera.K, camera.R, camera.t, size, size)


# ---------------------------------------------------------------------------------------- model


def resolve_checkpoint(checkpoint: str | Path | None) -> Path:
    """A run folder, a weights file or None (the default) -> the weights file to load."""
    from omg_lite.train.checkpoint import latest_checkpoint

    default = checkpoint is None
    path = DEFAULT_CHECKPOINT if default else Path(checkpoint)
    hint = f"train one with `{LITE_COMMAND}` (CPU hours) or pass --checkpoint RUN_OR_FILE"
    if not path.exists():
        what = "the default lite checkpoint is not" if default else "no checkpoint"
        raise FileNotFoundError(f"{what} at {path}: {hint}")
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(f"{path} is not an omg_lite checkpoint (expected a run folder or a step_XXXXXX.safetensors file)")
        return path
    if (path / "checkpoints" / "latest").is_file():
        return latest_checkpoint(path)
    found = sorted(path.glob("step_*.safetensors")) or sorted(path.glob("checkpoints/step_*.safetensors"))
    if not found:
        raise FileNotFoundError(f"{path} holds no checkpoint (no checkpoints/latest, no step_*.safetensors): {hint}")
    return found[-1]


def _encoder_weights(trained_on: str | None, override: str | None) -> str | None:
    """The encoder.weights that rebuild the backbone a checkpoint was trained on (its identity key)."""
    if override is not None:
        return override
    if trained_on is None:
        return None
    source = trained_on.split("|")[1] if trained_on.count("|") >= 2 else ""
    if source.startswith("random:"):
        return "random"
    if source.startswith("hub:"):
        return "hub"
    raise ValueError(f"the checkpoint was trained on the backbone {trained_on!r} (a local weights file): "
                     "pass that file with --encoder-weights PATH")


@dataclass
class AvatarModel:
    """What reconstruction and enactment run: config, encoder (frozen backbone + dense head), OMG model."""

    cfg: Config
    preset: str
    encoder: DinoEncoder
    model: OMGModel
    label: str  # where the weights come from, for reports ("UNTRAINED ..." for a fresh model)
    checkpoint: Path | None = None
    step: int | None = None
    digest: str | None = None  # sha256 of the weights (a saved avatar names the model it belongs to)

    @property
    def trained(self) -> bool:
        return self.checkpoint is not None

    @property
    def device(self) -> torch.device:
        return self.model.background.device

    @property
    def head(self):
        return self.model.head

    @property
    def image_size(self) -> int:
        """The side of the images the model was trained on (the tracker crops to it)."""
        return self.cfg.train.image_size

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, preset: str | None = None, device: str | torch.device = "auto",
             encoder_weights: str | None = None, flame_path: str | Path | None = None) -> "AvatarModel":
        """Load a run folder or weights file (default ``data_samples/lite``); ``preset`` insists on one.

        The checkpoint's config never names files (:func:`omg_lite.config.strip_paths`): a model
        trained on FLAME needs its FLAME file again as ``flame_path``.
        """
        from omg_lite.train.checkpoint import check_fits, load_weights
        from omg_lite.train.loop import Net, config_from_dict, trainable_state

        if preset is not None:
            named_preset(preset)  # an unknown name is refused as such, before any file is read
        path = resolve_checkpoint(checkpoint)
        tensors, meta = load_weights(path)
        try:
            record = json.loads(meta["config"])
            cfg = config_from_dict(record["config"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"checkpoint {path} carries no readable config in its metadata ({e})") from None
        name = str(record.get("preset", ""))
        trained_flame = strip_paths(cfg).get("head.flame_path")
        if trained_flame is not None and flame_path is None:
            raise ValueError(f"checkpoint {path} was trained on the FLAME head {Path(str(trained_flame)).name!r}; a checkpoint never "
                             "chooses which files are opened: pass that FLAME file with --flame-path PATH")
        if trained_flame is None and flame_path is not None:
            raise ValueError(f"checkpoint {path} was trained on the offline stand-in head, not FLAME: drop --flame-path")
        cfg.head.flame_path = None if flame_path is None else str(flame_path)
        if preset is not None and name != preset:
            raise ValueError(f"checkpoint {path} was trained with the {name or 'unnamed'!r} preset, not {preset!r}: "
                             f"pass a {preset} checkpoint (`omg-lite train --preset {preset} --out RUN`) or drop --preset")
        trained_on = record.get("encoder")
        weights = _encoder_weights(trained_on, encoder_weights)
        if weights is not None:
            cfg.encoder.weights = weights
        encoder, model = _build(cfg)
        if trained_on is not None and encoder.identity_key != trained_on:
            raise ValueError(f"checkpoint {path} was trained on the backbone {trained_on!r} but this machine built "
                             f"{encoder.identity_key!r}: pass the right file with --encoder-weights")
        net = Net(encoder, model)
        check_fits(path, tensors, trainable_state(net, [encoder.backbone, model.head]))
        net.load_state_dict(tensors, strict=False)
        step = int(meta.get("step", 0))
        label = f"{path.name} (preset {name or '?'}, step {step})"
        return cls(cfg, name, encoder, model, label, path, step, meta.get("sha256")).to(pick_device(device))

    @classmethod
    def untrained(cls, preset: str = "smoke", device: str | torch.device = "auto", seed: int = 0) -> "AvatarModel":
        """A freshly initialised model of a preset (random encoder): for speed and pipeline checks only."""
        cfg = from_preset(preset)
        cfg.encoder.weights = "random"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder, model = _build(cfg)
        label = f"UNTRAINED {preset} model (random initialisation, seed {seed}; not a result)"
        return cls(cfg, preset, encoder, model, label, digest=f"untrained:{preset}:seed{seed}").to(pick_device(device))

    def to(self, device: torch.device) -> "AvatarModel":
        self.encoder.to(device).eval()
        self.model.to(device).eval()
        return self

    @torch.no_grad()
    def encode(self, image: Tensor) -> EncoderOutput:  # image [B, 3, H, W] in [0, 1]
        return self.encoder(image.to(self.device))


def _build(cfg: Config) -> tuple[DinoEncoder, OMGModel]:
    from omg_lite.features import build_encoder
    from omg_lite.head import load_head_model

    encoder = build_encoder(cfg.encoder)
    head = load_head_model(flame_path=cfg.head.flame_path, n_shape=cfg.head.n_shape, n_expr=cfg.head.n_expr)
    return encoder, OMGModel(cfg.model, head)


# ---------------------------------------------------------------------------------------- drivers


def synthetic_path(n_frames: int, n_shape: int, n_expr: int, seed: int = 0, yaw_deg: float = 25.0, pitch_deg: float = 8.0,
                   roll_deg: float = 4.0, jaw: float = 0.2, expression_std: float = 0.8) -> HeadParams:
    """A smooth looping expression/pose path, s = m / M (m = 0..M-1):

        yaw = A_y sin(2 pi s),  pitch = A_p sin(4 pi s),  roll = A_r sin(2 pi s + pi / 3)   (root 0.8, neck 0.2)
        jaw = J (1 - cos(4 pi s)) / 2,   psi = a sin(2 pi s) + b (1 - cos(2 pi s)) / 2,   a, b ~ N(0, sigma^2)

    Shape and translation are zero (the source gives beta; ``retarget(..., "neck")`` places it).
    """
    from scipy.spatial.transform import Rotation

    if n_frames < 1:
        raise ValueError(f"a driving path needs at least 1 frame, got {n_frames}")
    s = np.arange(n_frames) / n_frames
    ang = np.radians(np.stack([yaw_deg * np.sin(2 * math.pi * s), pitch_deg * np.sin(4 * math.pi * s),
                               roll_deg * np.sin(2 * math.pi * s + math.pi / 3)], 1))  # [M, 3]
    pose = np.zeros((n_frames, 15))
    pose[:, 0:3] = Rotation.from_euler("YXZ", 0.8 * ang).as_rotvec()
    pose[:, 3:6] = Rotation.from_euler("YXZ", 0.2 * ang).as_rotvec()
    pose[:, 6] = jaw * (1 - np.cos(4 * math.pi * s)) / 2
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, expression_std, n_expr), rng.normal(0, expression_std, n_expr)
    expression = np.sin(2 * math.pi * s)[:, None] * a + ((1 - np.cos(2 * math.pi * s)) / 2)[:, None] * b
    f32 = lambda x: torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
    return HeadParams(torch.zeros(n_frames, n_shape), f32(expression), f32(pose), torch.zeros(n_frames, 3))


def neck_ring(head, shape: Tensor) -> Tensor:  # shape [S] -> [R] vertex indices
    """The neck's end ring: neck vertices within ``NECK_END_BAND`` of its lowest point, neutral pose."""
    neck = head.regions["neck"]
    zero = head.zeros(1)
    neutral = head(shape[None].to(zero.shape), zero.expression, zero.pose, zero.translation).vertices[0]
    y = neutral[neck, 1]
    return neck.nonzero().squeeze(1)[y < y.min() + NECK_END_BAND]


@torch.no_grad()
def retarget(head, source: HeadParams, driver: HeadParams, mode: str = "neck") -> HeadParams:
    """The source's identity with the driver's expression and pose; translation by ``mode`` (module docstring)."""
    if mode not in TRANSLATION_MODES:
        raise ValueError(f"translation mode must be one of {TRANSLATION_MODES}, got {mode!r}")
    if source.batch != 1:
        raise ValueError(f"retarget takes one source frame, got {source.batch}")
    M = driver.batch
    shape = source.shape.expand(M, -1)
    if mode == "absolute":
        return HeadParams(shape.clone(), driver.expression, driver.pose, driver.translation)
    ring = neck_ring(head, source.shape[0])
    target = head(source).vertices[:, ring].mean(1)  # [1, 3] ring centre in the source frame
    posed = head(shape, driver.expression, driver.pose, torch.zeros_like(driver.translation)).vertices[:, ring].mean(1)  # [M, 3]
    return HeadParams(shape.clone(), driver.expression, driver.pose, target - posed)


@dataclass
class Driver:
    """A driving sequence: per-frame head parameters, how to place them, and its frame rate."""

    params: HeadParams  # [M]
    fps: float = DEFAULT_FPS
    translation: str = "neck"  # "absolute" or "neck" (see retarget)
    name: str = "params"
    camera: Camera | None = None  # [M] the driver's own cameras, where it has them

    def __post_init__(self) -> None:
        if self.translation not in TRANSLATION_MODES:
            raise ValueError(f"translation mode must be one of {TRANSLATION_MODES}, got {self.translation!r}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"driver {self.name}: frame rate must be a positive number, got {self.fps}")

    def __len__(self) -> int:
        return self.params.batch

    def check(self, head, max_frames: int = MAX_FRAMES) -> "Driver":
        """Refuse a driver made for another head model, with no frames, or longer than ``max_frames``."""
        p = self.params
        if (p.shape.shape[1], p.expression.shape[1]) != (head.n_shape, head.n_expr):
            raise ValueError(f"driver {self.name} has {p.shape.shape[1]} shape and {p.expression.shape[1]} expression coefficients "
                             f"but the avatar's head model has {head.n_shape} and {head.n_expr}: it was made with another head model")
        if len(self) == 0:
            raise ValueError(f"driver {self.name} has no frames")
        if len(self) > max_frames:
            raise ValueError(f"driver {self.name} has {len(self)} frames, more than --max-frames {max_frames}: "
                             f"pass --max-frames {len(self)} or a shorter driver (frames are never dropped silently)")
        if not all(torch.isfinite(getattr(p, k)).all() for k in ("expression", "pose", "translation")):
            raise ValueError(f"driver {self.name} holds NaN or Inf parameters")
        for key, limit in DRIVER_LIMITS.items():
            worst = getattr(p, key).abs().amax(-1)  # [M]
            if (worst > limit).any():
                m = int(worst.argmax())
                raise ValueError(f"driver {self.name}: {key} reaches {float(worst[m]):.3g} at frame {m}, far outside what the model "
                                 f"renders (|{key}| <= {limit:g}; training stays within a quarter of that): the file is not a driver for it")  # fmt: skip
        return self


# Bounds far beyond the trained ranges (coefficients in standard deviations, axis-angle radians, metres).
DRIVER_LIMITS = {"shape": 10.0, "expression": 10.0, "pose": 2 * math.pi, "translation": 10.0}


def _track(frames, cfg: Config, head, video: bool, role: str):
    """Track for ``role`` ("source photo X", "driver Y"), which a failure names."""
    from omg_lite.tracking import NoFaceError, track_frames

    try:
        return track_frames(frames, head, cfg, video=video)
    except NoFaceError as e:
        raise NoFaceError(f"{role}: {e}") from None


def load_driver(spec, head, cfg: Config, max_frames: int = MAX_FRAMES) -> Driver:
    """A Driver from HeadParams, a Driver, a params.npz, a folder with one, an image or a video."""
    from omg_lite.head.params import load_clip
    from omg_lite.tracking.track import IMAGE_SUFFIXES, read_image

    if isinstance(spec, Driver):
        return spec.check(head, max_frames)
    if isinstance(spec, HeadParams):
        return Driver(spec, translation="absolute", name="HeadParams").check(head, max_frames)
    path = Path(spec)
    if path.is_dir():
        path = path / "params.npz"
    if not path.exists():
        raise FileNotFoundError(f"no driver at {spec} (a params.npz, a folder with one, an image or a video)")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        params, camera, extra = load_clip(path)
        invalid = int((np.asarray(extra["valid"]) == 0).sum())
        if invalid:
            log.warning("driver %s: %d of %d frames are marked invalid (valid = 0: no face was tracked there); they are rendered "
                        "with the parameters the file holds for them", path, invalid, params.batch)  # fmt: skip
        fps = float(extra["fps"]) if "fps" in extra else DEFAULT_FPS
        return Driver(params, fps, "neck", str(path), camera).check(head, max_frames)
    if suffix in IMAGE_SUFFIXES:
        image = read_image(path)
        r = _track(lambda: [image], cfg, head, video=False, role=f"driver {path}")
        return Driver(r.params, DEFAULT_FPS, "neck", str(path)).check(head, max_frames)
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"{path.name}: not a driver this knows ({', '.join(('.npz',) + IMAGE_SUFFIXES + VIDEO_SUFFIXES)})")
    from omg_lite.tracking.video import read_frames, video_info

    info = video_info(path)
    if info["frames"] > max_frames:
        raise ValueError(f"driver {path} has {info['frames']} frames, more than --max-frames {max_frames}: "
                         f"pass --max-frames {info['frames']} or a shorter driver (frames are never dropped silently)")
    r = _track(lambda: read_frames(path, max_frames + 1), cfg, head, video=True, role=f"driver {path}")
    return Driver(r.params, info["fps"] or DEFAULT_FPS, "neck", str(path)).check(head, max_frames)


# ---------------------------------------------------------------------------------------- the avatar


@dataclass
class SourceFrame:
    """The one photo an avatar was reconstructed from, as the model saw it."""

    image: Tensor  # [1, 3, H, W] in [0, 1] (the portrait crop)
    mask: Tensor  # [1, 1, H, W] portrait mask M_p
    params: HeadParams  # [1] tracked (or known) source parameters
    camera: Camera  # [1] source view, H x W


class Avatar:
    """A reconstructed avatar: the Gaussian set G of every kept level, animated by positions only."""

    def __init__(self, net: AvatarModel, gaussians: GaussianSet, source: SourceFrame, seconds: dict[str, float] | None = None):
        self.net = net
        self.gaussians = gaussians  # levels 0..gaussians.lod, detached
        self.source = source
        self.seconds = dict(seconds or {})  # track / encoder / reconstruct, wall seconds
        self.lod = gaussians.lod
        self.fit = None  # the personalisation's FitReport, when this avatar is a personalised one

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_frame(cls, image, params: HeadParams, camera: Camera, mask, net: AvatarModel | None = None,
                   checkpoint: str | Path | None = None, lod: int | None = None) -> "Avatar":
        """Reconstruct from a frame with known parameters (a synthetic frame; no tracking).

        ``image`` [3, H, W] / [1, 3, H, W] float in [0, 1] or [H, W, 3] uint8; ``mask`` [H, W] portrait mask;
        ``camera`` the frame's H x W view. ``lod`` defaults to the model's finest level.
        """
        net = net or AvatarModel.load(checkpoint)
        image, mask = _image_tensor(image), _mask_tensor(mask)
        if image.shape[-2:] != (camera.height, camera.width) or mask.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"image {tuple(image.shape[-2:])}, mask {tuple(mask.shape[-2:])} and camera "
                             f"({camera.height}, {camera.width}) must have one size")
        lod = net.model.levels if lod is None else lod
        dev = net.device
        source = SourceFrame(image.to(dev), mask.to(dev), params[0:1].to(dev), camera[0:1].to(dev))
        return cls.reconstruct(net, source, lod, {})

    @classmethod
    def from_image(cls, photo, net: AvatarModel | None = None, checkpoint: str | Path | None = None,
                   lod: int | None = None) -> "Avatar":
        """Track a photo (path or [H, W, 3] array), crop it to the model's size, mask it, reconstruct."""
        from omg_lite.tracking.landmarks import to_rgb_uint8
        from omg_lite.tracking.portrait_mask import PortraitSegmenter
        from omg_lite.tracking.track import read_image

        net = net or AvatarModel.load(checkpoint)
        rgb = read_image(photo) if isinstance(photo, (str, Path)) else np.asarray(photo)
        cfg = track_config(net)
        t0 = time.perf_counter()
        r = _track(lambda: [rgb], cfg, net.head, video=False, role=f"source photo {photo if isinstance(photo, (str, Path)) else '(array)'}")
        crop, _ = r.crop.apply(to_rgb_uint8(rgb))
        with PortraitSegmenter() as seg:
            mask = seg(crop)
        seconds = {"track": time.perf_counter() - t0}
        lod = net.model.levels if lod is None else lod
        dev = net.device
        source = SourceFrame(_image_tensor(crop).to(dev), _mask_tensor(mask).to(dev), r.params.to(dev), r.camera.to(dev))
        return cls.reconstruct(net, source, lod, seconds)

    @classmethod
    @torch.no_grad()
    def reconstruct(cls, net: AvatarModel, source: SourceFrame, lod: int, seconds: dict | None = None) -> "Avatar":
        """Encoder + model reconstruction of a prepared source (timed, device synchronised)."""
        from omg_lite.bench import sync

        sync(net.device)
        t0 = time.perf_counter()
        enc = net.encode(source.image)
        sync(net.device)
        t1 = time.perf_counter()
        gs = net.model.reconstruct(enc, source.params, source.camera, source.mask, lod, keep_coarser=True)
        sync(net.device)
        seconds = {**(seconds or {}), "encoder": t1 - t0, "reconstruct": time.perf_counter() - t1}
        return cls(net, gs.detach(), source, seconds)

    # -- personalisation (omg_lite.personalize) -------------------------------------------------
    def personalize(self, steps: int | None = None, clip=None, settings=None, progress: bool = False) -> "Avatar":
        """A new avatar fitted to the source photo (and ``clip``, FitFrames of the same person); positions stay
        mesh-driven. On divergence it holds the feed-forward Gaussians and ``fit.diverged`` says why."""
        import dataclasses

        from omg_lite.personalize import FitSettings, fit, source_frames

        s = settings or FitSettings()
        s = s if steps is None else dataclasses.replace(s, steps=steps)
        gs, report = fit(self.net.model, self.gaussians, source_frames(self), clip, s, progress)
        avatar = Avatar(self.net, gs, self.source, self.seconds)
        avatar.lod, avatar.fit = self.lod, report
        return avatar

    def save(self, out: str | Path, overwrite: bool = False) -> Path:
        """Write this avatar as OUT/avatar.safetensors + OUT/avatar.json (``omg_lite.personalize.save_avatar``)."""
        from omg_lite.personalize import save_avatar

        return save_avatar(self, out, overwrite)

    @classmethod
    def load(cls, path: str | Path, net: AvatarModel) -> "Avatar":
        """Read a saved avatar; refused when it was made with another checkpoint or preset than ``net``."""
        from omg_lite.personalize import load_avatar

        return load_avatar(path, net)

    # -- level of detail -----------------------------------------------------------------------
    @property
    def lod(self) -> int:
        return self._lod

    @lod.setter
    def lod(self, k: int) -> None:
        if k not in self.gaussians.levels:
            raise ValueError(f"level of detail {k} is not available: this avatar was reconstructed up to level "
                             f"{self.gaussians.lod} and keeps {sorted(self.gaussians.levels)}")
        self._lod = int(k)

    @property
    def levels(self) -> list[int]:
        return sorted(self.gaussians.levels)

    def counts(self, lod: int | None = None) -> dict[str, int]:
        """Gaussians at a level: head (V_k), shoulder (valid ones) and total."""
        k = self.lod if lod is None else lod
        head = self.gaussians.num_head(k)
        s = self.gaussians.shoulders
        shoulder = 0 if s is None else int(s.valid.sum())
        return {"head": head, "shoulder": shoulder, "total": head + shoulder}

    @property
    def size(self) -> int:
        return self.source.camera.width

    def camera(self, size: int | None = None) -> Camera:
        """The source view at ``size`` pixels (default: the source's)."""
        return resize_camera(self.source.camera, size or self.size)

    # -- enactment ------------------------------------------------------------------------------
    def driving_params(self, driver, max_frames: int = MAX_FRAMES) -> HeadParams:
        """Per-frame parameters [M] that drive this avatar: the source's identity, the driver's motion
        (HeadParams are used as given, "absolute"; other drivers follow their own translation mode)."""
        d = load_driver(driver, self.net.head, track_config(self.net), max_frames)
        return retarget(self.net.head, self.source.params, d.params.to(self.net.device), d.translation)

    @torch.no_grad()
    def render(self, params: HeadParams, camera: Camera | None = None, lod: int | None = None) -> ModelOutput:
        """Render frames [M] of final parameters (see ``driving_params``); ``camera`` [1 or M], default the source view."""
        k = self.lod if lod is None else lod
        cam = self.camera() if camera is None else camera
        return self.net.model.render(self.gaussians, params.to(self.net.device), cam.to(self.net.device), k)

    def animate(self, driver, lod: int | None = None, size: int | None = None, refined: bool = True,
                progress: bool = False) -> Tensor:  # -> [M, 3, H, W] in [0, 1]
        """Render the avatar for every frame of a driver (HeadParams are used as given; others retargeted)."""
        from tqdm.auto import tqdm

        params = self.driving_params(driver)
        cam = self.camera(size)
        frames = []
        for m in tqdm(range(params.batch), desc=f"LOD {self.lod if lod is None else lod}", unit="frame", disable=not progress, leave=False):
            out = self.render(params[m], cam, lod)
            frames.append((out.refined if refined else out.coarse).clamp(0, 1).cpu())
        return torch.cat(frames)

    def positions(self, params: HeadParams, lod: int | None = None) -> Tensor:  # -> [M, N_h, 3]
        """Head Gaussian positions p_h = Phi^k(V_0) for final parameters."""
        with torch.no_grad():
            return self.net.model.head_positions(self.gaussians, params.to(self.net.device), self.lod if lod is None else lod)

    def export_ply(self, path: str | Path, lod: int | None = None, params: HeadParams | None = None) -> Path:
        """Write G = H_k U S (posed by ``params``, default the source) as a 3DGS .ply (``omg_lite.splat.ply``)."""
        from omg_lite.splat.ply import write_ply

        k = self.lod if lod is None else lod
        if k not in self.gaussians.levels:
            raise ValueError(f"level of detail {k} is not available: this avatar keeps {self.levels}")
        means = self.positions(self.source.params if params is None else params[0:1], k)[0]  # [N_h, 3]
        a = self.gaussians.levels[k]
        parts = [(means, a.quats[0], a.scales[0], a.opacities[0], a.features[0])]
        s = self.gaussians.shoulders
        if s is not None:
            v = s.valid[0]
            sa = s.attributes
            parts.append((s.means[0][v], sa.quats[0][v], sa.scales[0][v], sa.opacities[0][v], sa.features[0][v]))
        cat = [torch.cat([p[i] for p in parts]).float().cpu() for i in range(5)]
        return write_ply(path, *cat)


def track_config(net: AvatarModel) -> Config:
    """The tracker's settings with crops at the model's training size."""
    import copy

    cfg = copy.deepcopy(net.cfg)
    cfg.track.size = net.image_size
    return cfg


def _image_tensor(image) -> Tensor:  # -> [1, 3, H, W] float in [0, 1]
    x = torch.as_tensor(np.asarray(image)) if not isinstance(image, Tensor) else image
    if x.dtype == torch.uint8:
        if x.ndim != 3 or x.shape[-1] != 3:
            raise ValueError(f"a uint8 image must be [H, W, 3], got {tuple(x.shape)}")
        x = x.permute(2, 0, 1).float() / 255
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[:2] != (1, 3) or not x.is_floating_point():
        raise ValueError(f"image must be [3, H, W] float in [0, 1] or [H, W, 3] uint8, got {tuple(x.shape)} {x.dtype}")
    return x.float()


def _mask_tensor(mask) -> Tensor:  # -> [1, 1, H, W] float {0, 1}
    m = torch.as_tensor(np.asarray(mask)) if not isinstance(mask, Tensor) else mask
    while m.ndim < 4:
        m = m[None]
    if m.shape[:2] != (1, 1):
        raise ValueError(f"portrait mask must be [H, W], got {tuple(mask.shape)}")
    return (m.float() > 0.5).float()


def to_uint8(frames: Tensor) -> np.ndarray:  # [M, 3, H, W] in [0, 1] -> [M, H, W, 3] uint8
    return (frames.clamp(0, 1).permute(0, 2, 3, 1) * 255).round().to(torch.uint8).cpu().numpy()


def save_synthetic_driver(path: str | Path, n_frames: int = 48, seed: int = 0, fps: float = DEFAULT_FPS, cfg: Config | None = None) -> Path:
    """Write :func:`synthetic_path` as a params.npz (``omg_lite.head.params`` format, plus ``fps``)."""
    from omg_lite.head.params import save_clip

    cfg = cfg or Config()
    params = synthetic_path(n_frames, cfg.head.n_shape, cfg.head.n_expr, seed)
    camera = Camera.frontal(batch=n_frames, size=256, fov_deg=cfg.camera.fov_deg, distance=cfg.camera.distance)
    save_clip(path, params, camera, fps=np.float32(fps))
    return Path(path)
