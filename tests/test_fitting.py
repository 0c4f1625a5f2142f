"""The 3DMM estimator: geometry helpers, the MediaPipe embedding, the fit and ``omg-lite track``.

Independent truths: brute-force loops and dense sampling (closest points, polylines), a known
similarity transform, the full head model (for the landmark sub-model), MediaPipe's own
left/right contour labels, and the generating parameters of synthetic frames whose true 2D
landmarks are projected from them (pose within 2 deg, reprojection < 0.5 px at 256x256).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from omg_lite.bench.tracking import random_params
from omg_lite.geometry.camera import Camera
from omg_lite.head import load_head_model
from omg_lite.head.embedding_mediapipe import closest_on_triangles, umeyama
from omg_lite.tracking.fitting import (
    FitSettings,
    FitTargets,
    LandmarkFitter,
    landmark_submodel,
    polyline_distance2,
    reprojection_error,
    rotation_error_deg,
)

SIZE = 256
FOV, DIST = 18.0, 1.6


@pytest.fixture(scope="module")
def head():
    return load_head_model(n_shape=20, n_expr=16)


def _truth(head, n: int, seed: int):
    truth = random_params(head, n, np.random.default_rng(seed))
    cam = Camera.frontal(batch=n, size=SIZE, fov_deg=FOV, distance=DIST)
    with torch.no_grad():
        uv, _ = cam.project_world(head(truth).landmarks)
    return truth, uv


def test_closest_on_triangles_matches_dense_sampling():
    rng = np.random.default_rng(0)
    tris = rng.normal(size=(30, 3, 3))
    pts = rng.normal(size=(20, 3)) * 1.5
    f, w, d = closest_on_triangles(pts, tris)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-9)
    assert (w >= -1e-9).all()
    closest = np.einsum("kj,kjc->kc", w, tris[f])
    np.testing.assert_allclose(np.linalg.norm(closest - pts, axis=1), d, atol=1e-9)
    a, b = np.meshgrid(np.linspace(0, 1, 120), np.linspace(0, 1, 120))
    keep = a + b <= 1
    bary = np.stack([1 - a[keep] - b[keep], a[keep], b[keep]], 1)  # [N, 3] dense samples of each triangle
    samples = np.einsum("nj,fjc->fnc", bary, tris).reshape(-1, 3)
    brute = np.linalg.norm(pts[:, None] - samples[None], axis=-1).min(1)
    assert (d <= brute + 1e-9).all() and np.abs(d - brute).max() < 0.02


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(40, 3))
    R = Rotation.from_rotvec([0.3, -0.5, 0.2]).as_matrix()
    dst = 2.5 * src @ R.T + [0.1, -2.0, 3.0]
    s, R_, t = umeyama(src, dst)
    assert abs(s - 2.5) < 1e-9
    np.testing.assert_allclose(R_, R, atol=1e-9)
    np.testing.assert_allclose(t, [0.1, -2.0, 3.0], atol=1e-9)


def test_polyline_distance_matches_a_loop():
    rng = np.random.default_rng(2)
    line = torch.tensor(rng.normal(size=(1, 6, 2)))
    pts = torch.tensor(rng.normal(size=(1, 9, 2)) * 2)
    got = polyline_distance2(pts, line)[0]
    for i, p in enumerate(pts[0]):
        best = np.inf
        for a, b in zip(line[0, :-1], line[0, 1:]):
            for s in np.linspace(0, 1, 1001):
                best = min(best, float(((a + s * (b - a) - p) ** 2).sum()))
        assert abs(float(got[i]) - best) < 2e-4


def test_landmark_submodel_matches_the_full_model(head):
    sub, _ = landmark_submodel(head)
    assert sub.num_vertices < head.num_vertices // 4
    p = random_params(head, 3, np.random.default_rng(3))
    torch.testing.assert_close(sub(p).landmarks, head(p).landmarks, atol=1e-6, rtol=0)


def test_mediapipe_embedding_lies_on_the_surface_and_keeps_sides(head):
    pytest.importorskip("mediapipe")
    from mediapipe.python.solutions import face_mesh_connections as c

    from omg_lite.head.embedding_mediapipe import embed_mediapipe
    from omg_lite.tracking.landmarks import MP_TO_IBUG68, reference_face

    emb = embed_mediapipe(head, reference_face(), MP_TO_IBUG68)
    assert emb.faces_idx.shape == (478,) and emb.bary.shape == (478, 3)
    torch.testing.assert_close(emb.bary.sum(1), torch.ones(478))
    assert torch.equal(emb.faces_idx[MP_TO_IBUG68], head.lmk_faces_idx)
    assert float(emb.distance.median()) < 0.003  # metres: the warped reference hugs the surface
    pts = emb.points(head(head.zeros(1)).vertices, head.faces)[0]
    left = sorted({i for e in c.FACEMESH_LEFT_EYE for i in e})
    right = sorted({i for e in c.FACEMESH_RIGHT_EYE for i in e})
    assert (pts[left, 0] > 0).all() and (pts[right, 0] < 0).all()  # the subject's left eye is at +x
    lips = sorted({i for e in c.FACEMESH_LIPS for i in e})
    assert pts[lips, 1].max() < pts[left + right, 1].min()  # mouth below the eyes
    eyeballs = head.regions["eyeballs"]
    assert eyeballs[head.faces[emb.faces_idx[468:]]].all()  # irises on the eyeballs


def test_fit_one_synthetic_frame_from_true_landmarks(head):
    truth, uv = _truth(head, 1, seed=10)
    targets = FitTargets(uv, SIZE, SIZE)
    fit = LandmarkFitter(head, FitSettings(noise=0.001, fov_deg=FOV, distance=DIST)).fit(targets)
    assert float(rotation_error_deg(fit.params.pose, truth.pose)[0]) < 2.0
    assert reprojection_error(fit, head, targets, interior=False)[0] < 0.5
    assert fit.losses[-1] < fit.losses[0] and len(fit.stage_ends) == 2


@pytest.mark.slow
def test_fit_a_clip_with_shared_shape_and_a_lost_frame(head):
    truth, uv = _truth(head, 4, seed=11)
    truth.shape[:] = truth.shape[0]
    cam = Camera.frontal(batch=4, size=SIZE, fov_deg=FOV, distance=DIST)
    with torch.no_grad():
        uv, _ = cam.project_world(head(truth).landmarks)
    valid = torch.tensor([True, True, False, True])
    uv[2] = 0.0  # a lost frame: garbage that must be ignored
    targets = FitTargets(uv, SIZE, SIZE, valid=valid)
    fit = LandmarkFitter(head, FitSettings(noise=0.001, fov_deg=FOV, distance=DIST)).fit(targets)
    err = rotation_error_deg(fit.params.pose, truth.pose)
    assert (err[valid] < 2.0).all()
    rep = reprojection_error(fit, head, targets, interior=False)
    assert np.isnan(rep[2]) and (rep[[0, 1, 3]] < 0.5).all()


def test_fit_targets_refuse_bad_input():
    with pytest.raises(ValueError, match=r"\[M, 68, 2\]"):
        FitTargets(torch.zeros(1, 51, 2), 64, 64)
    with pytest.raises(ValueError, match="no frame has a face"):
        FitTargets(torch.zeros(2, 68, 2), 64, 64, valid=torch.zeros(2, dtype=torch.bool))


# ------------------------------------------------------------------ omg-lite track, end to end


@pytest.fixture(scope="module")
def astronaut_png(tmp_path_factory):
    pytest.importorskip("mediapipe")
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def test_track_bad_inputs_are_one_line_errors(tmp_path, astronaut_png, capsys):
    from omg_lite.cli import main

    (tmp_path / "bad.mp4").write_bytes(b"not a video" * 50)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "blank.png").write_bytes(b"")
    from PIL import Image

    Image.fromarray(np.zeros((128, 128, 3), np.uint8)).save(tmp_path / "black.png")
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    cases = [
        (["--video", str(tmp_path / "bad.mp4")], "not a readable video"),
        (["--video", str(tmp_path / "missing.mp4")], "no video at"),
        (["--image", str(tmp_path / "notes.txt")], "not an image file"),
        (["--image", str(tmp_path / "blank.png")], "not a readable image"),
        (["--image", str(tmp_path / "black.png")], "no face found"),
        (["--image", str(astronaut_png), "--video", str(tmp_path / "bad.mp4")], "exactly one of"),
    ]
    for args, message in cases:
        assert main(["track", "--out", str(tmp_path / "o"), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("omg-lite: error:") and message in err[-1], (args, err)
    assert main(["track", "--out", str(full), "--image", str(astronaut_png)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_track_the_astronaut_photo(tmp_path, astronaut_png):
    from PIL import Image

    from omg_lite.cli import main
    from omg_lite.head.params import load_clip

    out = tmp_path / "astro"
    assert main(["track", "--image", str(astronaut_png), "--out", str(out), "--set", "track.size=256"]) == 0
    params, camera, extra = load_clip(out / "params.npz")
    assert params.batch == 1 and camera.width == camera.height == 256 and extra["valid"].tolist() == [1]
    assert np.asarray(Image.open(out / "rgb" / "0000.png")).shape == (256, 256, 3)
    mask = np.asarray(Image.open(out / "mask" / "0000.png")) > 127
    assert 0.2 < mask.mean() < 0.95
    head = load_head_model(n_shape=20, n_expr=16)
    with torch.no_grad():
        uv, _ = camera.project_world(head(params).landmarks)
    det = torch.as_tensor(extra["landmarks2d"])
    iod = float((det[0, 36] - det[0, 45]).norm())
    assert float((uv[0, 17:] - det[0, 17:]).norm(dim=-1).mean()) < 0.02 * iod


@pytest.mark.slow
def test_track_a_video_with_lost_frames(tmp_path):
    pytest.importorskip("mediapipe")
    from skimage import data

    from omg_lite.cli import main
    from omg_lite.head.params import load_clip
    from omg_lite.tracking.video import write_video

    img = data.astronaut()[:448, 32:480]
    frames = [np.roll(img, 2 * m, axis=1) for m in range(6)]
    frames[2] = np.zeros_like(img)
    frames[3] = np.full_like(img, 128)
    video = write_video(tmp_path / "clip.mp4", frames, fps=10)
    out = tmp_path / "clip"
    assert main(["track", "--video", str(video), "--out", str(out), "--set", "track.size=128"]) == 0
    params, camera, extra = load_clip(out / "params.npz")
    assert extra["valid"].tolist() == [1, 1, 0, 0, 1, 1]
    assert np.isnan(extra["landmarks2d"][2]).all() and np.isfinite(params.pose.numpy()).all()
    assert len(list((out / "rgb").glob("*.png"))) == 6
