"""The shared foundation: camera convention, parameter files, config overrides, CLI, notebook policy."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from omg_lite.config import Config, apply_overrides, preset
from omg_lite.geometry.camera import Camera
from omg_lite.head.params import HeadParams, load_clip, save_clip

ROOT = Path(__file__).resolve().parents[1]


def test_frontal_camera_projects_like_a_pinhole():
    cam = Camera.frontal(batch=2, size=200, fov_deg=30.0, distance=2.0)
    f = 100 / math.tan(math.radians(15))
    # A world point on the +z axis is straight ahead: the image centre, at depth 2 - z.
    uv, depth = cam.project_world(torch.tensor([[[0.0, 0.0, 0.5]]]).expand(2, 1, 3))
    torch.testing.assert_close(uv, torch.full((2, 1, 2), 100.0))
    torch.testing.assert_close(depth, torch.full((2, 1), 1.5))
    # +y (up in FLAME's world) goes towards row 0 (image up); +x goes right.
    uv, _ = cam.project_world(torch.tensor([[[0.1, 0.2, 0.0]]]).expand(2, 1, 3))
    torch.testing.assert_close(uv[0, 0], torch.tensor([100 + f * 0.1 / 2.0, 100 - f * 0.2 / 2.0]))
    torch.testing.assert_close(cam.centre, torch.tensor([[0.0, 0.0, 2.0]] * 2))


def test_camera_rejects_bad_shapes():
    with pytest.raises(ValueError, match="K must be"):
        Camera(torch.eye(3), torch.eye(3)[None], torch.zeros(1, 3), 8, 8)
    with pytest.raises(ValueError, match="image size"):
        Camera(torch.eye(3)[None], torch.eye(3)[None], torch.zeros(1, 3), 0, 8)


def test_params_file_round_trip_and_layout(tmp_path):
    g = torch.Generator().manual_seed(0)
    M = 3
    p = HeadParams(torch.randn(1, 7, generator=g).expand(M, 7), torch.randn(M, 5, generator=g), torch.randn(M, 15, generator=g), torch.randn(M, 3, generator=g))
    cam = Camera.frontal(batch=M, size=64)
    save_clip(tmp_path / "params.npz", p, cam, landmarks=np.zeros((M, 68, 2), np.float32))
    raw = np.load(tmp_path / "params.npz")  # the independent reader: numpy itself
    np.testing.assert_array_equal(raw["expression"], p.expression.numpy())
    np.testing.assert_array_equal(raw["shape"], p.shape[0].numpy())
    assert raw["image_size"].tolist() == [64, 64] and raw["valid"].tolist() == [1, 1, 1]
    q, cam2, extra = load_clip(tmp_path / "params.npz")
    torch.testing.assert_close(q.pose, p.pose)
    torch.testing.assert_close(cam2.K, cam.K)
    assert extra["landmarks"].shape == (M, 68, 2)


def test_params_errors(tmp_path):
    with pytest.raises(ValueError, match="pose must be"):
        HeadParams(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 14), torch.zeros(2, 3))
    with pytest.raises(FileNotFoundError, match="no head-parameter file"):
        load_clip(tmp_path / "missing.npz")
    np.savez(tmp_path / "foreign.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="missing"):
        load_clip(tmp_path / "foreign.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        load_clip(tmp_path / "junk.npz")


def test_overrides_change_fields_and_refuse_unknown_keys():
    cfg = apply_overrides(Config(), ["head.n_shape=7", "camera.fov_deg=12.5"])
    assert cfg.head.n_shape == 7 and cfg.camera.fov_deg == 12.5
    assert Config().head.n_shape != 7  # the original is untouched
    with pytest.raises(KeyError, match="no field 'n_shapes'"):
        apply_overrides(Config(), ["head.n_shapes=3"])
    with pytest.raises(KeyError, match="is a section"):
        apply_overrides(Config(), ["head=3"])
    with pytest.raises(ValueError, match="section.field=value"):
        apply_overrides(Config(), ["head.n_shape"])
    with pytest.raises(ValueError, match="bad value"):
        apply_overrides(Config(), ["head.n_shape=many"])
    with pytest.raises(KeyError, match="unknown preset"):
        preset("huge")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "omg_lite.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_lists_subcommands_and_prints_bench_json():
    out = _cli("--help")
    assert out.returncode == 0 and "bench" in out.stdout
    out = _cli("bench", "system", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["rows"]
    assert rows[0]["torch"] == torch.__version__


def test_notebooks_are_stored_without_outputs():
    """The storage policy: notebooks are committed with outputs cleared (CI executes them)."""
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        for cell in cells:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, f"{nb.name} has stored outputs"
