"""Tests of the head model (FLAME layer, FLAME file loader, offline stand-in).

Independent truths: rotations from scipy's Rotation, joints and blendshapes recomputed with
plain numpy algebra, FLAME's whole forward pass (pose correctives, kinematic chain, LBS) written
out in numpy for a model with non-zero pose correctives, mesh topology from trimesh, a FLAME-layout pickle written here (with a
fake chumpy class), and geometric facts about a head (sizes, axes, what is in front of what).
"""

from __future__ import annotations

import logging
import pickle
import sys
import types
from collections import Counter

import numpy as np
import pytest
import scipy.sparse
import torch
import trimesh
from scipy.spatial.transform import Rotation

from omg_lite.head import HeadModel, HeadParams, load_head_model

JAW, ROOT, NECK = 2, 0, 1


@pytest.fixture(scope="module")
def head() -> HeadModel:
    return HeadModel.standin(n_shape=20, n_expr=16).double()


def _params(head: HeadModel, B: int, seed: int, pose_scale: float = 0.0) -> HeadParams:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return HeadParams(r(B, head.n_shape), r(B, head.n_expr), pose_scale * r(B, 15), 0.05 * r(B, 3))


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


# ------------------------------------------------------------------------------ FLAME semantics


def test_zero_parameters_give_the_template_plus_translation(head):
    t = torch.tensor([[0.01, -0.02, 0.3]], dtype=torch.float64)
    p = head.zeros(1)
    out = head(p.shape, p.expression, p.pose, t)
    np.testing.assert_allclose(_np(out.vertices[0]), _np(head.v_template) + _np(t), atol=1e-8)


def test_jaw_rotation_moves_only_jaw_vertices_and_opens_the_mouth(head):
    p = head.zeros(1)
    closed = head(p)
    p.pose[0, 3 * JAW] = 0.25  # +x rotation opens the jaw
    opened = head(p)
    moved = np.linalg.norm(_np(opened.vertices[0] - closed.vertices[0]), axis=1) > 1e-9
    w_jaw = _np(head.weights[:, JAW])
    assert (w_jaw[moved] > 0).all() and moved[w_jaw > 1e-6].all()
    # Fully jaw-skinned vertices turn rigidly about the jaw joint (rotation from scipy).
    R = Rotation.from_rotvec([0.25, 0, 0]).as_matrix()
    J = _np(closed.joints[0, JAW])
    full = w_jaw > 1 - 1e-9
    expect = (_np(closed.vertices[0, full]) - J) @ R.T + J
    np.testing.assert_allclose(_np(opened.vertices[0, full]), expect, atol=1e-8)
    # Inner lips (iBUG 61-63 upper, 65-67 lower) move apart; the chin (8) goes down.
    gap = lambda lm: np.linalg.norm(_np(lm[0, 62] - lm[0, 66]))  # noqa: E731
    assert gap(closed.landmarks) < 0.002 and gap(opened.landmarks) > 0.015
    assert _np(opened.landmarks[0, 8, 1]) < _np(closed.landmarks[0, 8, 1]) - 0.01
    # Nothing above the upper lip moves (nose, eyes, brows landmarks).
    np.testing.assert_allclose(_np(opened.landmarks[0, 17:48]), _np(closed.landmarks[0, 17:48]), atol=1e-8)


def test_joints_equal_the_regressor_applied_to_the_shaped_mesh(head):
    p = _params(head, 3, seed=1)
    out = head(p.shape, p.expression, None, None)
    T, S, E = _np(head.v_template), _np(head.shapedirs), _np(head.exprdirs)
    Jreg = _np(head.J_regressor)
    for b in range(3):
        shaped = T.copy()
        for k in range(head.n_shape):
            shaped += float(p.shape[b, k]) * S[:, :, k]
        for k in range(head.n_expr):
            shaped += float(p.expression[b, k]) * E[:, :, k]
        np.testing.assert_allclose(_np(out.joints[b]), Jreg @ shaped, atol=1e-8)
        np.testing.assert_allclose(_np(out.vertices[b]), shaped, atol=1e-8)


