"""Hair that moves with the head: the shoulder-branch Gaussians above the neck joint follow it rigidly.

Independent truths: a rigid rotation about the posed neck joint written with scipy's Rotation
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
    s, head = avatar.gaussians.shoulders, avatar.net.head
    neck_y = head(avatar.source.params).joints[0, NECK, 1]
    on, torso = s.attached[0], s.valid[0] & ~s.attached[0]
    assert on.any() and torso.any()
    assert (s.means[0][on][:, 1] > neck_y).all()
    x = avatar.net.head(avatar.source.params).vertices[0][~head.regions["neck"], 0]
    beside = (s.means[0][:, 0] - (x.max() + x.min()) / 2).abs() <= 1.3 * (x.max() - x.min()) / 2
    assert torch.equal(on, s.valid[0] & (s.means[0][:, 1] > neck_y) & beside)  # above the neck joint, beside the head


def test_hair_turns_rigidly_with_the_head_and_the_torso_stays(avatar):
    model, gs, src = avatar.net.model, avatar.gaussians, avatar.source.params
    s = gs.shoulders
    means, quats = model._moved_shoulders(gs, src, 1)  # the source's own pose: nothing moves
    torch.testing.assert_close(means, s.means, atol=1e-5, rtol=0)

    drv = _turned(src, 30.0)
    means, quats = model._moved_shoulders(gs, drv, 1)
    on = s.attached[0]
    J = avatar.net.head(src).joints[0, NECK].double()  # the neck joint does not move when only the neck turns
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
