"""``omg-lite demo`` / ``reenact``: what they write, atomically, and one clear error per bad input.

Independent truths: the video as imageio reads it back (frame count and panel layout), the .ply
files as plyfile reads them, the driver's own length and frame rate, and the file system (no
half-written output after an interruption).
"""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import plyfile
import pytest
from PIL import Image

import omg_lite.demo as demo_module
from omg_lite.avatar import AvatarModel, save_synthetic_driver
from omg_lite.cli import main
from omg_lite.demo import run_demo
from omg_lite.samples import DRIVER as SAMPLE_DRIVER, PORTRAIT as SAMPLE_PORTRAIT


@pytest.fixture(scope="module")
def net(run) -> AvatarModel:
    return AvatarModel.load(run, device="cpu")


@pytest.fixture(scope="module")
def short_driver(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("driver") / "params.npz"
    return save_synthetic_driver(path, n_frames=4, fps=12.0)


def test_shipped_samples_exist():
    assert SAMPLE_PORTRAIT.is_file() and SAMPLE_DRIVER.is_file()
    assert SAMPLE_DRIVER.stat().st_size < 20_000


def test_demo_writes_video_ply_and_report(net, short_driver, tmp_path):
    out = tmp_path / "demo"
    r = run_demo(driver=short_driver, out=out, net=net, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["avatar.mp4", "avatar_lod0.ply", "avatar_lod1.ply", "avatar_lod2.ply",
                                                     "report.json", "report.md", "source.png"]
    video = iio.imread(out / "avatar.mp4", index=None)
    S = net.image_size
    assert video.shape[0] == 4 and video.shape[2] == 4 * S  # every driver frame; source + 3 LODs side by side
    assert json.loads((out / "report.json").read_text()) == r
    assert r["driver"]["fps"] == 12.0 and r["driver"]["frames"] == 4
    for row in r["lods"]:
        assert len(plyfile.PlyData.read(str(out / f"avatar_lod{row['lod']}.ply"))["vertex"]) == row["total"]
        assert row["fps"] > 0
    assert [row["head"] for row in r["lods"]] == sorted(row["head"] for row in r["lods"])
    assert "random" in r["encoder"] and "Note" in (out / "report.md").read_text()
    assert np.asarray(Image.open(out / "source.png")).shape == (S, S, 3)


def test_interrupted_demo_leaves_nothing(net, short_driver, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_module, "report_markdown", boom)  # the last file written
    with pytest.raises(KeyboardInterrupt):
        run_demo(driver=save_synthetic_driver(tmp_path / "one" / "params.npz", n_frames=1), out=tmp_path / "demo", net=net, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["one"]  # the driver only: no demo, no temporary folder


def _error(capsys, args) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("omg-lite: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_inputs_are_one_line_errors(run, short_driver, tmp_path, capsys):
    face = Image.fromarray(np.full((128, 128, 3), 128, np.uint8))
    face.save(tmp_path / "blank.png")
    (tmp_path / "broken.mp4").write_bytes(b"\x00garbage" * 100)
    base = ["--checkpoint", str(run), "--out", str(tmp_path / "o")]
    assert "no face" in _error(capsys, ["demo", *base, "--image", str(tmp_path / "blank.png"), "--driver", str(short_driver)])
    assert "not a readable video" in _error(capsys, ["demo", *base, "--driver", str(tmp_path / "broken.mp4")])
    assert "more than --max-frames 3" in _error(capsys, ["demo", *base, "--driver", str(short_driver), "--max-frames", "3"])
    assert "'smoke' preset, not 'lite'" in _error(capsys, ["demo", *base, "--preset", "lite"])
    err = _error(capsys, ["reenact", "--checkpoint", str(run), "--source", str(SAMPLE_PORTRAIT), "--driver", str(short_driver),
                          "--out", str(tmp_path / "x.avi")])
    assert ".mp4 or .gif" in err
    assert not (tmp_path / "o").exists()


def test_reenact_writes_one_level(run, short_driver, tmp_path, capsys):
    out = tmp_path / "r.gif"
    assert main(["reenact", "--checkpoint", str(run), "--source", str(SAMPLE_PORTRAIT), "--driver", str(short_driver),
                 "--lod", "0", "--out", str(out)]) == 0
    frames = iio.imread(out, index=None)
    assert frames.shape[0] == 4