def test_root_rotation_is_rigid_about_the_root_joint(head):
    p = _params(head, 1, seed=2)
    still = head(p.shape, p.expression, None, None)
    rotvec = np.array([0.3, -0.5, 0.2])
    pose = torch.zeros(1, 15, dtype=torch.float64)
    pose[0, :3] = torch.from_numpy(rotvec)
    turned = head(p.shape, p.expression, pose, None)
    R = Rotation.from_rotvec(rotvec).as_matrix()
    J0 = _np(still.joints[0, ROOT])
    np.testing.assert_allclose(_np(turned.vertices[0]), (_np(still.vertices[0]) - J0) @ R.T + J0, atol=1e-8)
    np.testing.assert_allclose(_np(turned.landmarks[0]), (_np(still.landmarks[0]) - J0) @ R.T + J0, atol=1e-8)


def test_neck_rotation_turns_the_head_about_the_neck_joint_and_leaves_the_neck_base(head):
    p = head.zeros(1)
    still = head(p)
    p.pose[0, 4] = 0.4  # yaw at the neck
    turned = head(p)
    w = _np(head.weights)
    head_only = w[:, NECK] + w[:, JAW] + w[:, 3] + w[:, 4] > 1 - 1e-9
    R = Rotation.from_rotvec([0, 0.4, 0]).as_matrix()
    J1 = _np(still.joints[0, NECK])
    np.testing.assert_allclose(_np(turned.vertices[0, head_only]), (_np(still.vertices[0, head_only]) - J1) @ R.T + J1, atol=1e-8)
    base = w[:, ROOT] > 1 - 1e-9
    assert base.sum() > 50
    np.testing.assert_allclose(_np(turned.vertices[0, base]), _np(still.vertices[0, base]), atol=1e-8)


def test_blendshapes_are_linear_under_a_fixed_pose(head):
    a, b = _params(head, 1, seed=3), _params(head, 1, seed=4)
    pose = _params(head, 1, seed=5, pose_scale=0.2).pose
    f = lambda s, e: _np(head(s, e, pose, None).vertices)  # noqa: E731
    z_s, z_e = torch.zeros_like(a.shape), torch.zeros_like(a.expression)
    lhs = f(a.shape + b.shape, a.expression + b.expression)
    rhs = f(a.shape, a.expression) + f(b.shape, b.expression) - f(z_s, z_e)
    np.testing.assert_allclose(lhs, rhs, atol=1e-8)


def _flame_numpy(T, S, E, P, Jreg, W, parents, beta, psi, theta, trans):
    """FLAME's forward pass for one sample, written out in numpy (Li et al. 2017, Eq. 1-4):
    T_P = T + B_S + B_E + B_P with B_P = P vec(R_k - I) over joints 1..4, J = R_J (T + B_S + B_E),
    G_k = G_parent(k) [R_k | J_k - J_parent(k)], v = sum_k w_k G_k [I | -J_k] [T_P; 1] + t."""
    shaped = T + S @ beta + E @ psi  # [V, 3]
    J = Jreg @ shaped  # [5, 3]
    R = [Rotation.from_rotvec(theta[3 * k : 3 * k + 3]).as_matrix() for k in range(5)]
    posed = shaped + P @ np.concatenate([(R[k] - np.eye(3)).ravel() for k in range(1, 5)])
    G = []
    for k in range(5):
        local = np.eye(4)
        local[:3, :3] = R[k]
        local[:3, 3] = J[k] - (J[parents[k]] if k > 0 else 0.0)
        G.append(local if k == 0 else G[parents[k]] @ local)
    homo = np.concatenate([posed, np.ones((len(posed), 1))], 1)  # [V, 4]
    verts = np.zeros_like(posed)
    for k in range(5):
        unrest = np.eye(4)
        unrest[:3, 3] = -J[k]
        verts += W[:, k : k + 1] * (homo @ (G[k] @ unrest).T)[:, :3]
    return verts + trans, np.stack([g[:3, 3] for g in G]) + trans


def _posedirs(V: int, seed: int) -> np.ndarray:
    """Pose correctives of FLAME's size (a few mm per radian): [V, 3, 36]."""
    return 0.004 * np.random.default_rng(seed).standard_normal((V, 3, 36))


@pytest.fixture(scope="module")
def posed_head(head) -> HeadModel:
    """The stand-in with non-zero pose correctives, as a FLAME file has them."""
    a = {k: _np(getattr(head, k)) for k in ("v_template", "faces", "shapedirs", "exprdirs", "J_regressor", "weights", "parents")}
    return HeadModel(**a, posedirs=_posedirs(head.num_vertices, seed=11)).double()


