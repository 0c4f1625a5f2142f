"""``omg-lite prepare``: a synthetic collection of videos (rendered and encoded here, with known
bad files among them) -> a training set.

Truths: what each file is (the test made it: good clips, corrupt bytes, an empty file, a video
with no face, two faces side by side, a byte copy, a file cut in half) fixes each index line's
status and reason; an uninterrupted one-machine run fixes what two shards in two processes,
interrupted by Ctrl-C and resumed, must produce byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omg_lite.bench.prepare import synthetic_collection
from omg_lite.cli import main
from omg_lite.config import Config
from omg_lite.prepare import STATE, find_videos, prepare
from omg_lite.train.data import clip_folders

ROOT = Path(__file__).resolve().parents[1]
FRAMES, CROP = 3, 64
TRACK = ["track.full_iters=30", "track.rigid_iters=10"]  # a short fit: CI time, not accuracy, is tested here
GOOD = ["good_00", "good_01", "good_02"]
EXPECT = {  # name -> (status, words in the reason)
    "good_00": ("ok", ""), "good_01": ("ok", ""), "good_02": ("ok", ""),
    "good_00_copy": ("skipped", "duplicate of good_00"),
    "corrupt": ("failed", "not a readable video"),
    "empty": ("failed", "empty (0 bytes)"),
    "noface": ("failed", "no face"),
    "truncated": ("failed", "not a readable video"),
    "two_faces": ("skipped", "several faces"),
}  # fmt: skip


def _cfg() -> Config:
    from omg_lite.config import apply_overrides

    cfg = apply_overrides(Config(), TRACK)
    cfg.track.size = CROP
    return cfg


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    paths = synthetic_collection(folder, clips=3, frames=FRAMES, size=128, seed=3)
    paths["zz_copy_of_good_00"].rename(folder / "good_00_copy.mp4")  # sorts right after good_00: the other shard of two
    return folder


@pytest.fixture(scope="module")
def reference(videos, tmp_path_factory) -> Path:
    """One uninterrupted run on one machine (two worker processes)."""
    out = tmp_path_factory.mktemp("ref") / "data"
    prepare(videos, out, _cfg(), workers=2, progress=False)
    return out


def _index(out: Path) -> dict[str, dict]:
    lines = [json.loads(ln) for ln in (out / "index.jsonl").read_text().splitlines()]
    return {r["name"]: {k: v for k, v in r.items() if k not in ("seconds", "cpu_seconds")} for r in lines}


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731 - a shell's background job ignores it
    return subprocess.Popen([sys.executable, "-m", "omg_lite.cli", "prepare", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)  # fmt: skip


def _args(videos: Path, out: Path, *more: str) -> list[str]:
    return ["--videos", str(videos), "--out", str(out), "--size", str(CROP), "--set", *TRACK, *more]


def _assert_complete(clip: Path) -> None:
    """A clip under its final name is whole: every frame's crop and mask, params, track.json."""
    meta = json.loads((clip / "track.json").read_text())
    for kind in ("rgb", "mask"):
        assert sorted(p.name for p in (clip / kind).iterdir()) == [f"{m:04d}.png" for m in range(meta["frames"])]
    assert np.load(clip / "params.npz")["expression"].shape[0] == meta["frames"]


def test_statuses_and_clips(reference):
    index = _index(reference)
    assert list(index) == sorted(EXPECT)  # every video, in sorted order, none fatal
    for name, (status, words) in EXPECT.items():
        assert index[name]["status"] == status, (name, index[name])
        assert words in index[name]["reason"], (name, index[name]["reason"])
    for name in GOOD:
        assert index[name]["frames"] == FRAMES and index[name]["valid"] == FRAMES
        assert 0 < index[name]["error_pct_iod"] < 20
        _assert_complete(reference / name)
        with Image.open(reference / name / "rgb" / "0000.png") as im:
            assert im.size == (CROP, CROP)
    assert index["good_00_copy"]["sha256"] == index["good_00"]["sha256"]
    assert [p.name for p in clip_folders(reference)] == GOOD  # what training and eval read


