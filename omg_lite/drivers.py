"""Drivers: the per-frame head parameters that animate an avatar, and how their head is placed.

A driver (:class:`Driver`, :func:`load_driver`) is HeadParams, a params.npz (``omg-lite synth`` /
``omg-lite track`` / the shipped ``data_samples/driver``), a folder holding one, a driving image
or video (tracked with ``omg_lite.tracking``), or :func:`synthetic_path`. How the driver's head is
placed (:func:`retarget`):

- ``"absolute"``: the driver's own translation t_d (self-reenactment: same person, same camera);
- ``"neck"`` (foreign drivers): t_d is chosen so the neck's end ring (``omg_lite.head.neck``) stays where it is in the
  source frame, c_ring(LBS(beta_s, psi_d, theta_d) + t_d) = c_ring(source), the rule the
  synthetic world uses to keep heads on their shoulders (the shoulder Gaussians do not move).
  The driver's own translation is not used.

Length and frame rate: any driver length up to ``max_frames`` is accepted (longer: an error, no
silent trimming); every driver frame is rendered once and the output plays at the driver's own
frame rate (a video's stream rate, a params.npz's ``fps`` entry, else 25): no frame is dropped
or repeated.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from omg_lite.config import MAX_FRAMES, Config
from omg_lite.geometry.camera import Camera
from omg_lite.head.neck import neck_ring, ring_translation
from omg_lite.head.params import HeadParams

DEFAULT_FPS = 25.0
TRANSLATION_MODES = ("absolute", "neck")

log = logging.getLogger(__name__)


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
    ring = neck_ring(head(source.shape).vertices[0], head.regions["neck"])
    target = head(source).vertices[:, ring].mean(1)  # [1, 3] ring centre in the source frame
    return HeadParams(shape.clone(), driver.expression, driver.pose, ring_translation(head, ring, target, shape, driver.expression, driver.pose))


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
# A driver's shape is not among them: retargeting keeps the source's identity and never reads it.
DRIVER_LIMITS = {"expression": 10.0, "pose": 2 * math.pi, "translation": 10.0}


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
    from omg_lite.tracking.video import VIDEO_SUFFIXES

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


def track_config(net) -> Config:
    """The tracker's settings with crops at the model's (an ``AvatarModel``'s) training size."""
    cfg = copy.deepcopy(net.cfg)
    cfg.track.size = net.image_size
    return cfg


def save_synthetic_driver(path: str | Path, n_frames: int = 48, seed: int = 0, fps: float = DEFAULT_FPS, cfg: Config | None = None) -> Path:
    """Write :func:`synthetic_path` as a params.npz (``omg_lite.head.params`` format, plus ``fps``)."""
    from omg_lite.head.params import save_clip

    cfg = cfg or Config()
    params = synthetic_path(n_frames, cfg.head.n_shape, cfg.head.n_expr, seed)
    camera = Camera.frontal(batch=n_frames, size=256, fov_deg=cfg.camera.fov_deg, distance=cfg.camera.distance)
    save_clip(path, params, camera, fps=np.float32(fps))
    return Path(path)
