"""Phi, midpoint subdivision: checked against trimesh, a brute-force edge loop and exact linearity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

from omg_lite.geometry.subdivide import Subdivider, predicted_counts
from omg_lite.head import load_head_model


def _open_sphere() -> trimesh.Trimesh:
    """An icosphere with a cap cut off: a mesh with a boundary loop, like the head's open neck."""
    m = trimesh.creation.icosphere(subdivisions=2)
    keep = m.triangles_center[:, 2] > -0.6
    m = trimesh.Trimesh(m.vertices, m.faces[keep], process=False)
    m.remove_unreferenced_vertices()
    return m


MESHES = {
    "icosphere": lambda: trimesh.creation.icosphere(subdivisions=1),
    "open_sphere": _open_sphere,
    "box": lambda: trimesh.creation.box(),
}


def _torch_mesh(m: trimesh.Trimesh) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(np.asarray(m.vertices), dtype=torch.float64)[None], torch.as_tensor(np.asarray(m.faces), dtype=torch.long)


def _match(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Index into ``ref`` of each row of ``ours`` (positions are distinct, so nearest = same)."""
    dist, idx = cKDTree(ref).query(ours)
    assert dist.max() < 1e-9, "a subdivided vertex has no twin in trimesh's result"
    assert len(np.unique(idx)) == len(ref), "the two vertex sets differ"
    return idx


def _sorted_rows(x: np.ndarray) -> np.ndarray:
    """Rows in lexicographic order (of the rounded values): compares point multisets, duplicates allowed."""
    return x[np.lexsort(np.round(x, 9).T[::-1])]


def _cyclic(faces: np.ndarray) -> set[tuple[int, ...]]:
    """Faces as oriented triangles: each rotated so its smallest index comes first."""
    out = set()
    for f in faces.tolist():
        i = f.index(min(f))
        out.add(tuple(f[i:] + f[:i]))
    return out


@pytest.mark.parametrize("name", sorted(MESHES))
def test_matches_trimesh_over_levels(name):
    mesh = MESHES[name]()
    x, faces = _torch_mesh(mesh)
    sub = Subdivider(faces, mesh.vertices.shape[0], levels=2)
    ref_v, ref_f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    for k in range(1, 3):
        ref_v, ref_f = trimesh.remesh.subdivide(ref_v, ref_f)
        ours = sub(x, k)[0].numpy()
        assert ours.shape == ref_v.shape
        to_ref = _match(ours, ref_v)
        assert _cyclic(to_ref[sub.faces[k].numpy()]) == _cyclic(ref_f), "faces differ from trimesh's (as oriented triangles)"


@pytest.mark.parametrize("name", sorted(MESHES))
def test_counts_follow_v_plus_e_and_4f(name):
    mesh = MESHES[name]()
    _, faces = _torch_mesh(mesh)
    sub = Subdivider(faces, mesh.vertices.shape[0], levels=3)
    V, F = mesh.vertices.shape[0], faces.shape[0]
    for k in range(4):
        m = trimesh.Trimesh(np.zeros((sub.num_vertices[k], 3)), sub.faces[k].numpy(), process=False)
        E = len(m.edges_unique)
        assert (sub.num_vertices[k], sub.faces[k].shape[0], sub.edges[k].shape[0]) == (V, F, E)
        V, F = V + E, 4 * F


@pytest.mark.parametrize("name", sorted(MESHES))
def test_predicted_counts_match_the_subdivided_mesh(name):
    mesh = MESHES[name]()
    sub = Subdivider(torch.as_tensor(mesh.faces), mesh.vertices.shape[0], levels=3)
    actual = [(sub.num_vertices[k], sub.edges[k].shape[0], sub.faces[k].shape[0]) for k in range(4)]
    assert predicted_counts(*actual[0], levels=3) == actual


def test_flame_counts():
    assert [v for v, _, _ in predicted_counts(5023, 14995, 9976)] == [5023, 20018, 79936]


def test_head_model_matches_trimesh():
    # The stand-in head: open neck, separate eyeballs, a few seam vertices sharing a position.
    head = load_head_model(None, 20, 16)
    x = head.v_template.double()[None]
    sub = Subdivider(head.faces, head.num_vertices, levels=2)
    ref_v, ref_f = head.v_template.double().numpy(), head.faces.numpy()
    for k in range(3):
        m = trimesh.Trimesh(ref_v, ref_f, process=False)
        assert (sub.num_vertices[k], sub.edges[k].shape[0], sub.faces[k].shape[0]) == (len(ref_v), len(m.edges_unique), len(ref_f))
        np.testing.assert_allclose(_sorted_rows(sub(x, k)[0].numpy()), _sorted_rows(ref_v), rtol=0, atol=1e-12)
        ref_v, ref_f = trimesh.remesh.subdivide(ref_v, ref_f)


def test_closed_genus0_counts_are_analytic():
    # Closed genus-0 triangle mesh: E = 3F/2 and V - E + F = 2, so V_{k+1} = V_k + 3F_k/2.
    ico = trimesh.creation.icosphere(subdivisions=0)  # 12 vertices, 20 faces
    sub = Subdivider(torch.as_tensor(ico.faces), 12, levels=3)
    assert sub.num_vertices == [12, 42, 162, 642]
    assert [f.shape[0] for f in sub.faces] == [20, 80, 320, 1280]


def test_edges_and_new_vertices_by_brute_force():
    mesh = _open_sphere()
    x, faces = _torch_mesh(mesh)
    sub = Subdivider(faces, mesh.vertices.shape[0], levels=1)
    edge_set = set()
    for a, b, c in faces.tolist():
        for i, j in ((a, b), (b, c), (c, a)):
            edge_set.add((min(i, j), max(i, j)))
    assert sub.edges[0].tolist() == [list(e) for e in sorted(edge_set)]
    y = sub.up(x, 0)[0]
    V = x.shape[1]
    assert torch.equal(y[:V], x[0])
    for e, (i, j) in enumerate(sorted(edge_set)):
        assert torch.allclose(y[V + e], (x[0, i] + x[0, j]) / 2, rtol=0, atol=1e-15)


def test_upsample_matrix_is_the_definition():
    mesh = trimesh.creation.icosphere(subdivisions=1)
    _, faces = _torch_mesh(mesh)
    sub = Subdivider(faces, mesh.vertices.shape[0], levels=1)
    V, E = sub.num_vertices[0], sub.edges[0].shape[0]
    U = torch.zeros(V + E, V)
    for i in range(V):
        U[i, i] = 1.0
    for e, (i, j) in enumerate(sub.edges[0].tolist()):
        U[V + e, i] += 0.5
        U[V + e, j] += 0.5
    assert torch.equal(sub.upsample_matrix(0).to_dense(), U)


def test_child_faces_keep_parent_orientation():
    mesh = trimesh.creation.icosphere(subdivisions=1)
    x, faces = _torch_mesh(mesh)
    sub = Subdivider(faces, mesh.vertices.shape[0], levels=1)

    def normals(v, f):
        t = v[f]
        return torch.linalg.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])

    parent = normals(x[0], sub.faces[0]).repeat_interleave(4, dim=0)
    child = normals(sub(x, 1)[0], sub.faces[1])
    assert bool(((parent * child).sum(-1) > 0).all())


def test_linear_features_stay_linear():
    mesh = _open_sphere()
    x, faces = _torch_mesh(mesh)
    x = torch.cat([x, 2 * x + 0.3])  # B = 2
    sub = Subdivider(faces, mesh.vertices.shape[0], levels=2)
    g = torch.Generator().manual_seed(0)
    A = torch.randn(7, 3, generator=g, dtype=torch.float64)
    b = torch.randn(7, generator=g, dtype=torch.float64)
    xs, fs = sub.pyramid(x), sub.pyramid(x @ A.T + b)
    for k in range(3):
        assert fs[k].shape == (2, sub.num_vertices[k], 7)
        torch.testing.assert_close(fs[k], xs[k] @ A.T + b, rtol=0, atol=1e-12)


def test_level_zero_is_identity_and_pyramid_matches_call():
    mesh = trimesh.creation.icosphere(subdivisions=1)
    x, faces = _torch_mesh(mesh)
    sub = Subdivider(faces, mesh.vertices.shape[0], levels=2)
    assert sub(x, 0) is x
    for k, xk in enumerate(sub.pyramid(x)):
        assert torch.equal(xk, sub(x, k))


def test_gradcheck_float64():
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]])
    sub = Subdivider(faces, 4, levels=2)
    x = torch.randn(1, 4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: sub.up(x, 0), (x,))
    xb = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: sub(x, 2), (xb,), fast_mode=True)


def test_float32_and_unused_vertex_is_carried():
    faces = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    sub = Subdivider(faces, 4, levels=1)  # vertex 3 is used by no face
    x = torch.arange(12, dtype=torch.float32).reshape(1, 4, 3)
    y = sub(x, 1)
    assert y.dtype == torch.float32 and y.shape == (1, 7, 3)
    assert torch.equal(y[0, :4], x[0])
    assert sub.edges[0].tolist() == [[0, 1], [0, 2], [1, 2]]
    torch.testing.assert_close(y[0, 4:], torch.stack([(x[0, 0] + x[0, 1]) / 2, (x[0, 0] + x[0, 2]) / 2, (x[0, 1] + x[0, 2]) / 2]))


@pytest.mark.gpu
def test_cuda_inputs_give_trimeshs_subdivision_on_cuda():
    mesh = MESHES["open_sphere"]()
    x, faces = _torch_mesh(mesh)
    sub = Subdivider(faces, mesh.vertices.shape[0], levels=2).to("cuda")
    assert sub.faces[2].device.type == "cuda"
    ref_v, ref_f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    for k in (1, 2):
        ref_v, ref_f = trimesh.remesh.subdivide(ref_v, ref_f)
        y = sub(x.cuda(), k)
        assert y.device.type == "cuda"
        _match(y[0].cpu().numpy(), ref_v)


@pytest.mark.parametrize(
    "faces, V, match",
    [
        (torch.tensor([[0, 1, 4]]), 4, "num_vertices=4"),
        (torch.tensor([[0, -1, 2]]), 4, r"\[0, num_vertices\)"),
        (torch.tensor([[0, 1, 2, 3]]), 4, r"\[F, 3\]"),
        (torch.tensor([0, 1, 2]), 4, r"\[F, 3\]"),
        (torch.zeros(0, 3, dtype=torch.long), 4, "non-empty"),
        (torch.tensor([[0.0, 1.0, 2.0]]), 4, "integer"),
        (torch.tensor([[0, 1, 2], [1, 2, 3], [2, 0, 1]]), 4, "duplicate"),
        (torch.tensor([[0, 1, 2], [2, 1, 0]]), 4, "duplicate"),
        (torch.tensor([[0, 1, 2], [1, 1, 3]]), 4, "degenerate"),
        (torch.tensor([[0, 1, 2]]), 0, "num_vertices must be positive"),
    ],
)
def test_bad_faces_raise_one_clear_error(faces, V, match):
    with pytest.raises(ValueError, match=match):
        Subdivider(faces, V)


def test_bad_values_and_levels_raise():
    sub = Subdivider(torch.tensor([[0, 1, 2]]), 3, levels=2)
    with pytest.raises(ValueError, match=r"\[B, V_0=3, C\]"):
        sub(torch.zeros(3, 3), 1)
    with pytest.raises(ValueError, match=r"\[B, V_1=6, C\]"):
        sub.up(torch.zeros(1, 3, 3), 1)
    with pytest.raises(ValueError, match="floating point"):
        sub(torch.zeros(1, 3, 3, dtype=torch.long), 1)
    with pytest.raises(ValueError, match=r"level must be in \[0, 2\]"):
        sub(torch.zeros(1, 3, 3), 3)
    with pytest.raises(ValueError, match=r"level must be in \[0, 1\]"):
        sub.up(torch.zeros(1, 3, 3), 2)
    with pytest.raises(ValueError, match="levels must be >= 0"):
        Subdivider(torch.tensor([[0, 1, 2]]), 3, levels=-1)