def test_shards_interrupt_resume_match_one_run(videos, reference, tmp_path, capsys):
    out = tmp_path / "data"
    first = _cli(*_args(videos, out, "--shard", "0/2"))
    second = _cli(*_args(videos, out, "--shard", "1/2"))  # empty, good_00_copy, good_02, truncated
    records, deadline = out / STATE / "records", time.monotonic() + 120
    while not (records / "good_00_copy.json").exists():
        assert time.monotonic() < deadline and second.poll() is None
        time.sleep(0.01)
    second.send_signal(signal.SIGINT)  # Ctrl-C while good_02 is tracked
    err = second.communicate(timeout=120)[1]
    assert second.returncode == 130 and f"omg-lite: interrupted; the videos finished in {out} are kept" in err, err[-2000:]
    assert not (records / "good_02.json").exists()
    err = first.communicate(timeout=240)[1]
    assert first.returncode == 0, err[-2000:]
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != STATE]  # nothing half-written left
    for clip in clip_folders(out):
        _assert_complete(clip)
    # a kill (no cleanup) between the rename of good_00 and its record, with a temporary folder left behind
    (records / "good_00.json").unlink()
    shutil.copytree(out / "good_00", out / ".good_00.tmp-killed")
    assert ".good_00.tmp-killed" not in [p.name for p in clip_folders(out)]  # training never reads a temporary folder
    assert main(["prepare", *_args(videos, out, "--shard", "1/2")]) == 0  # resume both (here, in this process)
    capsys.readouterr()
    assert main(["prepare", *_args(videos, out, "--shard", "0/2")]) == 0
    text = capsys.readouterr().out
    assert "1 prepared now" in text and "(other shards" not in text  # good_00 redone, the rest skipped, the collection complete
    assert not list(out.glob(".good_00.*"))
    assert _index(out) == _index(reference)
    assert [p.name for p in clip_folders(out)] == GOOD
    for name in GOOD:
        for f in sorted((reference / name).rglob("*")):
            if f.is_file() and f.name != "track.json":
                assert f.read_bytes() == (out / name / f.relative_to(reference / name)).read_bytes(), f
        seconds = lambda d: {k: v for k, v in json.loads((d / "track.json").read_text()).items() if k != "seconds"}  # noqa: E731
        assert seconds(out / name) == seconds(reference / name)


def test_train_and_eval_read_the_set(reference, run, tmp_path, capsys):
    sets = ["--set", f"train.data={reference}", "train.steps=1", "train.heldout=0", "encoder.weights=random", "train.w_lpips=0", "train.image_size=64"]
    assert main(["train", "--preset", "smoke", "--out", str(tmp_path / "run"), *sets]) == 0
    assert "trained 1 steps" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(run), "--data", str(reference), "--lod", "0", "--no-cross", "--no-motion", "--max-frames", "2", "--json"]) == 0
    assert f"{len(GOOD)} clip(s) from {reference}" in capsys.readouterr().out


def test_list_file_and_bad_arguments(videos, tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    shutil.copyfile(videos / "good_01.mp4", tmp_path / "sub" / "good_01.mp4")
    listing = tmp_path / "list.txt"
    listing.write_text("# a video and a missing one, relative to the list\nsub/good_01.mp4\n\nmissing/clip.mp4\n")
    assert [(s.name, s.path) for s in find_videos(listing)] == [("missing__clip", tmp_path / "missing/clip.mp4"), ("sub__good_01", tmp_path / "sub/good_01.mp4")]
    out = tmp_path / "data"
    r = prepare(listing, out, _cfg(), progress=False, shard="0/2")  # the missing one: recorded, not fatal
    assert r["failed"] == [("missing__clip", f"{tmp_path / 'missing/clip.mp4'}: no such file")] and r["pending"] == 1
    for bad, words in (
        (["--shard", "2/2"], "expected I/N"),
        (["--workers", "0"], "at least 1"),
        (["--stride", "2"], "other settings"),  # out already holds a set made with stride 1
    ):
        assert main(["prepare", "--videos", str(listing), "--out", str(out), "--size", str(CROP), "--set", *TRACK, *bad]) == 2
        assert words in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's file")
    assert main(["prepare", "--videos", str(listing), "--out", str(tmp_path / "mine")]) == 2
    assert "not an omg-lite prepare output" in capsys.readouterr().err
    assert main(["prepare", "--videos", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
