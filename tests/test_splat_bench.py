"""The render benchmark: its head-sized cloud is what its docstring says, and it reports its figures."""

from __future__ import annotations

import torch

from omg_lite.bench.render import head_camera, head_cloud, measure, measure_fresh


def test_head_cloud_is_head_sized():
    cloud = head_cloud(4000, 32)
    assert {k: tuple(v.shape) for k, v in cloud.items()} == {
        "means": (1, 4000, 3), "quats": (1, 4000, 4), "scales": (1, 4000, 3),
        "opacities": (1, 4000), "features": (1, 4000, 32)}
    m = cloud["means"][0]
    # on the ellipsoid shell (x/7.5cm)^2 + (y/10cm)^2 + (z/9cm)^2 = 1, within the 3 % jitter
    r = (m / torch.tensor([0.075, 0.10, 0.09])).norm(dim=1)
    assert (r - 1).abs().max() < 0.15 and (r - 1).abs().mean() < 0.03
    assert 0.19 < m[:, 1].max() - m[:, 1].min() < 0.22  # about 20 cm tall
    assert cloud["scales"].min() >= 0.002 and cloud["scales"].max() <= 0.004
    assert cloud["opacities"].min() >= 0.2 and cloud["opacities"].max() <= 1.0
    # the frontal camera 1 m away: the head's height covers about three quarters of the image
    uv, depth = head_camera(256).project_world(cloud["means"])
    assert 0.9 < depth.min() and depth.max() < 1.1
    assert 0.6 < (uv[0, :, 1].max() - uv[0, :, 1].min()) / 256 < 0.9


def test_measure_reports_every_figure():
    row = measure(500, 32, 4, backward=True, repeat=1)
    assert row["pass"] == "fwd+bwd" and row["N"] == 500 and row["S"] == 32 and row["C"] == 4
    assert row["pairs"] > 0 and row["ms"] > 0
    assert abs(row["Mpairs_s"] - row["pairs"] / row["ms"] / 1e3) < 1e-9
    assert row["peak_mb"] >= row["render_mb"] >= 0


def test_measure_fresh_runs_in_its_own_process():
    row = measure_fresh(300, 16, 3, repeat=1)
    assert row["pass"] == "fwd" and row["pairs"] > 0 and row["peak_mb"] > 0
