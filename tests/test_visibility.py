"""OAFF's visibility mask M and the fusion F_h = F_global + F_local * M, against independent truths:
brute-force ray casting written here (the ray from the camera centre to each vertex, tested
against every triangle of the head) and the analytic occlusion of a sphere behind a quad."""

from __future__ import annotations

import math

import pytest
import torch
import trimesh

from omg_lite.geometry.camera import Camera
from omg_lite.geometry.subdivide import Subdivider
from omg_lite.geometry.visibility import DEFAULT_TOL, DepthBuffer, fuse, visibility_mask
from omg_lite.head import load_head_model


def first_hit(tri: torch.Tensor, dirs: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Moller-Trumbore: smallest t > 0 with t * dirs[n] on any triangle (inf on a miss).

    tri [F, 3, 3] camera space, dirs [N, 3] rays from the camera centre. Returns [N].
    """
    v0, e1, e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    s = -v0
    q = torch.linalg.cross(s, e1)
    out = []
    for d in dirs.split(chunk):
        h = torch.linalg.cross(d[:, None, :].expand(-1, len(tri), -1), e2[None].expand(len(d), -1, -1))
        a = (e1 * h).sum(-1)
        u = (s * h).sum(-1) / a
        v = (d[:, None] * q).sum(-1) / a
        t = (e2 * q).sum(-1) / a
        hit = (a != 0) & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
        out.append(torch.where(hit, t, torch.full_like(t, math.inf)).amin(-1))
    return torch.cat(out)


def ray_cast_truth(verts_cam: torch.Tensor, faces: torch.Tensor, points: torch.Tensor, K: torch.Tensor):
    """occluded [N]: a triangle lies strictly in front of the point on its ray (by > 1e-5 of its depth);
    smooth [N]: no depth discontinuity within 1 px of its projection (the nearest surface's depth on
    the rays 1 px away in u and v differs by < 0.5% of the depth and its second difference by < 0.1%)."""
    tri = verts_cam[faces]
    d = points / points[:, 2:]  # d_z = 1, so t is the depth
    t0 = first_hit(tri, d)
    occluded = t0 < points[:, 2] * (1 - 1e-5)
    shifted = []
    for du, dv in [(1, 0), (-1, 0), (0, 1), (0, -1)]:
        ds = d.clone()
        ds[:, 0] += du / K[0, 0]
        ds[:, 1] += dv / K[1, 1]
        shifted.append(first_hit(tri, ds))
    t = torch.stack(shifted, -1)  # [N, 4]
    smooth = torch.isfinite(t).all(-1) & ((t - t0[:, None]).abs() < 5e-3 * t0[:, None]).all(-1)
    for a, b in [(0, 1), (2, 3)]:
        smooth &= (t[:, a] + t[:, b] - 2 * t0).abs() < 1e-3 * t0
    return occluded, smooth


@pytest.fixture(scope="module")
def head():
    return load_head_model(None, n_shape=20, n_expr=16)


def posed_head(head, yaw_deg: float, seed: int, size: int) -> tuple[torch.Tensor, Camera]:
    """A random identity and expression turned by ``yaw_deg`` about the vertical axis, camera space."""
    g = torch.Generator().manual_seed(seed)
    p = head.zeros(1)
    pose = p.pose.clone()
    pose[0, 1] = math.radians(yaw_deg)  # root joint, axis-angle about +y
    pose[0, 6] = 0.15 * torch.rand(1, generator=g).item()  # jaw opening
    shape = 0.8 * torch.randn(1, head.n_shape, generator=g)
    expr = 0.8 * torch.randn(1, head.n_expr, generator=g)
    verts = head(shape, expr, pose, p.translation).vertices
    cam = Camera.frontal(1, size, fov_deg=18.0, distance=1.6)
    return cam.world_to_camera(verts), cam


def agreement(head, yaws, levels, points_per_level: int, size: int) -> dict[int, float]:
    sub = Subdivider(head.faces, head.num_vertices, levels=max(levels))
    g = torch.Generator().manual_seed(0)
    agree = {k: [] for k in levels}
    for n, yaw in enumerate(yaws):
        verts, cam = posed_head(head, yaw, seed=n, size=size)
        depth = DepthBuffer(verts, head.faces, cam.K, size, size)  # level 0 serves every level
        for k in levels:
            pts = sub(verts, k)
            pts = pts[:, torch.randperm(pts.shape[1], generator=g)[:points_per_level]]
            M = depth.visible(pts)[0]
            occluded, smooth = ray_cast_truth(verts[0], head.faces, pts[0], cam.K[0])
            agree[k].append((M == ~occluded)[smooth])
    return {k: torch.cat(v).float().mean().item() for k, v in agree.items()}


def test_mask_agrees_with_ray_casting_on_turned_heads_at_every_level(head):
    result = agreement(head, yaws=[-40.0, 40.0], levels=[0, 1, 2], points_per_level=150, size=256)
    for k, a in result.items():
        assert a >= 0.99, f"level {k}: M agrees with ray casting on {a:.4f} of the vertices away from silhouettes"


@pytest.mark.slow
def test_mask_agrees_with_ray_casting_across_poses(head):
    result = agreement(head, yaws=[-40.0, -20.0, 0.0, 20.0, 40.0], levels=[0, 1, 2], points_per_level=400, size=256)
    for k, a in result.items():
        assert a >= 0.99, f"level {k}: agreement {a:.4f}"


def sphere_behind_quad(gap: float):
    """An icosphere (r 0.3 at depth 2) and a quad whose plane lies ``gap`` in front of the sphere's
    nearest point, covering part of it. Returns verts [1, V, 3], faces, the sphere's vertex count,
    the quad's depth and its x/y extent."""
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.3)
    sv = torch.tensor(sphere.vertices, dtype=torch.float32) + torch.tensor([0.0, 0.0, 2.0])
    zq = 1.7 - gap
    x0, x1, y0, y1 = -0.12, 0.2, -0.15, 0.06
    qv = torch.tensor([[x0, y0, zq], [x1, y0, zq], [x1, y1, zq], [x0, y1, zq]])
    faces = torch.cat([torch.tensor(sphere.faces), torch.tensor([[0, 1, 2], [0, 2, 3]]) + len(sv)])
    return torch.cat([sv, qv])[None], faces, len(sv), zq, (x0, x1, y0, y1)