def _check_against_numpy(model: HeadModel, p: HeadParams) -> None:
    args = [_np(x) for x in (model.v_template, model.shapedirs, model.exprdirs, model.posedirs, model.J_regressor, model.weights)]
    T, S, E, P, Jreg, W = args
    parents = _np(model.parents).tolist()
    for out in (model(p), model(p.shape, p.expression, p.pose, p.translation)):
        for b in range(p.batch):
            v, j = _flame_numpy(T, S, E, P, Jreg, W, parents, _np(p.shape[b]), _np(p.expression[b]), _np(p.pose[b]), _np(p.translation[b]))
            np.testing.assert_allclose(_np(out.vertices[b]), v, atol=1e-9)
            np.testing.assert_allclose(_np(out.joints[b]), j, atol=1e-9)


def test_pose_correctives_and_the_kinematic_chain_match_flames_formulas_in_numpy(posed_head):
    p = _params(posed_head, 3, seed=6, pose_scale=0.3)  # every joint rotated at once (root, neck, jaw, both eyes)
    assert (p.pose.view(3, 5, 3).norm(dim=-1) > 0.05).all()
    corr = _np(posed_head.posedirs).reshape(-1, 36) @ np.concatenate(
        [(Rotation.from_rotvec(_np(p.pose[0, 3 * k : 3 * k + 3])).as_matrix() - np.eye(3)).ravel() for k in range(1, 5)])
    assert np.abs(corr).max() > 0.002  # the correctives move vertices by millimetres: a wrong input would show
    _check_against_numpy(posed_head, p)


def test_dtype_follows_the_module():
    h = HeadModel.standin(4, 4)
    assert h(h.zeros(1)).vertices.dtype == torch.float32
    h64 = h.to(torch.float64)
    out = h64(h64.zeros(2))
    assert out.vertices.dtype == torch.float64 and out.landmarks.shape == (2, 68, 3)
    assert h64.regions["lips"].dtype == torch.bool


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(shape=torch.zeros(2, 19)), "shape"),
        (dict(shape=torch.zeros(20)), "shape"),
        (dict(expression=torch.zeros(2, 3)), "expression"),
        (dict(pose=torch.zeros(2, 12)), "pose"),
        (dict(pose=torch.zeros(3, 15)), "pose"),
        (dict(translation=torch.zeros(2, 2)), "translation"),
        (dict(expression=torch.full((2, 16), float("nan"))), "NaN"),
        (dict(translation=torch.tensor([[0.0, 0.0, float("inf")]] * 2)), "Inf"),
        (dict(shape=np.zeros((2, 20))), "torch.Tensor"),
        (dict(pose=torch.zeros(2, 15, dtype=torch.long)), "floating"),
    ],
)
def test_bad_inputs_raise_one_clear_value_error(kwargs, needle):
    h = HeadModel.standin(20, 16)
    args = dict(shape=torch.zeros(2, 20), expression=None, pose=None, translation=None)
    args.update(kwargs)
    with pytest.raises(ValueError, match=needle):
        h(**args)


def test_asking_for_more_components_than_built_is_an_error():
    with pytest.raises(ValueError, match="n_shape=500"):
        HeadModel.standin(n_shape=500, n_expr=10)
    with pytest.raises(ValueError, match="n_expr=500"):
        HeadModel.standin(n_shape=10, n_expr=500)


def test_load_head_model_without_a_file_is_the_standin_and_says_so(caplog):
    with caplog.at_level(logging.INFO, logger="omg_lite"):
        h = load_head_model(None, n_shape=20, n_expr=16)
    assert h.source == "standin" and (h.n_shape, h.n_expr) == (20, 16)
    lines = [r.getMessage() for r in caplog.records if r.name == "omg_lite"]
    assert len(lines) == 1 and "stand-in" in lines[0] and "not FLAME" in lines[0]


# ------------------------------------------------------------------------------ the stand-in


def test_standin_mesh_is_a_manifold_with_one_open_boundary_at_the_neck(head):
    V, F = _np(head.v_template), _np(head.faces)
    assert 4500 <= len(V) <= 5500
    mesh = trimesh.Trimesh(V, F, process=False)
    uses = Counter(map(tuple, mesh.edges_sorted.tolist()))
    assert max(uses.values()) <= 2
    assert mesh.area_faces.min() > 1e-8
    assert len({tuple(sorted(f)) for f in F.tolist()}) == len(F) and (np.diff(np.sort(F, 1), axis=1) > 0).all()
    assert mesh.is_winding_consistent
    boundary = np.array([e for e, n in uses.items() if n == 1])
    bv = np.unique(boundary)
    assert np.allclose(V[bv, 1], V[:, 1].min(), atol=1e-6)  # one loop, at the very bottom
    # The loop closes: every boundary vertex has exactly two boundary edges.
    assert Counter(boundary.ravel().tolist()) == Counter({int(v): 2 for v in bv})


