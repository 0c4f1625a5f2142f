"""The render benchmark: its head-sized cloud is what its docstring says, each configuration runs in
a fresh interpreter, and it reports the figures of the render it names."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from omg_lite.bench.render import head_camera, head_cloud, measure_fresh


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


def test_measure_fresh_runs_in_its_own_interpreter_and_reports_the_renders_pairs(monkeypatch):
    """One ``python -m omg_lite.bench.render`` per configuration (the memory peak is its own), and
    the row's figures are those of ``render`` on the cloud and camera it names."""
    from omg_lite.bench import render as bench_render
    from omg_lite.splat import render

    calls = []
    real_run = subprocess.run
    monkeypatch.setattr(bench_render.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or real_run(cmd, **kw))
    row = measure_fresh(300, 16, 3, backward=True, repeat=1)
    assert len(calls) == 1 and calls[0][:3] == [sys.executable, "-m", "omg_lite.bench.render"]
    assert json.loads(calls[0][3]) == dict(gaussians=300, size=16, channels=3, backward=True, backend="numba", repeat=1)
    assert (row["N"], row["S"], row["C"], row["pass"]) == (300, 16, 3, "fwd+bwd")
    assert row["pairs"] == render(**head_cloud(300, 3), camera=head_camera(16)).pairs > 0
    assert row["Mpairs_s"] == pytest.approx(row["pairs"] / (row["ms"] * 1e3))
    assert row["peak_mb"] >= row["render_mb"] >= 0
