"""Hair that moves with the head: the shoulder-branch Gaussians that grow from the scalp follow it rigidly.

Independent truths: the synthetic world's hair and torso masks (``synth.hair``) for the split rule,
a planted collar beside the chin that the rule must leave with the torso, a planted island beside the
cheek that it must attach, a rigid rotation about the posed neck joint written with scipy's Rotation
(p_d = J + R_rel (p_s - J), R_rel = R_root R_neck,d (R_root R_neck,s)^T for a driver that turns the
neck only), the same rotation applied to the Gaussians' own rotation matrices, scipy's
quaternion of random rotations, and the torso staying where it was reconstructed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from omg_lite.avatar import DATA_SAMPLES, Avatar, AvatarModel
from omg_lite.evaluate import read_clip
from omg_lite.head.params import HeadParams
from omg_lite.model.omg import NECK, quat_mul, rotmat_to_quat
from omg_lite.splat.project import quat_to_rotmat


@pytest.fixture(scope="module")
def avatar() -> Avatar:
    net = AvatarModel.untrained("smoke", device="cpu")
    clip = read_clip(DATA_SAMPLES / "synth_256" / "id000", net.image_size)
    mask = clip.mask[0, 0].clone()
    mask[: net.image_size // 3] = 1  # "hair": portrait pixels around the top of the head, outside the head mesh
    return Avatar.from_frame(clip.rgb[0], clip.params[0:1], clip.camera[0:1], mask, net=net)


def _turned(p: HeadParams, yaw_deg: float) -> HeadParams:
    pose = p.pose.clone()
    neck = Rotation.from_euler("Y", yaw_deg, degrees=True) * Rotation.from_rotvec(pose[0, 3:6].numpy())
    pose[0, 3:6] = torch.as_tensor(neck.as_rotvec(), dtype=pose.dtype)
    return HeadParams(p.shape, p.expression, pose, p.translation)


def test_rotmat_to_quat_matches_scipy():
    R = Rotation.random(64, random_state=0)
    q = rotmat_to_quat(torch.as_tensor(R.as_matrix(), dtype=torch.float64))
    want = torch.as_tensor(np.roll(R.as_quat(), 1, axis=1))  # scipy (x, y, z, w) -> (w, x, y, z)
    want = want * torch.where(want[:, :1] < 0, -1.0, 1.0)
    torch.testing.assert_close(q, want)
    a, b = Rotation.random(8, random_state=1), Rotation.random(8, random_state=2)
    ab = quat_mul(*(torch.as_tensor(np.roll(r.as_quat(), 1, axis=1)) for r in (a, b)))
    torch.testing.assert_close(quat_to_rotmat(ab), torch.as_tensor((a * b).as_matrix()))


def test_attached_gaussians_are_above_the_neck_joint(avatar):
    s, head = avatar.gaussians.shoulders, avatar.net.head_model
    neck_y = head(avatar.source.params).joints[0, NECK, 1]
    on, torso = s.attached[0], s.valid[0] & ~s.attached[0]
    assert on.any() and torso.any()
    assert (s.means[0][on][:, 1] > neck_y).all()
    x = avatar.net.head_model(avatar.source.params).vertices[0][~head.regions["neck"], 0]
    beside = (s.means[0][:, 0] - (x.max() + x.min()) / 2).abs() <= 1.3 * (x.max() - x.min()) / 2
    candidates = s.valid[0] & (s.means[0][:, 1] > neck_y) & beside  # above the neck joint, beside the head
    assert not (on & ~candidates).any()
    top = head(avatar.source.params).vertices[0][:, 1].max()
    assert on[candidates & (s.means[0][:, 1] > (neck_y + top) / 2)].all()  # everything above the head's mid-height is hair


def test_hair_turns_rigidly_with_the_head_and_the_torso_stays(avatar):
    model, gs, src = avatar.net.model, avatar.gaussians, avatar.source.params
    s = gs.shoulders
    means, quats = model._moved_shoulders(gs, src, 1)  # the source's own pose: nothing moves
    torch.testing.assert_close(means, s.means, atol=1e-5, rtol=0)

    drv = _turned(src, 30.0)
    means, quats = model._moved_shoulders(gs, drv, 1)
    on = s.attached[0]
    J = avatar.net.head_model(src).joints[0, NECK].double()  # the neck joint does not move when only the neck turns
    root = Rotation.from_rotvec(src.pose[0, :3].numpy())
    R_rel = (root * Rotation.from_rotvec(drv.pose[0, 3:6].numpy()) * (root * Rotation.from_rotvec(src.pose[0, 3:6].numpy())).inv()).as_matrix()
    R_rel = torch.as_tensor(R_rel)
    want = J + (s.means[0][on].double() - J) @ R_rel.T
    torch.testing.assert_close(means[0][on].double(), want, atol=2e-5, rtol=0)
    assert (means[0][on] - s.means[0][on]).norm(dim=-1).max() > 0.01  # it really moved (metres)
    torch.testing.assert_close(quat_to_rotmat(quats[0][on]).double(), R_rel @ quat_to_rotmat(s.attributes.quats[0][on]).double(), atol=1e-5, rtol=0)
    assert torch.equal(means[0][~on], s.means[0][~on]) and torch.equal(quats[0][~on], s.attributes.quats[0][~on])


def test_render_uses_the_moved_hair(avatar, monkeypatch):
    import omg_lite.model.omg as omg_module

    seen = []
    real = omg_module.splat
    monkeypatch.setattr(omg_module, "splat", lambda *a, **k: seen.append([x.clone() for x in a[:2]]) or real(*a, **k))
    drv = _turned(avatar.source.params, -25.0)
    avatar.render(drv, lod=0)
    means, quats = avatar.net.model._moved_shoulders(avatar.gaussians, drv, 1)
    n = avatar.gaussians.num_head(0)
    assert torch.equal(seen[0][0][:, n:], means) and torch.equal(seen[0][1][:, n:], quats)


def test_shoulder_variants_clear_the_split_or_show_the_hair_alone(avatar, monkeypatch):
    import omg_lite.model.omg as omg_module

    gs, s = avatar.gaussians, avatar.gaussians.shoulders
    alone = gs.shoulder_variant(static=False, alone=True)
    assert all(torch.equal(a.opacities, torch.zeros_like(a.opacities)) for a in alone.levels.values())
    assert torch.equal(alone.shoulders.attributes.opacities, torch.where(s.attached, s.attributes.opacities, 0.0))
    assert torch.equal(alone.shoulders.attached, s.attached)
    seen = []
    real = omg_module.splat
    monkeypatch.setattr(omg_module, "splat", lambda *a, **k: seen.append(a[0].clone()) or real(*a, **k))
    Avatar(avatar.net, gs.shoulder_variant(static=True), avatar.source).render(_turned(avatar.source.params, 30.0), lod=0)
    assert torch.equal(seen[0][:, gs.num_head(0):], s.means)  # the paper's static shoulders: the hair stays where it was


# ------------------------------------------------------------------ the split rule against the synthetic truth


@pytest.fixture(scope="module")
def hair_world(tmp_path_factory):
    from omg_lite.config import Config
    from omg_lite.synth import write_synth

    cfg = Config()
    cfg.synth.hair = True
    out = tmp_path_factory.mktemp("hair_world") / "set"
    write_synth(out, identities=3, frames=3, size=128, seed=11, cfg=cfg, progress=False)
    return out


def _split(head, item, portrait):
    """The rule's attached grid (full resolution) for one synthetic frame with the given portrait mask, and its M_s."""
    from omg_lite.geometry.camera import Camera
    from omg_lite.geometry.shoulders import collar_band, head_mask, shoulder_mask, shoulder_plane
    from omg_lite.geometry.zbuffer import rasterize
    from omg_lite.model.shoulder_branch import head_attached

    o = head(item["shape"][None], item["expression"][None], item["pose"][None], item["translation"][None])
    S = portrait.shape[0]
    cam = Camera(item["K"][None], item["R"][None], item["t"][None], S, S)
    frags = rasterize(cam.world_to_camera(o.vertices), head.faces, cam.K, S, S)
    M_s = shoulder_mask(portrait[None], head_mask(frags, collar_band(head.v_template, head.faces)))
    plane = shoulder_plane(M_s, cam, cam.world_to_camera(o.vertices)[..., 2].mean(1))
    x = o.vertices[0][~head.regions["neck"], 0]
    on = head_attached(plane.mask, plane.points, o.joints[:, NECK, 1], x[None], o.vertices[0][:, 1].max()[None])
    return on[0], M_s[0], plane, o


