"""EWA projection (readable torch and compiled numba) against gsplat's pure-torch reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

from omg_lite.geometry.camera import Camera
from omg_lite.splat.project import ALPHA_MIN, covariance3d, project_gaussians


def _camera(B: int, W: int = 40, H: int = 30, dtype=torch.float32) -> Camera:
    """Cameras 1.7 m from the origin (z != 1 keeps 1/z and 1/z^2 apart), slightly rotated, with an off-centre principal point."""
    g = torch.Generator().manual_seed(7)
    f = 75.0
    K = torch.tensor([[f, 0, W / 2 + 1.3], [0, f * 1.1, H / 2 - 0.7], [0, 0, 1]], dtype=torch.float64)
    Ks, Rs, ts = [], [], []
    for _ in range(B):
        axis = torch.randn(3, generator=g, dtype=torch.float64) * 0.2
        angle = axis.norm()
        kx = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]]) / angle
        R0 = torch.eye(3, dtype=torch.float64) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx
        R = R0 @ torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
        Ks.append(K)
        Rs.append(R)
        ts.append(-(R @ torch.tensor([0.0, 0.0, 1.7], dtype=torch.float64)))
    return Camera(torch.stack(Ks).to(dtype), torch.stack(Rs).to(dtype), torch.stack(ts).to(dtype), W, H)


def _gaussians(B: int, N: int, dtype=torch.float32, seed: int = 0):
    """Random Gaussians near the origin, plus some behind the camera and some far off-screen."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(B, N, 3, generator=g, dtype=torch.float64) * 0.15
    means[:, :3, 2] = 2.5  # behind the camera (it sits at z = +1.7 looking towards -z)
    means[:, 3:5, 0] = 5.0  # far to the side: off-screen
    means[:, 5, 2] = 1.695  # just in front of the near plane, inside it
    quats = torch.randn(B, N, 4, generator=g, dtype=torch.float64)
    scales = torch.exp(torch.randn(B, N, 3, generator=g, dtype=torch.float64) * 0.7) * 0.01
    opacities = torch.rand(B, N, generator=g, dtype=torch.float64)
    opacities[:, 6] = 0.002  # below 1/255: culled when radii are opacity-aware
    return [x.to(dtype) for x in (means, quats, scales, opacities)]


def _gsplat(means, quats, scales, camera: Camera):
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        means, covars, camera.viewmat[:, None], camera.K[:, None], camera.width, camera.height
    )
    return radii[:, 0], means2d[:, 0], depths[:, 0], conics[:, 0]


