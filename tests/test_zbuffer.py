"""The mesh z-buffer against independent truths: the analytic ray-sphere and ray-plane depth, and
a brute-force Moller-Trumbore ray caster written here (every pixel ray against every triangle)."""

from __future__ import annotations

import math

import pytest
import torch
import trimesh

from omg_lite.geometry import zbuffer
from omg_lite.geometry.zbuffer import rasterize


def intrinsics(B: int, size: int, f: float, dtype=torch.float32) -> torch.Tensor:
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]], dtype=dtype)
    return K.expand(B, 3, 3).clone()


def pixel_rays(K: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Directions through the pixel centres, d = K^-1 (j + 0.5, i + 0.5, 1): [B, H*W, 3], d_z = 1."""
    i, j = torch.meshgrid(torch.arange(H, dtype=K.dtype), torch.arange(W, dtype=K.dtype), indexing="ij")
    pix = torch.stack([j + 0.5, i + 0.5, torch.ones_like(i)], -1).reshape(-1, 3)
    return pix @ torch.linalg.inv(K).transpose(1, 2)


def brute_force(verts: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, H: int, W: int, near: float = 1e-3):
    """Nearest hit of every pixel ray (from the camera centre) with every triangle, Moller-Trumbore.

    Returns face id [B, H, W] (-1 on a miss) and depth [B, H, W] (0 on a miss), in float64.
    """
    verts, K = verts.double(), K.double()
    B = verts.shape[0]
    d = pixel_rays(K, H, W)[:, :, None, :]  # [B, P, 1, 3]
    tri = verts[:, faces]  # [B, F, 3, 3]
    v0, e1, e2 = tri[:, None, :, 0], (tri[:, :, 1] - tri[:, :, 0])[:, None], (tri[:, :, 2] - tri[:, :, 0])[:, None]
    h = torch.linalg.cross(d, e2)  # [B, P, F, 3]
    a = (e1 * h).sum(-1)  # [B, P, F]
    s = -v0  # ray origin is the camera centre
    u = (s * h).sum(-1) / a
    q = torch.linalg.cross(s, e1)  # [B, 1, F, 3]
    v = (d * q).sum(-1) / a
    t = (e2 * q).sum(-1) / a
    front = (tri[..., 2] > near).all(-1)[:, None, :]
    hit = (a.abs() > 1e-12) & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0) & front
    t = torch.where(hit, t, torch.full_like(t, math.inf))
    tmin, fid = t.min(-1)
    miss = torch.isinf(tmin)
    fid[miss] = -1
    depth = torch.where(miss, torch.zeros_like(tmin), tmin)  # d_z = 1, so depth = t
    return fid.reshape(B, H, W), depth.reshape(B, H, W)


def triangle_soup(B: int, F: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B random soups of F overlapping triangles in front of the camera."""
    g = torch.Generator().manual_seed(seed)
    z = 1 + 2 * torch.rand(B, F, 1, generator=g)
    centre = torch.cat([(torch.rand(B, F, 2, generator=g) - 0.5) * 0.9 * z, z], -1)
    verts = (centre[:, :, None, :] + 0.15 * torch.randn(B, F, 3, 3, generator=g)).reshape(B, 3 * F, 3)
    return verts, torch.arange(3 * F).reshape(F, 3)


def noisy_spheres(B: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B randomly rotated, bumpy closed icospheres (320 faces) at depth 2."""
    g = torch.Generator().manual_seed(seed)
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    base = torch.tensor(mesh.vertices, dtype=torch.float32)
    out = []
    for _ in range(B):
        R = torch.linalg.qr(torch.randn(3, 3, generator=g))[0]
        bumps = 1 + 0.15 * torch.rand(base.shape[0], 1, generator=g)
        out.append(base * bumps @ R.T + torch.tensor([0.1, -0.05, 2.0]))
    return torch.stack(out), torch.tensor(mesh.faces, dtype=torch.long)


@pytest.mark.parametrize("chunk", [zbuffer.PAIRS_PER_CHUNK, 97])
@pytest.mark.parametrize("scene", ["soup", "spheres"])
def test_face_ids_match_brute_force_ray_casting(monkeypatch, chunk, scene):
    monkeypatch.setattr(zbuffer, "PAIRS_PER_CHUNK", chunk)
    B, S = 3, 48
    verts, faces = triangle_soup(B, 150, seed=1) if scene == "soup" else noisy_spheres(B, seed=2)
    K = intrinsics(B, S, f=60.0)
    frags = rasterize(verts, faces, K, S, S)
    fid, depth = brute_force(verts, faces, K, S, S)
    covered = (fid >= 0) | frags.mask
    assert covered.sum() > 0.3 * B * S * S
    agree = (frags.face_idx == fid)[covered].double().mean()
    assert agree >= 0.995, f"face ids agree on {agree:.4f} of covered pixels"
    same = (frags.face_idx == fid) & (fid >= 0)
    torch.testing.assert_close(frags.depth[same].double(), depth[same], rtol=1e-5, atol=0)


def test_sphere_depth_matches_analytic_ray_sphere_depth():
    B, S, r = 2, 128, 0.3
    mesh = trimesh.creation.icosphere(subdivisions=5, radius=r)
    centres = torch.tensor([[0.0, 0.0, 1.5], [0.12, -0.08, 2.0]])
    verts = torch.tensor(mesh.vertices, dtype=torch.float32)[None] + centres[:, None]
    K = torch.stack([intrinsics(1, S, 140.0)[0], intrinsics(1, S, 170.0)[0]])
    frags = rasterize(verts, torch.tensor(mesh.faces), K, S, S)
    # |t d - c|^2 = r^2, nearest root; d_z = 1 so the depth is t
    d = pixel_rays(K.double(), S, S)  # [B, P, 3]
    c = centres.double()[:, None]
    dd, dc, cc = (d * d).sum(-1), (d * c).sum(-1), (c * c).sum(-1)
    disc = dc**2 - dd * (cc - r**2)
    hit = (disc > 0).reshape(B, S, S)
    t = ((dc - disc.clamp_min(0).sqrt()) / dd).reshape(B, S, S)
    both = hit & frags.mask
    err = (frags.depth.double() - t)[both].abs()
    assert err.median() < 1e-3 * r
    inner = (cc - dc**2 / dd).reshape(B, S, S) < (0.9 * r) ** 2  # rays well inside the silhouette
    assert (frags.depth.double() - t)[inner].abs().max() < 1e-3 * r
    assert (hit != frags.mask).sum() < 0.02 * hit.sum()  # only silhouette pixels may differ


def test_huge_tilted_triangle_gives_the_analytic_plane_depth(monkeypatch):
    monkeypatch.setattr(zbuffer, "PAIRS_PER_CHUNK", 1000)  # one face spans many chunks
    S = 64
    verts = torch.tensor([[[-50.0, -50.0, 2.0], [50.0, -50.0, 4.0], [0.0, 60.0, 3.0]]], dtype=torch.float64)
    frags = rasterize(verts, torch.tensor([[0, 1, 2]]), intrinsics(1, S, 50.0, torch.float64), S, S)
    assert frags.mask.all()
    assert frags.depth.dtype == torch.float64
    # plane n . X = n . X0 met by the ray t d  ->  t = n . X0 / n . d
    n = torch.linalg.cross(verts[0, 1] - verts[0, 0], verts[0, 2] - verts[0, 0])
    d = pixel_rays(intrinsics(1, S, 50.0, torch.float64), S, S)[0]
    t = ((n @ verts[0, 0]) / (d @ n)).reshape(S, S)
    torch.testing.assert_close(frags.depth[0], t, rtol=1e-9, atol=0)


def test_barycentrics_reproduce_the_3d_hit_point_on_the_pixel_ray():
    B, S = 2, 48
    verts, faces = triangle_soup(B, 100, seed=3)
    K = intrinsics(B, S, 60.0)
    frags = rasterize(verts, faces, K, S, S)
    X = frags.interpolate(verts, faces)  # [B, H, W, 3] sum_k b_k X_k
    m = frags.mask
    torch.testing.assert_close(X[..., 2][m], frags.depth[m], rtol=1e-5, atol=0)
    proj = X @ K[:, None].transpose(-1, -2)  # [B, H, W, 3]
    uv = proj[..., :2] / proj[..., 2:]
    i, j = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    centre = torch.stack([j, i], -1).float() + 0.5
    assert (uv - centre).norm(dim=-1)[m].max() < 1e-3
    torch.testing.assert_close(frags.bary.sum(-1)[m], torch.ones(int(m.sum())), rtol=0, atol=1e-5)
    assert frags.bary[m].min() > -1e-5
    assert (frags.bary[~m] == 0).all() and (X[~m] == 0).all()


def test_off_screen_mesh_gives_an_empty_buffer():
    verts, faces = noisy_spheres(2, seed=4)
    verts = verts + torch.tensor([100.0, 0.0, 0.0])
    frags = rasterize(verts, faces, intrinsics(2, 32, 40.0), 32, 32)
    assert not frags.mask.any()
    assert (frags.face_idx == -1).all() and (frags.depth == 0).all() and (frags.bary == 0).all()
    assert frags.depth.shape == (2, 32, 32) and frags.bary.shape == (2, 32, 32, 3)


def test_faces_crossing_the_near_plane_are_culled_and_a_mesh_behind_is_an_error():
    S = 32
    K = intrinsics(1, S, 30.0)
    front = [[-1.0, -1.0, 2.0], [1.0, -1.0, 2.0], [0.0, 1.0, 2.0]]
    straddle = [[-1.0, -1.0, -0.5], [1.0, -1.0, 1.0], [0.0, 1.0, 1.0]]
    verts = torch.tensor([front + straddle])
    frags = rasterize(verts, torch.tensor([[0, 1, 2], [3, 4, 5]]), K, S, S)
    fid, _ = brute_force(verts[:, :3], torch.tensor([[0, 1, 2]]), K, S, S)
    assert (frags.face_idx == fid).all()  # as if the straddling face did not exist
    behind = verts.clone()
    behind[..., 2] = -1.0
    with pytest.raises(ValueError, match="behind the camera"):
        rasterize(behind, torch.tensor([[0, 1, 2], [3, 4, 5]]), K, S, S)
    with pytest.raises(ValueError, match="batch element 1"):
        rasterize(torch.cat([verts, behind]), torch.tensor([[0, 1, 2]]), K.expand(2, 3, 3), S, S)


def test_degenerate_faces_are_skipped():
    S = 32
    K = intrinsics(1, S, 30.0)
    verts = torch.tensor([[[-1.0, -1.0, 2.0], [1.0, -1.0, 2.0], [0.0, 1.0, 2.0], [-1.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5], [3, 3, 4], [0, 0, 0]])  # collinear, repeated, a point
    frags = rasterize(verts, faces, K, S, S)
    fid, _ = brute_force(verts, faces[:1], K, S, S)
    assert (frags.face_idx == fid).all()


def test_bad_input_gets_one_clear_error():
    verts, faces = noisy_spheres(1, seed=5)
    K = intrinsics(1, 32, 40.0)
    bad = verts.clone()
    bad[0, 7, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        rasterize(bad, faces, K, 32, 32)
    with pytest.raises(ValueError, match="face indices"):
        rasterize(verts, faces + 1, K, 32, 32)
    with pytest.raises(ValueError, match=r"verts_cam must be \[B, V, 3\]"):
        rasterize(verts[0], faces, K, 32, 32)
    with pytest.raises(ValueError, match="K must be"):
        rasterize(verts, faces, K[:, :2], 32, 32)
    with pytest.raises(ValueError, match="integer"):
        rasterize(verts, faces.float(), K, 32, 32)
    empty = rasterize(verts, faces[:0], K, 32, 32)
    assert not empty.mask.any()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_brute_force():
    B, S = 2, 48
    verts, faces = triangle_soup(B, 150, seed=6)
    K = intrinsics(B, S, 60.0)
    frags = rasterize(verts.cuda(), faces.cuda(), K.cuda(), S, S)
    assert frags.depth.device.type == "cuda"
    fid, _ = brute_force(verts, faces, K, S, S)
    covered = (fid >= 0) | frags.mask.cpu()
    assert (frags.face_idx.cpu() == fid)[covered].double().mean() >= 0.995


def test_bench_covers_the_projected_area_of_its_ellipsoid():
    from omg_lite.bench.zbuffer import ZBufferBench
    from omg_lite.config import CameraConfig

    row = ZBufferBench(faces=2000, size=128, repeat=1).run()[0]
    cam = CameraConfig()
    f = 0.5 * 128 / math.tan(math.radians(cam.fov_deg) / 2)
    area = math.pi * (0.08 * f / cam.distance) * (0.115 * f / cam.distance)  # silhouette ~ ellipse of semi-axes a f / d, b f / d
    assert abs(row["pixels_covered"] - area) < 0.03 * area
    assert row["faces"] >= 1800 and row["ms"] > 0
