"""Projective sampling: checked against a bilinear interpolation written out by hand here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from omg_lite.geometry.camera import Camera
from omg_lite.geometry.sampling import sample_features, sample_uv

W, H = 12, 8  # image size (non-square on purpose)


def _bilinear(fm: np.ndarray, x: float, y: float, padding: str) -> np.ndarray:
    """fm [C, h, w] at feature-pixel coordinates (x, y); pixel (i, j) has its centre at (j + .5, i + .5)."""
    _, h, w = fm.shape
    gx, gy = x - 0.5, y - 0.5
    x0, y0 = math.floor(gx), math.floor(gy)
    ax, ay = gx - x0, gy - y0
    out = np.zeros(fm.shape[0])
    for xi, wx in ((x0, 1 - ax), (x0 + 1, ax)):
        for yi, wy in ((y0, 1 - ay), (y0 + 1, ay)):
            if padding == "border":
                xi, yi = min(max(xi, 0), w - 1), min(max(yi, 0), h - 1)
            elif not (0 <= xi < w and 0 <= yi < h):
                continue
            out += wx * wy * fm[:, yi, xi]
    return out


def _test_uv(rng: np.random.Generator) -> np.ndarray:
    """Random points inside and outside the image plus points exactly on its border and corners."""
    inside = rng.uniform([0, 0], [W, H], size=(40, 2))
    outside = rng.uniform([-3, -3], [W + 3, H + 3], size=(40, 2))
    border = [[0, 3.3], [W, 5.1], [7.2, 0], [4.4, H], [0, 0], [W, H], [W, 0], [0, H], [-0.25, 2.5], [W + 0.25, 2.5], [6.5, -0.5]]
    return np.concatenate([inside, outside, np.asarray(border, dtype=float)])


@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("scale", [1, 2])
def test_sample_uv_matches_hand_written_bilinear(padding, scale):
    rng = np.random.default_rng(scale)
    h, w = H // scale, W // scale
    fm = torch.randn(2, 3, h, w, dtype=torch.float64)
    uv = np.stack([_test_uv(rng), _test_uv(rng)])  # [B, V, 2]
    got = sample_uv(fm, torch.as_tensor(uv), W, H, padding)
    want = np.array([[_bilinear(fm[b].numpy(), u * w / W, v * h / H, padding) for u, v in uv[b]] for b in range(2)])
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1, 2, 4])
def test_feature_pixel_centres_return_that_pixel(scale, dtype):
    # Exact up to the rounding of x_n = 2u/W - 1 and back (a few ulps).
    h, w = H // scale, W // scale
    fm = torch.randn(1, 5, h, w, dtype=dtype, generator=torch.Generator().manual_seed(scale))
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    uv = torch.stack([(j.flatten() + 0.5) * scale, (i.flatten() + 0.5) * scale], -1)[None].to(dtype)
    got = sample_uv(fm, uv, W, H)
    tol = 1e-5 if dtype == torch.float32 else 1e-13  # a blend with a neighbour would be off by ~1
    torch.testing.assert_close(got[0], fm[0].flatten(1).T, rtol=tol, atol=tol)


def _camera(batch: int = 1) -> Camera:
    K = torch.tensor([[20.0, 0, W / 2], [0, 18.0, H / 2], [0, 0, 1]], dtype=torch.float64)
    a = 0.3
    R = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]], dtype=torch.float64)
    R = R @ torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    t = torch.tensor([0.05, -0.02, 1.5], dtype=torch.float64)
    return Camera(K.expand(batch, 3, 3).clone(), R.expand(batch, 3, 3).clone(), t.expand(batch, 3).clone(), W, H)


def _unproject(cam: Camera, uv: np.ndarray, depth: np.ndarray) -> torch.Tensor:
    """World points [1, V, 3] that the pinhole (fx, fy, cx, cy, R, t) maps to ``uv`` at ``depth``."""
    K, R, t = cam.K[0].numpy(), cam.R[0].numpy(), cam.t[0].numpy()
    xc = np.stack([(uv[:, 0] - K[0, 2]) / K[0, 0] * depth, (uv[:, 1] - K[1, 2]) / K[1, 1] * depth, depth], -1)
    return torch.as_tensor((xc - t) @ R)[None]  # R^T (x_c - t), row form


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_sample_features_projects_then_samples(padding):
    rng = np.random.default_rng(0)
    cam = _camera()
    uv = _test_uv(rng)
    depth = rng.uniform(0.5, 3.0, size=len(uv))
    fm = torch.randn(1, 4, H // 2, W // 2, dtype=torch.float64)
    feats, got_uv, valid = sample_features(fm, _unproject(cam, uv, depth), cam, padding)
    np.testing.assert_allclose(got_uv[0].numpy(), uv, rtol=0, atol=1e-9)
    want = np.array([_bilinear(fm[0].numpy(), u / 2, v / 2, padding) for u, v in uv])
    np.testing.assert_allclose(feats[0].numpy(), want, rtol=0, atol=1e-9)
    inside = (uv[:, 0] >= -1e-9) & (uv[:, 0] <= W + 1e-9) & (uv[:, 1] >= -1e-9) & (uv[:, 1] <= H + 1e-9)
    clear = np.abs(np.concatenate([uv, [W, H] - uv], 1)).min(1) > 1e-6  # away from the border
    assert np.array_equal(valid[0].numpy()[clear], inside[clear])
    assert valid.dtype == torch.bool and feats.shape == (1, len(uv), 4)


def test_points_behind_the_camera_get_zero_features_nan_uv_and_zero_gradient():
    cam = _camera(batch=2)
    uv = np.array([[6.0, 4.0], [3.0, 2.0], [6.0, 4.0]])
    pts = torch.cat([_unproject(cam, uv, np.array([1.0, -1.0, 0.0]))] * 2)  # in front, behind, on the camera plane
    pts.requires_grad_(True)
    fm = torch.ones(2, 3, H, W, dtype=torch.float64, requires_grad=True)
    feats, got_uv, valid = sample_features(fm, pts, cam)
    assert valid.tolist() == [[True, False, False]] * 2
    assert torch.equal(feats[:, 1:], torch.zeros(2, 2, 3, dtype=torch.float64))
    torch.testing.assert_close(feats[:, 0], torch.ones(2, 3, dtype=torch.float64))
    assert bool(torch.isnan(got_uv[:, 1:]).all()) and not bool(torch.isnan(got_uv[:, 0]).any())
    (feats * torch.randn_like(feats)).sum().backward()
    assert torch.isfinite(pts.grad).all() and torch.equal(pts.grad[:, 1:], torch.zeros(2, 2, 3, dtype=torch.float64))


def test_gradcheck_map_and_points():
    cam = _camera()
    rng = np.random.default_rng(3)
    pts = _unproject(cam, rng.uniform([1, 1], [W - 1, H - 1], size=(6, 2)), rng.uniform(1, 2, size=6)).requires_grad_(True)
    fm = torch.randn(1, 2, H // 2, W // 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, p: sample_features(f, p, cam)[0], (fm, pts))


def test_camera_batch_of_one_broadcasts():
    cam = _camera(batch=1)
    rng = np.random.default_rng(1)
    pts = torch.cat([_unproject(cam, rng.uniform([0, 0], [W, H], size=(5, 2)), np.full(5, 2.0))] * 3)
    fm = torch.randn(3, 2, H, W, dtype=torch.float64)
    feats, _, _ = sample_features(fm, pts, cam)
    for b in range(3):
        torch.testing.assert_close(feats[b], sample_features(fm[b : b + 1], pts[b : b + 1], cam)[0][0])


def test_aspect_ratio_must_match_the_image():
    cam = _camera()
    pts = _unproject(cam, np.array([[1.0, 1.0]]), np.array([1.0]))
    with pytest.raises(ValueError, match="aspect ratios differ"):
        sample_features(torch.zeros(1, 2, 8, 8, dtype=torch.float64), pts, cam)
    with pytest.raises(ValueError, match="aspect ratios differ"):
        sample_uv(torch.zeros(1, 2, 12, 8), torch.zeros(1, 1, 2), W, H)
    # A side rounded to whole feature pixels is accepted: 100 x 75 covered by 13 x 10.
    assert sample_uv(torch.zeros(1, 2, 10, 13), torch.zeros(1, 1, 2), 100, 75).shape == (1, 1, 2)


def test_bad_input_raises_one_clear_error():
    cam = _camera()
    fm = torch.zeros(1, 2, H, W, dtype=torch.float64)
    pts = torch.zeros(1, 4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"points_world must be \[B=1, V, 3\]"):
        sample_features(fm, pts[0], cam)
    with pytest.raises(ValueError, match=r"points_world must be \[B=1, V, 3\]"):
        sample_features(fm, torch.zeros(2, 4, 3, dtype=torch.float64), cam)
    with pytest.raises(ValueError, match=r"feature_map must be \[B, C, h, w\]"):
        sample_features(fm[0], pts, cam)
    with pytest.raises(ValueError, match="padding_mode"):
        sample_features(fm, pts, cam, padding_mode="reflection")
    with pytest.raises(ValueError, match="expected 1 or B=2"):
        sample_features(torch.zeros(2, 2, H, W, dtype=torch.float64), torch.zeros(2, 4, 3, dtype=torch.float64), _camera(batch=3))
    with pytest.raises(ValueError, match="camera.to"):
        sample_features(fm, pts.float(), cam)
    with pytest.raises(ValueError, match=r"uv must be \[B=1, V, 2\]"):
        sample_uv(fm, torch.zeros(1, 4, 3), W, H)
    with pytest.raises(ValueError, match="floating point"):
        sample_uv(torch.zeros(1, 2, H, W, dtype=torch.long), torch.zeros(1, 4, 2), W, H)
