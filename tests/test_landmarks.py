"""Offline landmarks, portrait crops and portrait masks.

Independent truths: a real photo (``skimage.data.astronaut()``) with a hand-checked face box and
hand-picked foreground / background pixels, MediaPipe's own published contour sets for the
iBUG-68 mapping, analytic ramps and projections for the crop transform.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

pytest.importorskip("mediapipe")

from skimage import data, transform  # noqa: E402

from omg_lite.geometry.camera import Camera  # noqa: E402
from omg_lite.tracking.crop import CROP_RATIO, CropTransform, face_frame, portrait_crop  # noqa: E402
from omg_lite.tracking.landmarks import IBUG68_GROUPS, MP_TO_IBUG68, LandmarkDetector, NoFaceError  # noqa: E402
from omg_lite.tracking.portrait_mask import PortraitSegmenter  # noqa: E402

# Hand-checked on the 512x512 astronaut: the face (brow to chin, ear to ear) lies in this box.
FACE_BOX = (165, 60, 285, 195)  # u0, v0, u1, v1


@pytest.fixture(scope="module")
def detector():
    with LandmarkDetector() as det:
        yield det


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def astro_lm(detector, astronaut):
    return detector.detect(astronaut)


def _resized(img: np.ndarray, h: int, w: int) -> np.ndarray:
    return (transform.resize(img, (h, w), anti_aliasing=True) * 255).round().astype(np.uint8)


def test_ibug68_mapping_follows_mediapipe_contours():
    from mediapipe.python.solutions import face_mesh_connections as c

    pts = lambda conn: {i for edge in conn for i in edge}  # noqa: E731
    contour = {
        "jaw": c.FACEMESH_FACE_OVAL, "brow_right": c.FACEMESH_RIGHT_EYEBROW, "brow_left": c.FACEMESH_LEFT_EYEBROW,
        "nose_bridge": c.FACEMESH_NOSE, "nose_base": c.FACEMESH_NOSE, "eye_right": c.FACEMESH_RIGHT_EYE,
        "eye_left": c.FACEMESH_LEFT_EYE, "lips_outer": c.FACEMESH_LIPS, "lips_inner": c.FACEMESH_LIPS,
    }  # fmt: skip
    for group, idx in IBUG68_GROUPS.items():
        assert set(idx) <= pts(contour[group]), group
    assert MP_TO_IBUG68.shape == (68,) and len(set(MP_TO_IBUG68.tolist())) == 68


def test_astronaut_landmarks_land_on_the_face(astro_lm):
    uv = astro_lm.uv
    u0, v0, u1, v1 = FACE_BOX
    assert astro_lm.points.shape == (478, 3) and astro_lm.n_faces == 1
    assert (uv[:, 0] > u0).all() and (uv[:, 0] < u1).all() and (uv[:, 1] > v0).all() and (uv[:, 1] < v1).all()
    p = astro_lm.ibug68
    eyes, nose_tip, mouth, chin = p[36:48, 1].mean(), p[30, 1], p[48:68, 1].mean(), p[8, 1]
    assert eyes < nose_tip < mouth < chin
    assert p[36:42, 0].mean() < p[42:48, 0].mean()  # the subject's right eye is at image left
    assert p[0, 0] < p[8, 0] < p[16, 0]
    assert 45 < astro_lm.interocular < 80  # face about 95 px wide


def test_no_face_is_one_clear_error(detector):
    with pytest.raises(NoFaceError, match="no face found"):
        detector.detect(np.zeros((256, 256, 3), np.uint8))
    noise = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    with pytest.raises(NoFaceError):
        detector.detect(noise)


def test_tiny_and_small_images(detector, astronaut, astro_lm):
    with pytest.raises(ValueError, match="too small"):
        detector.detect(astronaut[:20, :20])
    small = detector.detect(_resized(astronaut, 96, 96))
    assert np.abs(small.ibug68 * 512 / 96 - astro_lm.ibug68).mean() < 0.02 * 512


def test_huge_image_is_detected_at_full_resolution_coordinates(detector, astronaut, astro_lm):
    big = np.kron(astronaut, np.ones((6, 6, 1), np.uint8))  # 3072 x 3072
    lm = detector.detect(big)
    assert lm.image_size == (3072, 3072)
    assert np.abs(lm.ibug68 / 6 - astro_lm.ibug68).mean() < 2.0


def test_grayscale_rgba_and_float_inputs(detector, astronaut, astro_lm):
    gray = detector.detect(astronaut.mean(-1).round().astype(np.uint8))
    assert np.abs(gray.ibug68 - astro_lm.ibug68).mean() < 2.0
    opaque = np.concatenate([astronaut, np.full((512, 512, 1), 255, np.uint8)], -1)
    assert np.allclose(detector.detect(opaque).uv, astro_lm.uv, atol=1e-3)
    clear = opaque.copy()
    clear[..., 3] = 0  # fully transparent: composited over white, nothing left to find
    with pytest.raises(NoFaceError):
        detector.detect(clear)
    assert np.allclose(detector.detect(astronaut / 255.0).uv, astro_lm.uv, atol=1e-3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        detector.detect(astronaut.astype(np.float32))


def test_several_faces_pick_the_largest_and_say_so(detector, astronaut, caplog):
    canvas = np.full((768, 768, 3), 200, np.uint8)
    canvas[:512, :512] = astronaut
    canvas[400:656, 500:756] = _resized(astronaut, 256, 256)
    with caplog.at_level(logging.WARNING, logger="omg_lite.tracking.landmarks"):
        lm = detector.detect(canvas)
    assert lm.n_faces == 2
    assert "found 2 faces; using the largest" in caplog.text
    u0, v0, u1, v1 = FACE_BOX
    assert u0 < lm.uv[:, 0].min() and lm.uv[:, 0].max() < u1 and v0 < lm.uv[:, 1].min() and lm.uv[:, 1].max() < v1


def test_crop_transform_is_an_exact_similarity():
    ct = CropTransform(u0=-10, v0=20, side=100, size=50)
    uv = np.array([[0.5, 0.5], [37.25, 80.0], [-10.0, 20.0]])
    np.testing.assert_allclose(ct.to_crop(uv), (uv - [-10, 20]) * 0.5)
    np.testing.assert_allclose(ct.from_crop(ct.to_crop(uv)), uv)
    cam = Camera.frontal(size=200, fov_deg=30.0, distance=1.0)
    pts = torch.tensor([[[0.05, -0.02, 0.1], [-0.1, 0.07, -0.05]]])
    uv_full, _ = cam.project_world(pts)
    uv_crop, _ = ct.camera(cam).project_world(pts)
    np.testing.assert_allclose(uv_crop[0].numpy(), ct.to_crop(uv_full[0].numpy()), rtol=1e-5, atol=1e-4)


def test_crop_resamples_with_the_pixel_centre_convention():
    H, W = 60, 80
    ramp = np.tile(np.arange(W, dtype=np.float32) + 0.5, (H, 1))  # value = u at each pixel centre
    ct = CropTransform(u0=10, v0=5, side=40, size=80)  # upsampling x2
    crop, inside = ct.apply(ramp)
    j = np.arange(80)
    expect = (j + 0.5) / 2 + 10  # u of each crop pixel centre
    interior = (expect > 10.75) & (expect < 49.25)  # away from the crop's own border
    np.testing.assert_allclose(crop[30, interior], expect[interior], atol=1e-4)
    assert inside.min() == 1.0
    _, inside = CropTransform(u0=-20, v0=0, side=40, size=40).apply(ramp)
    assert (inside[:, :20] == 0).all() and (inside[:, 20:] == 1).all()


def test_portrait_crop_frames_the_astronaut(astro_lm, astronaut):
    ct = portrait_crop(astro_lm.ibug68, size=256)
    e, m, s = face_frame(astro_lm.ibug68)
    assert ct.side == round(CROP_RATIO * s) and ct.size == 256
    eyes_in_crop = ct.to_crop(e)
    assert 0.3 * 256 < eyes_in_crop[1] < 0.5 * 256 and abs(eyes_in_crop[0] - 128) < 20
    crop, _ = ct.apply(astronaut)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8


def test_portrait_mask_on_the_astronaut(astronaut):
    with PortraitSegmenter() as seg:
        soft = seg.soft(astronaut)
        mask = seg(astronaut)
    assert soft.shape == (512, 512) and soft.dtype == np.float32 and 0 <= soft.min() and soft.max() <= 1
    for u, v in [(225, 120), (250, 400), (180, 300)]:  # face, suit, arm (hand-picked)
        assert mask[v, u], (u, v)
    for u, v in [(30, 200), (480, 40), (400, 150)]:  # flag, wall, shuttle model (hand-picked)
        assert not mask[v, u], (u, v)
