"""3DGS .ply export: round trip, and an independent reader (plyfile) sees the same values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from omg_lite.splat.ply import SH_C0, read_ply, write_ply

plyfile = pytest.importorskip("plyfile")


def _gaussians(N: int = 50, C: int = 32):
    g = torch.Generator().manual_seed(0)
    quats = torch.randn(N, 4, generator=g)
    return dict(
        means=torch.randn(N, 3, generator=g) * 0.1,
        quats=quats / quats.norm(dim=1, keepdim=True),
        scales=torch.rand(N, 3, generator=g) * 0.004 + 0.001,
        opacities=torch.rand(N, generator=g) * 0.98 + 0.01,
        features=torch.rand(N, C, generator=g),
    )


@pytest.mark.parametrize("C", [3, 32])
def test_round_trip(tmp_path, C):
    gs = _gaussians(C=C)
    path = write_ply(tmp_path / "avatar.ply", **gs)
    back = read_ply(path)
    for name, x in gs.items():
        torch.testing.assert_close(getattr(back, name), x, rtol=1e-5, atol=1e-6, msg=name)


def test_independent_reader_sees_the_3dgs_layout(tmp_path):
    gs = _gaussians(N=20, C=8)
    path = write_ply(tmp_path / "avatar.ply", **gs)
    v = plyfile.PlyData.read(str(path))["vertex"].data
    names = list(v.dtype.names)
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[9:54] == [f"f_rest_{i}" for i in range(45)]
    assert names[54:62] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert names[62:] == [f"feat_{k}" for k in range(3, 8)]
    assert all(v.dtype[n] == np.dtype("<f4") for n in names)
    i = 7
    m, q, s, o, f = (gs[k][i].double().numpy() for k in ("means", "quats", "scales", "opacities", "features"))
    np.testing.assert_allclose([v["x"][i], v["y"][i], v["z"][i]], m, rtol=1e-6)
    np.testing.assert_allclose([v["nx"][i], v["ny"][i], v["nz"][i]], 0.0)
    np.testing.assert_allclose([v[f"f_dc_{k}"][i] for k in range(3)], (f[:3] - 0.5) / SH_C0, rtol=1e-5)
    np.testing.assert_allclose([v[f"f_rest_{k}"][i] for k in range(45)], 0.0)
    np.testing.assert_allclose(v["opacity"][i], math.log(o / (1 - o)), rtol=1e-5)
    np.testing.assert_allclose([v[f"scale_{k}"][i] for k in range(3)], np.log(s), rtol=1e-5)
    np.testing.assert_allclose([v[f"rot_{k}"][i] for k in range(4)], q, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose([v[f"feat_{k}"][i] for k in range(3, 8)], f[3:], rtol=1e-6)


def test_reads_a_file_written_by_an_independent_writer(tmp_path):
    """A degree-1 3DGS file made with plyfile (no feat_*): C = 3, values decoded."""
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(9)] + \
        ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    rows = np.zeros(2, dtype=[(n, "<f4") for n in names])
    rows["x"] = [0.1, -0.2]
    rows["f_dc_0"] = [0.0, 1.0]
    rows["opacity"] = [0.0, 2.0]
    rows["scale_1"] = [-5.0, -6.0]
    rows["rot_0"] = [1.0, 0.0]
    rows["rot_3"] = [0.0, 1.0]
    plyfile.PlyData([plyfile.PlyElement.describe(rows, "vertex")], byte_order="<").write(str(tmp_path / "g.ply"))
    gs = read_ply(tmp_path / "g.ply")
    assert gs.features.shape == (2, 3)
    torch.testing.assert_close(gs.means[:, 0], torch.tensor([0.1, -0.2]))
    torch.testing.assert_close(gs.features[:, 0], torch.tensor([0.5, 0.5 + SH_C0]))
    torch.testing.assert_close(gs.opacities, torch.sigmoid(torch.tensor([0.0, 2.0])))
    torch.testing.assert_close(gs.scales[:, 1], torch.exp(torch.tensor([-5.0, -6.0])))
    torch.testing.assert_close(gs.quats, torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1.0]]))


def test_write_is_atomic_and_validates(tmp_path):
    gs = _gaussians(N=5, C=4)
    path = tmp_path / "a.ply"
    path.write_bytes(b"old")
    bad = dict(gs, scales=gs["scales"].clone())
    bad["scales"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="scales contains NaN"):
        write_ply(path, **bad)
    assert path.read_bytes() == b"old", "a failed write leaves the old file"
    with pytest.raises(ValueError, match="features must be"):
        write_ply(path, **dict(gs, features=gs["features"][:, :2]))
    with pytest.raises(ValueError, match="quats must be"):
        write_ply(path, **dict(gs, quats=gs["quats"][:4]))
    write_ply(path, **gs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ply"], "no temporary file is left behind"
    assert read_ply(path).means.shape == (5, 3)