def test_the_split_attaches_the_true_hair_and_no_torso(hair_world):
    from omg_lite.synth import SynthDataset

    ds = SynthDataset(hair_world)
    head = AvatarModel.untrained("smoke", device="cpu").head_model
    hair_in, hair_on, torso_in, torso_on = 0, 0, 0, 0
    for k in range(len(ds)):
        item = ds[k]
        on, M_s, _, _ = _split(head, item, item["mask"])
        hair_in += int((M_s & item["hair_mask"]).sum())
        hair_on += int((on & item["hair_mask"]).sum())
        torso_in += int((M_s & item["torso_mask"]).sum())
        torso_on += int((on & item["torso_mask"]).sum())
    assert hair_in > 500 and torso_in > 5000
    assert hair_on / hair_in > 0.97  # the hair moves with the head
    assert torso_on == 0  # the torso stays


def _frame_geometry(hair_world):
    """Frame 0 of the hair world: its item, head model, plane grid (y, x), neck height, the head's centre / half-width / top."""
    from omg_lite.synth import SynthDataset

    head = AvatarModel.untrained("smoke", device="cpu").head_model
    item = SynthDataset(hair_world)[0]
    _, _, plane, o = _split(head, item, item["mask"])
    y, x = plane.points[0, ..., 1], plane.points[0, ..., 0]
    hx = o.vertices[0][~head.regions["neck"], 0]
    centre, half = float(hx.max() + hx.min()) / 2, float(hx.max() - hx.min()) / 2
    return item, head, y, x, float(o.joints[0, NECK, 1]), centre, half, float(o.vertices[0][:, 1].max())