def test_sphere_behind_a_quad_matches_analytic_occlusion():
    S = 128
    verts, faces, nv, zq, (x0, x1, y0, y1) = sphere_behind_quad(gap=0.2)
    K = Camera.frontal(1, S, fov_deg=25.0).K
    M = visibility_mask(verts, faces, K, S, S)[0, :nv]
    X = verts[0, :nv]
    centre = torch.tensor([0.0, 0.0, 2.0])
    normal = (X - centre) / 0.3
    view = X / X.norm(dim=-1, keepdim=True)
    cos = (normal * view).sum(-1)  # < 0: the sphere faces the camera there
    hx, hy = X[:, 0] * zq / X[:, 2], X[:, 1] * zq / X[:, 2]  # the ray meets the quad's plane
    behind_quad = (hx > x0) & (hx < x1) & (hy > y0) & (hy < y1)
    truth = (cos < 0) & ~behind_quad
    px = 2 * K[0, 0, 0] / 2.0 * (1 / zq)  # ~2 px at the quad, in metres at its depth: margin from its edges
    margin = torch.stack([(hx - x0).abs(), (hx - x1).abs(), (hy - y0).abs(), (hy - y1).abs()], -1).amin(-1)
    clear = (cos.abs() > 0.2) & (margin > 2 / px)
    assert clear.sum() > 0.5 * nv and (truth & clear).sum() > 50 and (~truth & clear & (cos < 0)).sum() > 50
    assert (M == truth)[clear].all()


