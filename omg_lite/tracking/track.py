"""``omg-lite track``: a photo or a video -> portrait crops, masks and per-frame head parameters.

The paper's 3DMM estimator (Sec. 3.1 for the source photo, Sec. 3.4 for driving frames) as one
pipeline, each step in its own module:

1. landmarks l_m of every frame (``landmarks``: MediaPipe, offline); a frame without a face is
   kept and marked invalid (valid_m = 0);
2. one square portrait crop for the whole clip (``crop``: the median face frame over valid
   frames, so the camera stays fixed like the synthetic world's), landmarks mapped into it;
3. the fit (``fitting``): shared beta and f, per-frame psi_m, theta_m, t_m, smoothed in time;
4. the portrait mask M_p of each crop (``portrait_mask``).

The output folder has the layout of one ``omg-lite synth`` clip, so training and enactment read
tracked and synthetic clips alike::

    OUT/params.npz      omg_lite.head.params format, in the crop's pixels, plus landmarks2d
                        [M, 68, 2] (detected, NaN where lost), landmarks_mp [M, 478, 3],
                        crop [4] (u0, v0, side, size in source pixels), source_size [2]
    OUT/rgb/0000.png    the crops;  OUT/mask/0000.png  portrait masks (0 / 255)
    OUT/track.json      source, crop, head model, settings, valid count, timings

It is written into a temporary folder beside OUT and renamed into place at the end.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from omg_lite.config import Config
from omg_lite.geometry.camera import Camera
from omg_lite.head.params import HeadParams, save_clip
from omg_lite.io import check_output_folder, output_folder
from omg_lite.tracking.crop import CropTransform, portrait_crop
from omg_lite.tracking.fitting import FitSettings, FitTargets, LandmarkFitter, reprojection_error
from omg_lite.tracking.landmarks import EYE_OUTER, MP_TO_IBUG68, N_POINTS, LandmarkDetector, NoFaceError, to_rgb_uint8

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
EIGHT_BIT_MODES = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr")  # PIL's convert("RGB") is exact for these
ALPHA_MODES = ("LA", "PA", "RGBA")
VIDEO_LIMIT = 3000  # frames (2 minutes at 25 fps) that track reads without track.max_frames set
MAX_PIXELS = 100_000_000  # larger files are refused before decoding (PIL's own bomb check stops at 179 MP)
MARKER, WHAT = "track.json", "an omg-lite track result"  # see omg_lite.io.output_folder


@dataclass
class TrackResult:
    params: HeadParams  # [M] in the crop's pixels
    camera: Camera  # [M] crop cameras
    valid: np.ndarray  # [M] bool: a face was found
    crop: CropTransform
    landmarks: np.ndarray  # [M, 478, 3] detected MediaPipe points in crop pixels (NaN where lost)
    source_size: tuple[int, int]  # (H, W) of the source frames
    errors: np.ndarray  # [M] mean reprojection error of the interior iBUG points, crop pixels (NaN where lost)
    interocular: np.ndarray  # [M] detected outer-eye-corner distance, crop pixels
    losses: list[float] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ibug68(self) -> np.ndarray:  # [M, 68, 2]
        return self.landmarks[:, MP_TO_IBUG68, :2]


def fit_settings(cfg: Config, video: bool) -> FitSettings:
    t = cfg.track
    return FitSettings(
        rigid_iters=t.rigid_iters, full_iters=t.full_iters, noise=t.noise, contour_weight=t.contour_weight,
        dense_weight=t.dense_weight, smooth=t.smooth if video else 0.0, fov_deg=cfg.camera.fov_deg, distance=cfg.camera.distance,
    )  # fmt: skip


def clip_crop(landmarks: np.ndarray, valid: np.ndarray, cfg: Config) -> CropTransform:  # [M, 478, 3], [M]
    """One crop for the clip: the crop of the median iBUG points over the valid frames."""
    median = np.median(landmarks[valid][:, MP_TO_IBUG68, :2], axis=0)
    return portrait_crop(median, cfg.track.size, cfg.track.crop_ratio, cfg.track.crop_shift)


def track_frames(
    frames: Callable[[], Iterable[np.ndarray]],
    head,
    cfg: Config,
    video: bool,
    detector: LandmarkDetector | None = None,
    progress: int | None = None,
) -> TrackResult:
    """Track the frames that ``frames()`` yields ([H, W, 3] each; called once here); ``progress``:
    show a bar over that many frames (None: no bar)."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    own = detector is None
    det = detector or LandmarkDetector(face=cfg.track.face)
    pts, valid, size = [], [], None
    try:
        for m, image in enumerate(tqdm(frames(), total=progress or None, unit="frame", desc="landmarks", disable=progress is None)):
            if size is None:
                size = image.shape[:2]
            elif image.shape[:2] != size:
                raise ValueError(f"frame {m} is {image.shape[1]}x{image.shape[0]} but frame 0 is {size[1]}x{size[0]}")
            try:
                pts.append(det.detect(image).points)
                valid.append(True)
            except NoFaceError:
                pts.append(np.full((N_POINTS, 3), np.nan))
                valid.append(False)
    finally:
        if own:
            det.close()
    if not pts:
        raise ValueError("no frames to track")
    valid_np, landmarks = np.array(valid), np.stack(pts)
    if not valid_np.any():
        raise NoFaceError(f"no face found in any of the {len(pts)} frame(s)")
    if not valid_np.all():
        log.warning("no face in %d of %d frames; they are kept and marked valid = 0", (~valid_np).sum(), len(valid_np))
    t1 = time.perf_counter()

    crop = clip_crop(landmarks, valid_np, cfg)
    landmarks = np.concatenate([crop.to_crop(landmarks[..., :2]), landmarks[..., 2:] * crop.scale], -1)
    ibug = torch.as_tensor(np.nan_to_num(landmarks[:, MP_TO_IBUG68, :2]), dtype=torch.float32)
    dense = torch.as_tensor(landmarks[..., :2], dtype=torch.float32)
    settings = fit_settings(cfg, video)
    embedding = None
    if settings.dense_weight > 0:
        from omg_lite.head.embedding_mediapipe import embed_mediapipe
        from omg_lite.tracking.landmarks import reference_face

        embedding = embed_mediapipe(head, reference_face(), MP_TO_IBUG68)
    targets = FitTargets(ibug, crop.size, crop.size, valid=torch.as_tensor(valid_np), dense=dense)
    fit = LandmarkFitter(head, settings, embedding).fit(targets)
    t2 = time.perf_counter()
    M = len(valid_np)
    seconds = {"detect_per_frame": (t1 - t0) / M, "fit_per_frame": (t2 - t1) / M, "total": t2 - t0}
    errors = reprojection_error(fit, head, targets)
    iod = np.linalg.norm(landmarks[:, EYE_OUTER[0], :2] - landmarks[:, EYE_OUTER[1], :2], axis=-1)
    return TrackResult(fit.params, fit.camera, valid_np, crop, landmarks, tuple(size), errors, iod, fit.losses, seconds)


