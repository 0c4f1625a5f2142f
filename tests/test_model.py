"""The OMG model against independent truths: torch's own multi-head attention, a brute-force
skinning loop, the analytic visibility of a convex sphere, hand-counted shoulder pixels, the
attribute tensors themselves across drivers, and an overfitting run that must reach 30 dB.

Most tests run on a tiny head: an icosphere with FLAME's five joints (162 -> 642 -> 2562
vertices over the levels), so that the whole model runs in milliseconds; one test runs the
shipped stand-in head end to end.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial.transform import Rotation

from omg_lite.config import ModelConfig, preset
from omg_lite.features.encoder import EncoderOutput
from omg_lite.geometry.camera import Camera
from omg_lite.geometry.visibility import DepthBuffer
from omg_lite.head import HeadModel, HeadParams
from omg_lite.model import OMGModel, posed_offsets
from omg_lite.model import omg as omg_module
from omg_lite.model.global_branch import CrossAttention

SIZE = 32  # rendered image side
LOCAL = 16  # side of the local feature map
TOKENS = 9
PARENTS = [-1, 0, 1, 1, 1]


def tiny_head(seed: int = 0) -> HeadModel:
    """An icosphere head (radius 0.1 m) with smooth blendshapes and five skinned joints."""
    g = np.random.default_rng(seed)
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.1)
    v = np.asarray(sphere.vertices)
    V = len(v)
    basis = np.stack([v[:, 0], v[:, 1], v[:, 2], v[:, 0] * v[:, 1] * 50, v[:, 1] ** 2 * 50], 1)  # [V, 5] smooth fields
    shapedirs = np.einsum("vl,lcs->vcs", basis, g.normal(0, 0.02, (5, 3, 4)))
    exprdirs = np.einsum("vl,lce->vce", basis, g.normal(0, 0.02, (5, 3, 3)))
    low, front = v[:, 1] < -0.03, v[:, 2] > 0.05
    weights = np.zeros((V, 5))
    weights[:, 0] = np.where(low, 0.7, 0.1)  # root
    weights[:, 1] = np.where(low, 0.3, 0.9)  # neck
    weights[low & front, 2] = 0.6  # jaw
    weights[(v[:, 0] > 0.04) & front, 3] = 0.3  # eyes
    weights[(v[:, 0] < -0.04) & front, 4] = 0.3
    weights /= weights.sum(1, keepdims=True)
    J_reg = np.zeros((5, V))
    for j, idx in enumerate([np.argsort(v[:, 1])[:10], np.argsort(v[:, 1])[10:20], np.argsort(-v[:, 2])[:5], np.argsort(-v[:, 0])[:5], np.argsort(v[:, 0])[:5]]):
        J_reg[j, idx] = 1 / len(idx)
    return HeadModel(v, np.asarray(sphere.faces), shapedirs, exprdirs, J_reg, weights, np.array(PARENTS))


def tiny_cfg(**kw) -> ModelConfig:
    base = dict(token_dim=24, local_dim=12, dim=16, layers=1, attention_heads=2, mlp_ratio=2, levels=2, channels=8, head_hidden=16,
                refiner_width=8, refiner_depth=1)
    return ModelConfig(**{**base, **kw})


def camera(B: int = 1, size: int = SIZE) -> Camera:
    return Camera.frontal(B, size, fov_deg=18.0, distance=1.6)


def inputs(B: int = 1, seed: int = 0, size: int = SIZE):
    """(encoder output, source params, camera, portrait mask): the mask is the bottom quarter."""
    g = torch.Generator().manual_seed(seed)
    enc = EncoderOutput(torch.randn(B, TOKENS, 24, generator=g), torch.randn(B, 24, generator=g), torch.randn(B, 12, LOCAL, LOCAL, generator=g))
    src = HeadParams(0.5 * torch.randn(B, 4, generator=g), 0.5 * torch.randn(B, 3, generator=g), 0.05 * torch.randn(B, 15, generator=g), torch.zeros(B, 3))
    mask = torch.zeros(B, 1, size, size)
    mask[..., 3 * size // 4 :, :] = 1
    return enc, src, camera(B, size), mask


def driver(B: int = 1, seed: int = 1) -> HeadParams:
    g = torch.Generator().manual_seed(seed)
    return HeadParams(torch.zeros(B, 4), torch.randn(B, 3, generator=g), 0.2 * torch.randn(B, 15, generator=g), 0.01 * torch.randn(B, 3, generator=g))


@pytest.fixture(scope="module")
def head() -> HeadModel:
    return tiny_head()


def model_for(head, **kw) -> OMGModel:
    torch.manual_seed(0)
    return OMGModel(tiny_cfg(**kw), head)


# ---------------------------------------------------------------------------------------------- parts


def test_cross_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    D, h = 16, 4
    ours = CrossAttention(D, h)
    ref = torch.nn.MultiheadAttention(D, h, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q.weight, ours.kv.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q.bias, ours.kv.bias]))
        ref.out_proj.weight.copy_(ours.out.weight)
        ref.out_proj.bias.copy_(ours.out.bias)
    x, m = torch.randn(2, 7, D), torch.randn(2, 5, D)
    torch.testing.assert_close(ours(x, m), ref(x, m, m, need_weights=False)[0], atol=1e-5, rtol=1e-5)


def _chain_rotations(pose: np.ndarray) -> list[np.ndarray]:
    """World rotation of each joint, composed parent-first with scipy."""
    G: list[np.ndarray] = []
    for j, p in enumerate(PARENTS):
        R = Rotation.from_rotvec(pose[3 * j : 3 * j + 3]).as_matrix()
        G.append(R if p < 0 else G[p] @ R)
    return G


def test_posed_offsets_match_brute_force_skinning():
    head = tiny_head().double()
    g = torch.Generator().manual_seed(3)
    pose = 0.4 * torch.randn(2, 15, generator=g, dtype=torch.float64)
    o = torch.randn(2, head.num_vertices, 3, generator=g, dtype=torch.float64)
    ours = posed_offsets(head, pose, o)
    W = head.weights.numpy()
    for b in range(2):
        G = _chain_rotations(pose[b].numpy())
        for i in range(0, head.num_vertices, 7):
            want = sum(W[i, j] * G[j] for j in range(5)) @ o[b, i].numpy()
            np.testing.assert_allclose(ours[b, i].numpy(), want, atol=1e-10)


def test_offsets_are_added_before_skinning(head):
    """Under a pure root rotation every vertex turns rigidly: LBS(T + o) = R (T + o) + t."""
    model = model_for(head)
    shape, expr = torch.randn(1, 4), torch.randn(1, 3)
    pose = torch.zeros(1, 15)
    pose[0, :3] = torch.tensor([0.3, -0.5, 0.2])
    t = torch.tensor([[0.01, 0.02, -0.03]])
    o = 0.01 * torch.randn(1, head.num_vertices, 3)
    got = model._vertices(HeadParams(shape, expr, pose, t), o)[0]
    canonical = head(shape, expr, torch.zeros(1, 15), torch.zeros(1, 3)).vertices + o
    R = torch.as_tensor(Rotation.from_rotvec(pose[0, :3].numpy()).as_matrix(), dtype=torch.float32)
    J0 = head(shape, expr).joints[:, 0]  # the root joint, the centre of the rotation
    want = (canonical - J0) @ R.T + J0 + t
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- shapes


def test_shapes_at_each_level(head):
    model = model_for(head)
    enc, src, cam, mask = inputs(B=2)
    mask[1, ..., : SIZE - 4, :] = 0  # the second portrait has a thinner shoulder band
    for lod in range(3):
        gs = model.reconstruct(enc, src, cam, mask, lod)
        assert sorted(gs.levels) == list(range(lod + 1))
        for k, a in gs.levels.items():
            V = model.sub.num_vertices[k]
            assert V == [162, 642, 2562][k]
            assert a.features.shape == (2, V, 8) and a.opacities.shape == (2, V)
            assert a.scales.shape == (2, V, 3) and a.quats.shape == (2, V, 4)
            assert gs.source_means[k].shape == (2, V, 3)
        assert gs.offsets.shape == (2, 162, 3)
        # Shoulder pixels on the 16 x 16 plane: rows 12..15 of element 0 (64 pixels), the bottom
        # 4 image rows = 2 plane rows of element 1 (32 pixels); the head projects above row 24.
        assert gs.num_shoulder == 64
        assert gs.shoulders.valid.sum(1).tolist() == [64, 32]
        assert bool((gs.shoulders.attributes.opacities[1, 32:] == 0).all())
        assert model.head_positions(gs, driver(2)).shape == (2, model.sub.num_vertices[lod], 3)
        out = model.render(gs, driver(2), cam)
        assert out.feature_image.shape == (2, 8, SIZE, SIZE)
        assert out.coarse.shape == out.refined.shape == (2, 3, SIZE, SIZE)
        assert out.alpha.shape == (2, 1, SIZE, SIZE)
        torch.testing.assert_close(out.coarse, out.feature_image[:, :3])


def test_an_empty_shoulder_mask_gives_no_shoulder_gaussians(head):
    model = model_for(head)
    enc, src, cam, mask = inputs()
    with torch.no_grad():
        gs = model.reconstruct(enc, src, cam, torch.zeros_like(mask), 1)
        out = model.render(gs, driver(), cam)
    assert gs.num_shoulder == 0 and out.refined.shape == (1, 3, SIZE, SIZE)


def test_head_projects_above_the_shoulder_band(head):
    """The premise of the shoulder count above, checked with the camera directly."""
    model = model_for(head)
    enc, src, cam, mask = inputs(B=2)
    with torch.no_grad():
        gs = model.reconstruct(enc, src, cam, mask, 2)
    uv, _ = cam.project_world(gs.source_means[2])
    assert float(uv[..., 1].max()) < 3 * SIZE / 4  # the band starts at image row 24


def test_shoulder_points_lie_on_the_image_plane_through_their_pixels(head):
    model = model_for(head)
    enc, src, cam, mask = inputs()
    with torch.no_grad():
        gs = model.reconstruct(enc, src, cam, mask, 0)
        z_plane = cam.world_to_camera(model._vertices(src, gs.offsets)[0])[0, :, 2].mean()
    x = cam.world_to_camera(gs.shoulders.means)[0]  # [N_s, 3] camera space
    # Plane pixels of rows 12..15 (16 x 16 plane over a 32 x 32 image) in raster order: the ray
    # through the image point ((j + 0.5) 2, (i + 0.5) 2) meets the plane z = z_p at z_p K^-1 (u, v, 1).
    i, j = np.divmod(np.arange(64), 16)
    u, v = (j + 0.5) * 2, (i + 12 + 0.5) * 2
    f, c = float(cam.K[0, 0, 0]), SIZE / 2
    want_xy = np.stack([(u - c) / f, (v - c) / f], -1) * float(z_plane)
    # p_s = p^_s + O_s n_s moves along the optical axis only: x, y stay, z = z_p - O_s with |O_s| <= delta_s
    np.testing.assert_allclose(x[:, :2].numpy(), want_xy, atol=1e-5)
    assert float((x[:, 2] - z_plane).abs().max()) <= model.cfg.shoulder_offset + 1e-6
    assert float((x[:, 2] - z_plane).abs().max()) > 0


# ---------------------------------------------------------------------------------------------- training signal


def test_every_trainable_parameter_gets_a_gradient(head):
    model = model_for(head)
    enc, src, cam, mask = inputs(B=2)
    loss = 0
    for lod in range(3):
        out = model(enc, src, driver(2), cam, cam, mask, lod)
        loss = loss + out.refined.square().mean() + out.coarse.square().mean() + out.offsets.norm(dim=-1).mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not bool(p.grad.abs().sum() > 0))]
    assert not missing, f"parameters without a gradient: {missing}"


def _psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (x - y).square().mean()))


def _overfit(model, forward, target: torch.Tensor, steps: int = 300) -> tuple[float, int]:
    """Adam on L2(I_r) + L2(I_c) against ``target`` until I_r reaches 30 dB -> (best PSNR, steps run)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    best = 0.0
    for step in range(1, steps + 1):
        out = forward()
        loss = (out.refined - target).square().mean() + (out.coarse - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        best = max(best, _psnr(out.refined.detach(), target))
        if best >= 30:
            break
    return best, step


def test_overfits_one_pair_to_30_db(head):
    """A smoke-size model reproduces one driving image (a smooth coloured head on white) from one source."""
    S = 48
    model = model_for(head, levels=1)
    enc, src, cam, mask = inputs(size=S)
    drv = driver(seed=4)
    # The target: a disc where the driver's head projects (radius 0.1 m at 1.6 m), a colour ramp
    # inside, white (the background) around it.
    i, j = torch.meshgrid(torch.arange(float(S)), torch.arange(float(S)), indexing="ij")
    centre, _ = cam.project_world(head(src.shape, drv.expression, drv.pose, drv.translation).vertices.mean(1, keepdim=True))
    r = ((j + 0.5 - centre[0, 0, 0]) ** 2 + (i + 0.5 - centre[0, 0, 1]) ** 2).sqrt()
    disc = (r < 0.1 / 1.6 * float(cam.K[0, 0, 0])).float()
    colour = torch.stack([0.8 - 0.5 * i / S, 0.3 + 0.5 * j / S, 0.5 + 0.2 * torch.sin(6 * i / S)])
    target = (disc * colour + (1 - disc))[None]
    best, steps = _overfit(model, lambda: model(enc, src, drv, cam, cam, mask, 1), target)
    assert best >= 30, f"reached only {best:.1f} dB in {steps} steps"


@pytest.mark.slow
def test_overfits_a_synthetic_pair_with_the_standin_head_to_30_db(tmp_path):
    """The smoke preset on the shipped stand-in head: source frame 0 -> driving frame 1 of one synthetic clip."""
    from omg_lite.head import load_head_model
    from omg_lite.synth import load_frame, write_synth

    cfg, S = preset("smoke"), 64
    write_synth(tmp_path / "s", 1, 2, S, seed=3, cfg=cfg, progress=False)
    src_f, drv_f = (load_frame(tmp_path / "s", 0, k) for k in range(2))
    params = lambda f: HeadParams(f["shape"][None], f["expression"][None], f["pose"][None], f["translation"][None])  # noqa: E731
    view = lambda f: Camera(f["K"][None], f["R"][None], f["t"][None], S, S)  # noqa: E731
    head = load_head_model(None, cfg.head.n_shape, cfg.head.n_expr)
    torch.manual_seed(0)
    model = OMGModel(cfg.model, head)
    g = torch.Generator().manual_seed(0)
    C = cfg.model.token_dim
    enc = EncoderOutput(torch.randn(1, 16, C, generator=g), torch.randn(1, C, generator=g), torch.randn(1, cfg.model.local_dim, S, S, generator=g))
    target = (drv_f["rgb"] * drv_f["mask"] + cfg.model.background * ~drv_f["mask"])[None]
    best, steps = _overfit(model, lambda: model(enc, params(src_f), params(drv_f), view(src_f), view(drv_f), src_f["mask"][None, None].float(), 0), target)
    assert best >= 30, f"reached only {best:.1f} dB in {steps} steps"


# ---------------------------------------------------------------------------------------------- ablations


def _param_names(model) -> set[str]:
    return {n for n, _ in model.named_parameters()}


@pytest.mark.parametrize(
    "switch, removed",
    [
        ("use_global", ("global_branch.", "offset_head.", "hierarchy.psi.")),
        ("use_local", ("hierarchy.local.",)),
        ("use_refiner", ("refiner.",)),
        ("use_shoulder", ("shoulder.",)),
        ("use_visibility", ()),
    ],
)
def test_each_switch_removes_exactly_its_parameters(head, switch, removed):
    full, off = _param_names(model_for(head)), _param_names(model_for(head, **{switch: False}))
    assert off <= full
    gone = full - off
    assert all(any(n.startswith(p) for p in removed) for n in gone)
    assert all(any(n.startswith(p) for n in gone) for p in removed)


def _perturbed(enc: EncoderOutput, field: str) -> EncoderOutput:
    return dataclasses.replace(enc, **{field: getattr(enc, field) + torch.randn_like(getattr(enc, field))})


def test_no_global_ignores_the_tokens_and_has_no_offsets(head):
    model = model_for(head, use_global=False)
    enc, src, cam, mask = inputs()
    with torch.no_grad():
        a = model(enc, src, driver(), cam, cam, mask, 2)
        b = model(dataclasses.replace(_perturbed(enc, "tokens"), identity=torch.randn(1, 24)), src, driver(), cam, cam, mask, 2)
    assert torch.equal(a.refined, b.refined)
    assert not a.offsets.any()
    # ... while the full model reads them
    full = model_for(head)
    with torch.no_grad():
        assert not torch.equal(full(enc, src, driver(), cam, cam, mask, 2).refined, full(_perturbed(enc, "tokens"), src, driver(), cam, cam, mask, 2).refined)


def test_no_local_head_gaussians_ignore_the_local_map(head):
    enc, src, cam, mask = inputs()
    for switch in ({"use_local": False}, {"use_local": False, "use_shoulder": False}):
        model = model_for(head, **switch)
        with torch.no_grad():
            a, b = model.reconstruct(enc, src, cam, mask, 2), model.reconstruct(_perturbed(enc, "local"), src, cam, mask, 2)
        for k in range(3):
            assert torch.equal(a.levels[k].features, b.levels[k].features)
            assert torch.equal(a.levels[k].scales, b.levels[k].scales)
        if not switch.get("use_shoulder", True):
            with torch.no_grad():
                assert torch.equal(model.render(a, driver(), cam).refined, model.render(b, driver(), cam).refined)
    full = model_for(head)
    with torch.no_grad():
        a, b = full.reconstruct(enc, src, cam, mask, 2), full.reconstruct(_perturbed(enc, "local"), src, cam, mask, 2)
    assert not torch.equal(a.levels[2].features, b.levels[2].features)


def test_no_refiner_gives_the_coarse_image(head):
    model = model_for(head, use_refiner=False)
    enc, src, cam, mask = inputs()
    out = model(enc, src, driver(), cam, cam, mask, 1)
    assert torch.equal(out.refined, out.coarse)
    full = model_for(head)(enc, src, driver(), cam, cam, mask, 1)
    assert not torch.equal(full.refined, full.coarse)


def test_no_shoulder_renders_the_head_gaussians_only(head, monkeypatch):
    seen = []
    real = omg_module.splat
    monkeypatch.setattr(omg_module, "splat", lambda *a, **k: seen.append(a[0].shape[1]) or real(*a, **k))
    enc, src, cam, mask = inputs()
    for lod in range(3):
        gs = model_for(head, use_shoulder=False).reconstruct(enc, src, cam, mask, lod)
        assert gs.shoulders is None and gs.num_shoulder == 0
        model_for(head, use_shoulder=False).render(gs, driver(), cam)
        assert seen[-1] == [162, 642, 2562][lod]


def test_visibility_mask_matches_the_analytic_sphere_and_the_switch_sets_it_to_one(head):
    """On a convex sphere a vertex is visible iff it faces the camera; M = 1 with the switch off.

    At 64 x 64 the sphere spans 25 pixels, fine enough for the z-buffer's depth test.
    """
    S = 64
    enc, src, cam, mask = inputs(size=S)
    zero = HeadParams.zeros(1, 4, 3)
    model = model_for(head, use_global=False)  # F_h = F_local * M exactly, no offsets: the mesh stays a sphere
    V0 = model._vertices(zero, torch.zeros(1, 162, 3))[0]
    depth = DepthBuffer(cam.world_to_camera(V0), head.faces, cam.K, S, S)
    for off in (False, True):
        m = model_for(head, use_global=False, use_visibility=not off)
        levels = m.hierarchy(m.sub, None, V0, enc.local, cam, depth, [0, 1, 2])
        for L in levels:
            centre = L.vertices[0].mean(0)
            n = torch.nn.functional.normalize(L.vertices[0] - centre, dim=-1)
            view = torch.nn.functional.normalize(cam.centre[0] - L.vertices[0], dim=-1)
            cos = (n * view).sum(-1)
            # Away from the silhouette: finer levels lie on the level-0 facets (up to ~10 deg off
            # the sphere's normal on this 162-vertex icosphere), so keep a margin of cos 0.3.
            clear = cos.abs() > 0.3
            if off:
                assert bool(L.visible.all())
            else:
                assert torch.equal(L.visible[0][clear], (cos > 0)[clear])
            zero_rows = (L.F_h[0].abs().sum(-1) == 0)
            assert torch.equal(zero_rows, ~L.visible[0])
    # the tolerance reaches the depth test: z <= 2 zhat holds for every vertex of this sphere
    loose = model_for(head, use_global=False, visibility_tol=1.0)
    assert all(bool(L.visible.all()) for L in loose.hierarchy(loose.sub, None, V0, enc.local, cam, depth, [0, 1, 2]))


# ---------------------------------------------------------------------------------------------- enactment and LOD


def test_animation_changes_only_positions(head, monkeypatch):
    model = model_for(head)
    enc, src, cam, mask = inputs()
    with torch.no_grad():
        gs = model.reconstruct(enc, src, cam, mask, 2)
    calls = []
    real = omg_module.splat
    monkeypatch.setattr(omg_module, "splat", lambda *a, **k: calls.append([x.clone() for x in a[:5]]) or real(*a, **k))
    monkeypatch.setattr(model.global_branch, "forward", lambda *a: pytest.fail("enactment ran the global branch"))
    with torch.no_grad():
        for seed in (1, 2):
            model.render(gs, driver(seed=seed), cam)
    (m1, q1, s1, o1, f1), (m2, q2, s2, o2, f2) = calls
    assert not torch.allclose(m1, m2)
    assert torch.equal(q1, q2) and torch.equal(s1, s2) and torch.equal(o1, o2) and torch.equal(f1, f2)
    a = gs.levels[2]
    assert torch.equal(f1[:, :2562], a.features) and torch.equal(o1[:, :2562], a.opacities)
    assert torch.equal(m1[:, 2562:], gs.shoulders.means) and torch.equal(m2[:, 2562:], gs.shoulders.means)


def test_head_positions_for_the_source_equal_the_reconstruction(head):
    model = model_for(head)
    enc, src, cam, mask = inputs(B=2)
    with torch.no_grad():
        gs = model.reconstruct(enc, src, cam, mask, 2)
        for k in range(3):
            torch.testing.assert_close(model.head_positions(gs, src, k), gs.source_means[k], atol=1e-6, rtol=0)


def test_lod_switch_uses_the_same_weights(head):
    model = model_for(head)
    enc, src, cam, mask = inputs()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        sets = [model.reconstruct(enc, src, cam, mask, lod) for lod in range(3)]
        outs = [model.render(sets[2], driver(), cam, lod) for lod in range(3)]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    for lod in range(3):  # level k's Gaussians do not depend on how far the hierarchy went
        for k in range(lod + 1):
            torch.testing.assert_close(sets[lod].levels[k].features, sets[2].levels[k].features)
    assert len({float(o.refined.sum()) for o in outs}) == 3
    single = model.reconstruct(enc, src, cam, mask, 1, keep_coarser=False)
    assert sorted(single.levels) == [1]
    with pytest.raises(ValueError, match="level of detail 0 was not reconstructed"):
        model.render(single, driver(), cam, 0)


def test_one_avatar_drives_a_batch_of_frames(head):
    model = model_for(head)
    enc, src, cam, mask = inputs()
    drv = driver(B=3)
    with torch.no_grad():
        gs = model.reconstruct(enc, src, cam, mask, 1)
        batch = model.render(gs, drv, cam)
        one = model.render(gs, drv[2], cam)
    assert batch.refined.shape == (3, 3, SIZE, SIZE)
    torch.testing.assert_close(batch.refined[2:], one.refined, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- the shipped head, presets, bad input


def test_standin_head_end_to_end_with_the_smoke_preset():
    from omg_lite.head import load_head_model

    cfg = preset("smoke")
    head = load_head_model(None, cfg.head.n_shape, cfg.head.n_expr)
    torch.manual_seed(0)
    model = OMGModel(cfg.model, head)
    B, S = 1, 64
    enc = EncoderOutput(torch.randn(B, 16, cfg.model.token_dim), torch.randn(B, cfg.model.token_dim), torch.randn(B, cfg.model.local_dim, 64, 64))
    src = head.zeros(B)
    cam = Camera.frontal(B, S, cfg.camera.fov_deg, cfg.camera.distance)
    mask = torch.zeros(B, 1, S, S)
    mask[..., 60:, :] = 1
    with torch.no_grad():
        gs = model.reconstruct(enc, src, cam, mask, 1)
        out = model.render(gs, src, cam)
    assert gs.num_head(0) == head.num_vertices and gs.num_head(1) == model.sub.num_vertices[1]
    assert float(cam.project_world(gs.source_means[0])[0][..., 1].max()) < 59  # the neck ends above the band
    assert gs.num_shoulder == 4 * 64
    assert float(out.alpha.max()) > 0.5 and torch.isfinite(out.refined).all()


@pytest.mark.parametrize("name", ["smoke", "lite", "paper"])
def test_presets_build_and_name_consistent_widths(name):
    cfg = preset(name)
    m = cfg.model
    local = m.token_dim if cfg.encoder.dense_head == "bilinear" else cfg.encoder.local_dim
    assert m.local_dim == local and m.token_dim == {"vit_small_patch14_dinov2": 384, "vit_base_patch14_dinov2": 768}[cfg.encoder.name]
    assert m.dim % m.attention_heads == 0
    if name != "smoke":
        assert m.channels == 32


def test_bad_input_gets_one_clear_error(head):
    model = model_for(head)
    enc, src, cam, mask = inputs()
    with pytest.raises(ValueError, match="model.token_dim"):
        model.reconstruct(dataclasses.replace(enc, tokens=torch.randn(1, TOKENS, 7)), src, cam, mask, 0)
    with pytest.raises(ValueError, match="model.local_dim"):
        model.reconstruct(dataclasses.replace(enc, local=torch.randn(1, 5, LOCAL, LOCAL)), src, cam, mask, 0)
    with pytest.raises(ValueError, match="lod must be an int in 0..2"):
        model.reconstruct(enc, src, cam, mask, 3)
    with pytest.raises(ValueError, match="portrait_mask must be"):
        model.reconstruct(enc, src, cam, mask[..., :-1], 0)
    with pytest.raises(ValueError, match="cannot both be off"):
        model_for(head, use_global=False, use_local=False)
    with pytest.raises(ValueError, match="divisible"):
        model_for(head, dim=15)
    gs = model.reconstruct(enc, src, cam, mask, 0)
    with pytest.raises(ValueError, match="2 avatars but the driver 3 frames"):
        model.head_positions(model.reconstruct(*inputs(B=2), 0), driver(B=3))
    with pytest.raises(ValueError, match="driving camera holds 2 views"):
        model.render(gs, driver(), camera(2))


def test_state_dict_holds_no_head_model_data_and_to_moves_the_head():
    head = tiny_head()
    model = OMGModel(tiny_cfg(), head)
    keys = model.state_dict().keys()
    assert not any(k.startswith("head.") or "v_template" in k or "shapedirs" in k for k in keys)
    assert "base_scale" not in keys and "background" not in keys
    # s_k: the mean edge length of the level-k template, about half the previous level's
    edges = trimesh.Trimesh(head.v_template.numpy(), head.faces.numpy(), process=False).edges_unique_length
    assert math.isclose(float(model.base_scale[0]), float(edges.mean()), rel_tol=1e-5)
    assert 0.4 < float(model.base_scale[2] / model.base_scale[1]) < 0.6
    model.double()
    assert head.v_template.dtype == torch.float64 and model.base_scale.dtype == torch.float64


# ---------------------------------------------------------------------------------------------- bench attention


def test_bench_attention_rejects_bad_options():
    from omg_lite.bench.attention import AttentionBench

    with pytest.raises(ValueError, match="--modes"):
        AttentionBench(modes="backward").run()
    with pytest.raises(ValueError, match="divisible"):
        AttentionBench(dim=30, heads=8).run()


@pytest.mark.slow
def test_bench_attention_runs_each_size_in_its_own_process(monkeypatch):
    import json
    import subprocess
    import sys

    from omg_lite.bench import attention as bench_attention

    children = []  # (config, the child's own reply)
    real_run = subprocess.run

    def run(cmd, **kw):
        done = real_run(cmd, **kw)
        children.append((cmd, json.loads(done.stdout.strip().splitlines()[-1])))
        return done

    monkeypatch.setattr(bench_attention.subprocess, "run", run)
    rows = bench_attention.AttentionBench(queries_low=64, queries_high=1024, dim=16, tokens=8, token_dim=16, layers=1, heads=2, mlp_ratio=2, repeat=1).run()
    assert all(cmd[:3] == [sys.executable, "-m", "omg_lite.bench.attention"] for cmd, _ in children)
    configs = [(json.loads(cmd[3])["mode"], json.loads(cmd[3])["queries"]) for cmd, _ in children]
    assert configs == [("inference", 64), ("inference", 1024), ("training", 64), ("training", 1024)]  # one interpreter each
    assert [r["mode"] for r in rows] == ["inference"] * 3 + ["training"] * 3
    for (_, reply), row in zip(children, [rows[0], rows[1], rows[3], rows[4]]):
        assert (row["ms"], row["peak_mb"]) == (reply["ms"], reply["peak_mb"])  # each row is its own child's figure
    assert rows[2]["theory"] == 16.0 and rows[2]["ms_ratio"] == pytest.approx(children[1][1]["ms"] / children[0][1]["ms"])


def _refiner_nchw(ref, F_r):
    """The refiner written out op by op on plain contiguous NCHW tensors (the layout-naive way)."""
    import torch.nn.functional as Fn

    def block(seq, x):
        return Fn.gelu(Fn.conv2d(Fn.gelu(Fn.conv2d(x, seq[0].weight, seq[0].bias, padding=1)), seq[2].weight, seq[2].bias, padding=1))

    H, W = F_r.shape[-2:]
    m = 2**ref.depth
    x = Fn.pad(F_r, (0, -W % m, 0, -H % m), mode="replicate")
    skips = []
    for i, seq in enumerate(ref.down):
        x = block(seq, x if i == 0 else Fn.avg_pool2d(x, 2))
        skips.append(x)
    skips.pop()
    for seq in ref.up:
        skip = skips.pop()
        x = block(seq, torch.cat([Fn.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1))
    return F_r[:, :3] + Fn.conv2d(x, ref.out.weight, ref.out.bias)[..., :H, :W]


@pytest.mark.parametrize("size", [(32, 32), (30, 37)])  # a multiple of 2^depth (no padding) and not
def test_refiner_layout_tricks_compute_the_plain_nchw_unet(size):
    from omg_lite.model.refiner import Refiner

    torch.manual_seed(0)
    ref = Refiner(channels=6, width=8, depth=2)
    for p in ref.parameters():  # trained-like weights, not the near-zero init of the last layer
        torch.nn.init.normal_(p, std=0.2)
    F_r = torch.randn(2, 6, *size, requires_grad=True)
    out = ref(F_r)
    assert out.shape == (2, 3, *size) and out.is_contiguous()
    F_plain = F_r.detach().clone().requires_grad_(True)
    expect = _refiner_nchw(ref, F_plain)
    torch.testing.assert_close(out, expect, rtol=1e-4, atol=1e-5 * expect.abs().max().item())  # float32 summation order
    g = torch.randn_like(out)
    (got_in, *got_w) = torch.autograd.grad(out, [F_r, *ref.parameters()], g)
    (exp_in, *exp_w) = torch.autograd.grad(expect, [F_plain, *ref.parameters()], g)
    torch.testing.assert_close(got_in, exp_in, rtol=1e-4, atol=1e-5 * exp_in.abs().max().item())
    for a, b in zip(got_w, exp_w):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


@pytest.mark.parametrize("fused", [True, False])  # oneDNN's fused conv + GELU, and the fallback without it
def test_refiner_rendering_path_computes_the_plain_nchw_unet(fused, monkeypatch):
    from omg_lite.model import refiner as refiner_module

    if fused and not refiner_module.FUSED_CONV_GELU:
        pytest.skip("this torch build has no oneDNN fused convolution (the fallback case below still runs)")
    monkeypatch.setattr(refiner_module, "FUSED_CONV_GELU", fused)
    torch.manual_seed(0)
    ref = refiner_module.Refiner(channels=6, width=8, depth=2)
    for p in ref.parameters():
        torch.nn.init.normal_(p, std=0.2)
    F_r = torch.randn(2, 6, 30, 37)
    with torch.no_grad():
        out = ref(F_r)
        expect = _refiner_nchw(ref, F_r)
    assert out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out, expect, rtol=1e-4, atol=1e-5 * expect.abs().max().item())


def test_refiner_low_precision_is_opt_in_for_rendering_only():
    from omg_lite.model.refiner import BF16_CPU, Refiner

    torch.manual_seed(0)
    ref = Refiner(channels=6, width=8, depth=2)
    for p in ref.parameters():
        torch.nn.init.normal_(p, std=0.2)
    F_r = torch.randn(1, 6, 32, 32)
    with torch.no_grad():
        expect = _refiner_nchw(ref, F_r)
        assert torch.equal(ref(F_r), ref(F_r)) and not ref.low_precision  # float32 unless asked
        ref.low_precision = True
        if BF16_CPU:
            low = ref(F_r)
        else:  # an AVX2-only CPU: oneDNN has no bfloat16 there, so the setting is ignored, with a warning
            with pytest.warns(RuntimeWarning, match="no bfloat16 units") as said:
                low = ref(F_r)
            assert said[0].filename == __file__  # the warning points at the caller's line, not torch's module.py
    assert low.dtype == torch.float32
    err = (low - expect).abs().max().item()
    if BF16_CPU:
        assert 0 < err < 0.02 * expect.abs().max().item()  # bfloat16 (8-bit mantissa) moved it, a little
    else:
        assert err <= 1e-5 * expect.abs().max().item()  # float32, as without the setting
    F_g = F_r.clone().requires_grad_(True)
    out = ref(F_g)  # with autograd (training) it stays float32 despite the setting
    torch.testing.assert_close(out, _refiner_nchw(ref, F_g), rtol=1e-4, atol=1e-5 * expect.abs().max().item())