@pytest.mark.parametrize("gap, tol", [(0.0015, 3e-4), (0.004, DEFAULT_TOL)])
def test_tolerance_separates_a_thin_occluder(gap, tol):
    """A quad ``gap`` in front of the sphere (1.5 mm: like an eyelid over an eyeball) occludes at a tolerance below gap / depth:
    3e-4 (0.5 mm at 1.7 m) separates the eyelid, the default 1e-3 (1.7 mm) an occluder 4 mm in front."""
    S = 128
    verts, faces, nv, zq, (x0, x1, y0, y1) = sphere_behind_quad(gap=gap)
    K = Camera.frontal(1, S, fov_deg=25.0).K
    X = verts[0, :nv]
    hx, hy = X[:, 0] * zq / X[:, 2], X[:, 1] * zq / X[:, 2]
    under = (hx > x0 + 0.02) & (hx < x1 - 0.02) & (hy > y0 + 0.02) & (hy < y1 - 0.02) & (X[:, 2] < zq * 1.009)
    assert under.sum() > 5
    assert not visibility_mask(verts, faces, K, S, S, tol=tol)[0, :nv][under].any()
    assert visibility_mask(verts, faces, K, S, S, tol=0.01)[0, :nv][under].all()


def test_points_outside_the_image_or_behind_the_camera_are_not_seen_and_empty_pixels_are_visible():
    S = 64
    verts, faces, nv, zq, _ = sphere_behind_quad(gap=0.2)
    K = Camera.frontal(1, S, fov_deg=25.0).K
    depth = DepthBuffer(verts, faces, K, S, S)
    pts = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, 3.0], [5.0, 0.0, 2.0], [0.0, 0.0, -1.0], [0.0, 0.38, 2.0]]])
    # in front of everything, behind the quad, off-screen, behind the camera, beside the sphere (empty pixel)
    assert depth.visible(pts)[0].tolist() == [True, False, False, False, True]
    zhat, seen = depth.front_depth(pts)
    assert seen[0].tolist() == [True, True, False, False, True]
    assert torch.isclose(zhat[0, 0], torch.tensor(zq), rtol=1e-6) and math.isinf(zhat[0, 4].item())


def test_fuse_adds_local_features_only_where_visible():
    g = torch.Generator().manual_seed(0)
    B, V, C = 2, 7, 5
    Fg, Fl = torch.randn(B, V, C, generator=g), torch.randn(B, V, C, generator=g, requires_grad=True)
    M = torch.rand(B, V, generator=g) > 0.5
    out = fuse(Fg, Fl, M)
    for b in range(B):
        for v in range(V):
            expected = Fg[b, v] + Fl[b, v] if M[b, v] else Fg[b, v]
            assert torch.equal(out[b, v], expected)
    out.sum().backward()
    assert torch.equal(Fl.grad, M[..., None].float().expand(B, V, C))  # no gradient reaches occluded local features
    with pytest.raises(ValueError, match="F_global and F_local"):
        fuse(Fg, Fl[:, :3], M)
    with pytest.raises(ValueError, match="M must be"):
        fuse(Fg, Fl, M[:, :3])


def test_bad_input_gets_one_clear_error():
    verts, faces, nv, _, _ = sphere_behind_quad(gap=0.2)
    K = Camera.frontal(1, 32).K
    depth = DepthBuffer(verts, faces, K, 32, 32)
    with pytest.raises(ValueError, match="points_cam must be"):
        depth.visible(verts[0])
    with pytest.raises(ValueError, match="tol must be"):
        depth.visible(verts, tol=-1.0)
    with pytest.raises(ValueError, match="fragments are"):
        DepthBuffer(verts, faces, K, 16, 16, fragments=depth.frags)
    with pytest.raises(ValueError, match="behind the camera"):
        visibility_mask(-verts, faces, K, 32, 32)