def _component_of(M_s, planted):  # -> [h, w] bool: the 8-connected component(s) of M_s that the planted pixels lie in
    from scipy import ndimage

    labels, _ = ndimage.label(M_s.numpy(), structure=np.ones((3, 3), bool))
    hit = np.unique(labels[planted.numpy()])
    return torch.from_numpy(np.isin(labels, hit[hit > 0]))


def test_a_collar_beside_the_chin_stays_with_the_torso(hair_world):
    """A suit collar rising from the torso to beside the chin, above the neck joint (planted into the portrait mask):
    the old rule (above the neck joint and beside the head) attached it; the split leaves it, and still takes the hair."""
    item, head, y, x, neck_y, centre, half, _ = _frame_geometry(hair_world)
    collar = (y < neck_y + 0.02) & ((x - centre).abs() > 0.9 * half) & ((x - centre).abs() < 1.25 * half)  # down to the frame
    collar &= ~item["mask"]  # outside the person, beside the jaw
    on, M_s, _, _ = _split(head, item, item["mask"] | collar)
    planted = collar & M_s & (y > neck_y)  # the collar's part above the neck joint
    assert planted.sum() > 20 and not (planted & item["hair_mask"]).any()
    assert (_component_of(M_s, planted) & (y <= neck_y)).any()  # joined to the torso below the neck, as a collar is
    assert not on[planted].any()
    assert on[M_s & item["hair_mask"]].float().mean() > 0.97


def test_an_island_beside_the_cheek_moves_with_the_head(hair_world):
    """Portrait pixels beside the cheek that the head mesh misses (a face wider than the mesh; planted), cut off from
    the rest of M_s, below the head's mid-height: joined to neither the crown nor the torso, they are the head's."""
    item, head, y, x, neck_y, centre, half, top_y = _frame_geometry(hair_world)
    rise = top_y - neck_y
    island = (y > neck_y + 0.15 * rise) & (y < neck_y + 0.35 * rise) & ((x - centre).abs() > 1.0 * half) & ((x - centre).abs() < 1.2 * half)
    island &= ~item["mask"]
    on, M_s, _, _ = _split(head, item, item["mask"] | island)
    planted = island & M_s
    assert planted.sum() > 20
    assert torch.equal(_component_of(M_s, planted), planted)  # an island: touches no hair, no torso
    assert on[planted].all()
    assert on[M_s & item["hair_mask"]].float().mean() > 0.97
    assert not on[M_s & item["torso_mask"]].any()