def _frames_of(path: Path, video: bool, max_frames: int) -> tuple[Callable[[], Iterable[np.ndarray]], int]:
    """(the frames to track, how many); a video longer than VIDEO_LIMIT needs track.max_frames set."""
    if not video:
        return (lambda: [read_image(path)]), 1
    from omg_lite.tracking.video import read_frames, video_info

    stated = video_info(path)["frames"]  # 0 when the container does not say
    n = min(stated, max_frames) if max_frames and stated else (max_frames or stated)
    if not max_frames and stated > VIDEO_LIMIT:
        raise ValueError(f"{path} has {stated} frames, more than omg-lite track reads unasked ({VIDEO_LIMIT}): pass "
                         f"--set track.max_frames={stated} to track all of them, or a smaller number to track the first ones")  # fmt: skip

    def frames() -> Iterator[np.ndarray]:
        limit = max_frames or VIDEO_LIMIT
        for m, frame in enumerate(read_frames(path, limit + (not max_frames))):
            if m == limit:  # only when the container did not state its length
                raise ValueError(f"{path} has more than {VIDEO_LIMIT} frames: pass --set track.max_frames=N to track N of them")
            yield frame

    return frames, n


def read_image(path: str | Path) -> np.ndarray:  # -> [H, W, 3] or [H, W, 4] (with transparency) uint8
    """An image file as 8-bit RGB(A), upright, the way a viewer shows it.

    The EXIF orientation is applied (phones store portraits sideways with a tag). PIL converts the
    8-bit modes (:data:`EIGHT_BIT_MODES`, :data:`ALPHA_MODES`) exactly; 16-bit greys (``I;16``,
    and ``I``, where PIL keeps 16-bit TIFFs) are scaled by 255 / 65535 and float greys (``F``) in
    [0, 1] by 255, where PIL's own conversion would clip them to white or black. Other modes
    (CIELAB, ...) are refused by name.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image at {path}")
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ValueError(f"{path} is {im.width}x{im.height} ({im.width * im.height / 1e6:.0f} MP), more than this "
                                 f"reads ({MAX_PIXELS / 1e6:.0f} MP): scale it down (a portrait needs about 1 MP)")  # fmt: skip
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode.startswith("I;16") or mode in ("I", "F"):
                return _grey_to_rgb(path, np.asarray(im).astype(np.float64), mode)
            if mode in ALPHA_MODES or (mode in EIGHT_BIT_MODES and "transparency" in im.info):
                return np.asarray(im.convert("RGBA"))
            if mode in EIGHT_BIT_MODES:
                return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path} is not a readable image ({e})") from None
    raise ValueError(f"{path} has the image mode {mode!r}, which omg_lite does not read; save it as 8-bit RGB (PNG or JPEG)")


def _grey_to_rgb(path: Path, a: np.ndarray, mode: str) -> np.ndarray:  # [H, W] -> [H, W, 3] uint8
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if mode == "F":
        if not (np.isfinite(a).all() and lo >= 0 and hi <= 1):
            raise ValueError(f"{path} is a floating-point image with values in [{lo:g}, {hi:g}]; omg_lite reads float images in [0, 1]")
        a = a * 255.0
    else:
        if lo < 0 or hi > 65535:
            raise ValueError(f"{path} is a 32-bit integer image with values in [{lo:g}, {hi:g}]; save it as 8- or 16-bit")
        a = a * (255.0 / 65535.0)
    return np.repeat(np.round(a).astype(np.uint8)[..., None], 3, axis=-1)


def write_track(out: Path, result: TrackResult, frames: Iterable[np.ndarray], overwrite: bool, info: dict) -> Path:
    """Write crops, masks, params.npz and track.json into ``out`` (see the module docstring)."""
    from PIL import Image

    from omg_lite.tracking.portrait_mask import PortraitSegmenter

    with output_folder(out, overwrite, MARKER, WHAT) as tmp:
        (tmp / "rgb").mkdir()
        (tmp / "mask").mkdir()
        with PortraitSegmenter() as seg:
            for m, image in enumerate(frames):
                crop, _ = result.crop.apply(to_rgb_uint8(image))
                Image.fromarray(crop).save(tmp / "rgb" / f"{m:04d}.png")
                Image.fromarray(seg(crop).astype(np.uint8) * 255).save(tmp / "mask" / f"{m:04d}.png")
        c = result.crop
        save_clip(
            tmp / "params.npz", result.params, result.camera, valid=torch.as_tensor(result.valid),
            landmarks2d=result.ibug68.astype(np.float32), landmarks_mp=result.landmarks.astype(np.float32),
            crop=np.array([c.u0, c.v0, c.side, c.size], np.int64), source_size=np.array(result.source_size, np.int64),
        )  # fmt: skip
        meta = {**info, "crop": c.to_dict(), "frames": int(len(result.valid)), "valid": int(result.valid.sum()), "seconds": result.seconds}
        (tmp / "track.json").write_text(json.dumps(meta, indent=2) + "\n")
    return Path(out)


def track(image: str | None, video: str | None, out: str, cfg: Config | None = None, overwrite: bool = False) -> TrackResult:
    """Track one image or one video into the folder ``out``."""
    from omg_lite.head import head_from_config

    cfg = cfg or Config()
    if (image is None) == (video is None):
        raise ValueError("give exactly one of --image PATH or --video PATH")
    path = Path(image or video)
    if not path.is_file():
        raise FileNotFoundError(f"no {'image' if image else 'video'} at {path}")
    if image is not None and path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"{path.name}: not an image file ({', '.join(IMAGE_SUFFIXES)}); use --video for videos")
    out_path = Path(out)
    check_output_folder(out_path, overwrite, MARKER, WHAT)  # before any work
    is_video = video is not None
    frames, n = _frames_of(path, is_video, cfg.track.max_frames)
    head = head_from_config(cfg.head)
    try:
        result = track_frames(frames, head, cfg, video=is_video, progress=n if is_video else None)
    except NoFaceError as e:
        raise NoFaceError(f"{path}: {e}") from None
    info = {
        "source": path.name,
        "kind": "video" if is_video else "image",
        "head_model": str(head.source) if head.source == "standin" else Path(str(head.source)).name,
        "n_shape": int(head.n_shape),
        "n_expr": int(head.n_expr),
        "track": asdict(cfg.track),
        "camera": asdict(cfg.camera),
    }
    write_track(out_path, result, frames(), overwrite, info)
    return result