def test_standin_has_flames_size_and_axes(head):
    out = head(head.zeros(1))
    V, lm = _np(out.vertices[0]), _np(out.landmarks[0])
    skin = ~_np(head.regions["eyeballs"])
    crown = V[skin, 1].max()
    chin = lm[8, 1]
    width = np.ptp(V[skin & (V[:, 1] > 0.0), 0])
    assert 0.20 < crown - chin < 0.26 and 0.14 < width < 0.19
    assert lm[30, 2] == lm[:, 2].max()  # the nose tip is the front-most landmark: the face looks at +z
    assert lm[36:48, 1].min() > lm[48:68, 1].max()  # eyes above the mouth: +y is up
    assert lm[42:48, 0].min() > 0 > lm[36:42, 0].max()  # the subject's left eye at +x
    assert lm[17:27, 1].min() > lm[36:48, 1].max()  # brows above the eyes
    assert np.ptp(lm[0:17, 0]) > 0.1 and np.argmin(lm[0:17, 1]) == 8  # jaw contour, chin lowest


def test_standin_weights_regressor_and_regions(head):
    W, Jreg = _np(head.weights), _np(head.J_regressor)
    np.testing.assert_allclose(W.sum(1), 1.0, atol=1e-6)
    assert (W >= 0).all() and (Jreg >= 0).all()
    np.testing.assert_allclose(Jreg.sum(1), 1.0, atol=1e-6)
    assert ((Jreg > 0).sum(1) < 0.3 * head.num_vertices).all()  # sparse rows
    eyes = _np(head.regions["eyeballs"])
    assert (W[~eyes][:, 3:] == 0).all() and np.allclose(W[eyes][:, 3:].sum(1), 1.0)
    # No jaw weight above the upper lip: the nose, the eyes and the brows are out of reach.
    lm = _np(head(head.zeros(1)).landmarks[0])
    V = _np(head.v_template)
    assert (W[V[:, 1] > lm[51, 1] + 0.002, JAW] == 0).all()
    for name in ("scalp", "face", "neck", "lips", "eyeballs", "brows", "nose"):
        assert _np(head.regions[name]).sum() > 10, name
    assert not (_np(head.regions["scalp"]) & _np(head.regions["face"])).any()


def test_standin_components_are_smooth_and_of_sensible_size():
    h = HeadModel.standin(24, 20).double()
    assert len(h.shape_names) == 24 and len(h.expression_names) == 20 and len(set(h.shape_names)) == 24
    F, V = _np(h.faces), _np(h.v_template)
    for dirs, names in ((h.shapedirs, h.shape_names), (h.exprdirs, h.expression_names)):
        D = _np(dirs)
        for k, name in enumerate(names):
            mag = np.linalg.norm(D[:, :, k], axis=1)
            assert 0.002 < mag.max() < 0.0125, (name, mag.max())
            # Smooth: along every edge the field changes by at most ~2x the edge's length (a
            # step of a few mm across a 1-2 mm edge would fail).
            for i, j in ((0, 1), (1, 2), (2, 0)):
                dD = np.linalg.norm(D[F[:, i], :, k] - D[F[:, j], :, k], axis=1)
                dP = np.linalg.norm(V[F[:, i]] - V[F[:, j]], axis=1)
                assert (dD <= 2.5 * dP).all(), (name, (dD / dP).max())


@pytest.mark.parametrize(
    "name, ids, axis, sign",
    [
        ("smile", [48, 54], 1, +1),  # mouth corners go up
        ("mouth_frown", [48, 54], 1, -1),
        ("brows_up", list(range(17, 27)), 1, +1),
        ("brows_down", [21, 22], 1, -1),
        ("pucker", [51, 57], 2, +1),  # lips push forward
        ("lower_lip_down", [57], 1, -1),
    ],
)
def test_named_expressions_move_the_landmarks_their_names_say(head, name, ids, axis, sign):
    p = head.zeros(1)
    p.expression[0, head.expression_names.index(name)] = 1.0
    delta = _np(head(p).landmarks[0, ids, axis] - head(head.zeros(1)).landmarks[0, ids, axis])
    assert (sign * delta > 0.001).all(), delta