def test_covariance_matches_gsplat():
    _, quats, scales, _ = _gaussians(2, 50, torch.float64)
    ref, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    torch.testing.assert_close(covariance3d(quats, scales), ref, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_projection_matches_gsplat(B, dtype):
    camera = _camera(B, dtype=dtype)
    means, quats, scales, _ = _gaussians(B, 200, dtype)
    radii_ref, means2d_ref, depths_ref, conics_ref = _gsplat(means, quats, scales, camera)
    proj = project_gaussians(means, quats, scales, camera)
    assert (radii_ref > 0).any(-1).sum() > 100, "the fixture must keep most Gaussians"
    assert ((radii_ref == 0).all(-1)[:, :6]).all(), "behind, off-screen and near-plane Gaussians are culled"
    if dtype == torch.float64:
        assert torch.equal(proj.radii, radii_ref.to(torch.int32))
    else:  # ceil() may land on the other side of an integer in float32, never by more than one
        assert (proj.radii - radii_ref).abs().max() <= 1
    valid = (radii_ref > 0).all(-1)
    torch.testing.assert_close(proj.depths, depths_ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(proj.means2d[valid], means2d_ref[valid], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(proj.conics[valid], conics_ref[valid], rtol=1e-4, atol=1e-6)


numba_project = pytest.importorskip("omg_lite.splat.numba_project", reason="numba is not installed")


def _numba_forward(means, quats, scales, opacities, camera: Camera, tight: bool):
    B, N = opacities.shape
    f32 = lambda x: x.detach().to(torch.float32).contiguous().numpy()  # noqa: E731
    f64 = lambda x: x.detach().to(torch.float64).contiguous().numpy()  # noqa: E731
    out = dict(means2d=np.zeros((B, N, 2), np.float32), conics=np.zeros((B, N, 3), np.float32),
               depths=np.zeros((B, N), np.float32), radii=np.zeros((B, N, 2), np.int32),
               status=np.zeros((B, N), np.int8))
    numba_project.project_forward(
        f32(means), f32(quats), f32(scales), f32(opacities), np.zeros((B, N, 1), np.float32),
        f64(camera.K), f64(camera.R), f64(camera.t), camera.width, camera.height, tight,
        out["means2d"], out["conics"], out["depths"], out["radii"], out["status"],
    )
    return {k: torch.from_numpy(v) for k, v in out.items()}


@pytest.mark.parametrize("B", [1, 2])
def test_numba_projection_matches_gsplat(B):
    camera = _camera(B, dtype=torch.float64)
    means, quats, scales, opacities = _gaussians(B, 300, torch.float32)
    radii_ref, means2d_ref, depths_ref, conics_ref = _gsplat(means.double(), quats.double(), scales.double(), camera)
    out = _numba_forward(means, quats, scales, opacities, camera, tight=False)
    assert (out["status"] == 0).all()
    assert (out["radii"] - radii_ref).abs().max() <= 1
    assert ((out["radii"] > 0).any(-1) == (radii_ref > 0).any(-1)).float().mean() > 0.99
    valid = (radii_ref > 0).all(-1) & (out["radii"] > 0).all(-1)
    torch.testing.assert_close(out["depths"][valid], depths_ref[valid].float(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out["means2d"][valid], means2d_ref[valid].float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["conics"][valid], conics_ref[valid].float(), rtol=1e-4, atol=1e-6)


def test_opacity_aware_radii_hold_every_visible_pixel():
    """Brute force over pixel centres: alpha >= 1/255 happens only inside the (tight) box."""
    camera = _camera(1, W=64, H=48, dtype=torch.float64)
    means, quats, scales, opacities = _gaussians(1, 120, torch.float64, seed=3)
    out = _numba_forward(means, quats, scales, opacities, camera, tight=True)
    proj = project_gaussians(means, quats, scales, camera, opacities)
    assert torch.equal(proj.radii, out["radii"]), "the torch and numba twins cull alike"
    _, means2d, _, conics = _gsplat(means, quats, scales, camera)
    loose, _, _, _ = _gsplat(means, quats, scales, camera)
    assert (out["radii"] <= loose).all() and (out["radii"] < loose).any(), "tighter than 3.33 sigma"
    assert (out["radii"][0, 6] == 0).all(), "opacity below 1/255 is culled"
    ys, xs = torch.meshgrid(torch.arange(48.0) + 0.5, torch.arange(64.0) + 0.5, indexing="ij")
    for g in range(120):
        if (loose[0, g] == 0).all():
            continue
        dx, dy = means2d[0, g, 0] - xs, means2d[0, g, 1] - ys
        a, b, c = conics[0, g]
        sigma = 0.5 * (a * dx**2 + c * dy**2) + b * dx * dy
        drawn = opacities[0, g] * torch.exp(-sigma) >= ALPHA_MIN
        rx, ry = out["radii"][0, g].double()
        inside = (dx.abs() <= rx) & (dy.abs() <= ry)
        assert not (drawn & ~inside).any(), f"Gaussian {g} draws outside its box"


@pytest.mark.parametrize("B", [1, 2])
def test_numba_projection_backward_matches_autograd(B):
    """The hand-written chain rule against autograd through gsplat's projection (float64)."""
    camera = _camera(B, dtype=torch.float64)
    means, quats, scales, opacities = _gaussians(B, 60, torch.float64, seed=5)
    scales[:, 10, 0] = 0.0  # clamped to 1e-8: no gradient
    inputs = [x.clone().requires_grad_() for x in (means, quats, scales)]
    covars, _ = _quat_scale_to_covar_preci(inputs[1], inputs[2].clamp_min(1e-8), compute_preci=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        inputs[0], covars, camera.viewmat[:, None], camera.K[:, None], camera.width, camera.height
    )
    g = torch.Generator().manual_seed(1)
    g2d, gz, gq = (torch.randn(x[:, 0].shape, generator=g, dtype=torch.float64) for x in (means2d, depths, conics))
    out = _numba_forward(means, quats, scales, opacities, camera, tight=False)
    valid = (out["radii"] > 0).any(-1)
    keep = valid.double()
    loss = ((means2d[:, 0] * g2d).sum(-1) + depths[:, 0] * gz + (conics[:, 0] * gq).sum(-1)) * keep
    ref = torch.autograd.grad(loss.sum(), inputs)

    C = 2
    rows = torch.cat([g2d, gq, torch.zeros(B, 60, 1, dtype=torch.float64), gz[..., None],
                      torch.zeros(B, 60, C, dtype=torch.float64)], -1)
    rows = (rows * keep[..., None]).reshape(B * 60, -1).float().numpy()
    grads = [np.zeros((B, 60, k), np.float32) for k in (3, 4, 3)] + [np.zeros((B, 60), np.float32),
                                                                      np.zeros((B, 60, C), np.float32)]
    numba_project.project_backward(
        means.float().numpy(), quats.float().numpy(), scales.float().numpy(),
        camera.K.numpy(), camera.R.numpy(), camera.t.numpy(), camera.width, camera.height,
        out["radii"].numpy(), out["conics"].numpy(), rows,
        np.arange(B * 60 + 1, dtype=np.int64), *grads,
    )
    for name, mine, theirs in zip(("means", "quats", "scales"), grads, ref):
        mine = torch.from_numpy(mine).double()
        assert theirs.abs().max() > 0
        torch.testing.assert_close(mine, theirs, rtol=1e-3, atol=1e-3 * theirs.abs().max().item(), msg=name)
    assert grads[2][:, 10, 0].max() == 0