def test_editing_one_model_leaves_the_next_standin_untouched():
    a = HeadModel.standin(4, 4)
    a.v_template.zero_()
    a.faces.zero_()
    a.regions["lips"].fill_(True)
    b = HeadModel.standin(4, 4)
    assert b.v_template.abs().max() > 0.1 and b.faces.max() > 0 and not b.regions["lips"].all()


def _fit_sphere(P: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere through points [N, 3]: |p|^2 = 2 c.p + (r^2 - |c|^2)."""
    A = np.concatenate([2 * P, np.ones((len(P), 1))], 1)
    sol = np.linalg.lstsq(A, (P**2).sum(1), rcond=None)[0]
    c = sol[:3]
    return c, float(np.sqrt(sol[3] + c @ c))


def test_closing_the_eyes_covers_the_eyeballs(head):
    idx = head.expression_names.index("eyes_closed")
    p = head.zeros(1)
    p.expression[0, idx] = 1.0
    V0, V1 = _np(head(head.zeros(1)).vertices[0]), _np(head(p).vertices[0])
    eyes = _np(head.regions["eyeballs"])
    fits = [_fit_sphere(V0[eyes & (np.sign(V0[:, 0]) == side)]) for side in (1, -1)]
    centres, radius = np.stack([c for c, _ in fits]), fits[0][1]
    np.testing.assert_allclose(centres, _np(head(head.zeros(1)).joints[0, 3:]), atol=1e-6)  # eye joints at the centres
    opening = _np(head.regions["eye_openings"])
    for V, covered in ((V0, False), (V1, True)):
        # Skin vertices in front of an eyeball: is the skin in front of the ball's surface?
        for c in centres:
            r2 = ((V[:, :2] - c[:2]) ** 2).sum(1)
            over = opening & (r2 < (0.6 * radius) ** 2)
            ball_front = c[2] + np.sqrt(radius**2 - r2[over])
            assert over.sum() >= 3
            assert ((V[over, 2] > ball_front).all()) == covered


# ------------------------------------------------------------------------------ FLAME files


def _fake_chumpy_class():
    """A class that pickles as chumpy.ch.Ch with a chumpy-like state ({'x': array, ...})."""
    chumpy = types.ModuleType("chumpy")
    ch = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x, dtype=np.float64)
            self._dirty_vars = set()

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = "Ch"
    ch.Ch = Ch
    chumpy.ch = ch
    return chumpy, ch, Ch


def _write_flame_like(path, head: HeadModel, with_chumpy: bool = True, posedirs: np.ndarray | None = None) -> dict:
    S, E = _np(head.shapedirs), _np(head.exprdirs)
    V = head.num_vertices
    shapedirs = np.zeros((V, 3, 400))
    shapedirs[:, :, : S.shape[2]] = S
    shapedirs[:, :, 300 : 300 + E.shape[2]] = E
    data = {
        "v_template": _np(head.v_template),
        "f": _np(head.faces).astype(np.uint32),
        "shapedirs": shapedirs,
        "posedirs": np.zeros((V, 3, 36)) if posedirs is None else posedirs,
        "J_regressor": scipy.sparse.csc_matrix(_np(head.J_regressor)),
        "weights": _np(head.weights),
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "bs_style": "lbs",
    }
    if with_chumpy:
        chumpy, ch, Ch = _fake_chumpy_class()
        sys.modules["chumpy"], sys.modules["chumpy.ch"] = chumpy, ch
        try:
            data["shapedirs"] = Ch(shapedirs)
            data["v_template"] = Ch(data["v_template"])
            with open(path, "wb") as fh:
                pickle.dump(data, fh, protocol=2)
        finally:
            del sys.modules["chumpy"], sys.modules["chumpy.ch"]
    else:
        with open(path, "wb") as fh:
            pickle.dump(data, fh, protocol=2)
    return data


def test_flame_layout_round_trip_gives_identical_vertices(tmp_path, head):
    path = tmp_path / "generic_model.pkl"
    _write_flame_like(path, head)
    assert "chumpy" not in sys.modules
    lmk = tmp_path / "landmark_embedding.npy"
    np.save(lmk, {"full_lmk_faces_idx": _np(head.lmk_faces_idx)[None], "full_lmk_bary_coords": _np(head.lmk_bary_coords)[None]}, allow_pickle=True)
    flame = HeadModel.from_flame(path, n_shape=20, n_expr=16, landmark_path=lmk).double()
    assert flame.source == "flame:generic_model.pkl" and flame.posedirs is not None
    p = _params(head, 2, seed=7, pose_scale=0.2)
    a, b = head(p), flame(p)
    np.testing.assert_array_equal(_np(a.vertices), _np(b.vertices))
    np.testing.assert_array_equal(_np(a.landmarks), _np(b.landmarks))
    for name in ("scalp", "face", "eyeballs"):
        assert _np(flame.regions[name]).sum() > 10


def test_a_flame_file_with_pose_correctives_matches_flames_formulas_in_numpy(tmp_path, head):
    path = tmp_path / "generic_model.pkl"
    _write_flame_like(path, head, with_chumpy=False, posedirs=_posedirs(head.num_vertices, seed=12))
    flame = HeadModel.from_flame(path, n_shape=20, n_expr=16).double()
    assert np.abs(_np(flame.posedirs)).max() > 0
    _check_against_numpy(flame, _params(flame, 2, seed=13, pose_scale=0.3))


def test_flame_static_embedding_gives_the_51_inner_landmarks(tmp_path, head):
    path = tmp_path / "generic_model.pkl"
    _write_flame_like(path, head, with_chumpy=False)
    emb = tmp_path / "flame_static_embedding.pkl"
    with open(emb, "wb") as fh:
        pickle.dump({"lmk_face_idx": _np(head.lmk_faces_idx)[17:].astype(np.uint32), "lmk_b_coords": _np(head.lmk_bary_coords)[17:]}, fh, protocol=2)
    flame = HeadModel.from_flame(path, n_shape=20, n_expr=16, landmark_path=emb).double()
    assert _np(flame.lmk_ids).tolist() == list(range(17, 68))
    p = _params(head, 1, seed=8, pose_scale=0.1)
    np.testing.assert_array_equal(_np(flame(p).landmarks), _np(head(p).landmarks[:, 17:]))


def test_flame_without_landmarks_gives_vertices_and_a_clear_landmark_error(tmp_path, head):
    path = tmp_path / "flame2023.pkl"
    _write_flame_like(path, head, with_chumpy=False)
    flame = HeadModel.from_flame(path, n_shape=5, n_expr=5)
    out = flame(flame.zeros(1))
    assert out.vertices.shape == (1, head.num_vertices, 3)
    with pytest.raises(ValueError, match="landmark_embedding.npy"):
        out.landmarks
    with pytest.raises(ValueError, match="n_shape=301"):
        HeadModel.from_flame(path, n_shape=301, n_expr=5)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo unpickled",))


def test_missing_and_foreign_flame_files_raise_clear_errors(tmp_path, head):
    with pytest.raises(FileNotFoundError, match="no FLAME model file"):
        HeadModel.from_flame(tmp_path / "nope.pkl")
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"this is not a pickle")
    with pytest.raises(ValueError, match="not a readable FLAME model file"):
        HeadModel.from_flame(garbage)
    foreign = tmp_path / "foreign.pkl"
    with open(foreign, "wb") as fh:
        pickle.dump({"v_template": np.zeros((5, 3)), "faces": np.zeros((1, 3))}, fh)
    with pytest.raises(ValueError, match=r"missing keys \['f', 'shapedirs'"):
        HeadModel.from_flame(foreign)
    evil = tmp_path / "evil.pkl"
    with open(evil, "wb") as fh:
        pickle.dump(_Evil(), fh)  # would call os.system on load: refused
    with pytest.raises(ValueError, match="not a readable FLAME model file"):
        HeadModel.from_flame(evil)
    good = tmp_path / "generic_model.pkl"
    _write_flame_like(good, head, with_chumpy=False)
    with pytest.raises(FileNotFoundError, match="landmark"):
        HeadModel.from_flame(good, 5, 5, landmark_path=tmp_path / "missing.npy")


def test_plotly_head_figure_holds_the_mesh_and_markers(head):
    from omg_lite.viz.mesh import head_mesh_figure, region_colours

    out = head(head.zeros(1))
    colours = region_colours(head.regions)
    assert colours.shape == (head.num_vertices, 3)
    np.testing.assert_allclose(colours[_np(head.regions["pupils"])], 0.05)
    fig = head_mesh_figure(out.vertices[0], head.faces, colours, landmarks=out.landmarks[0], joints=out.joints[0])
    mesh, lm, joints = fig.data
    assert len(mesh.x) == head.num_vertices and len(mesh.i) == head.num_faces and len(mesh.vertexcolor) == head.num_vertices
    assert len(lm.x) == 68 and len(joints.x) == 5
    with pytest.raises(ValueError, match="faces"):
        head_mesh_figure(out.vertices[0], head.faces[:, :2])
