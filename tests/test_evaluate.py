"""Evaluation metrics and ``omg-lite eval``.

Independent truths: PSNR of a known error in closed form, identical images (PSNR inf, SSIM 1,
LPIPS 0), the lpips package called directly on [-1, 1] inputs, scikit-image's SSIM and PSNR, a
known landmark shift (AKD in closed form), a known image shift seen through the detector, and the
table rows recomputed here with scikit-image.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

from omg_lite.avatar import AvatarModel
from omg_lite.cli import main
from omg_lite.evaluate import Lpips, MotionMetrics, akd, clip_folders, evaluate, psnr, read_clip, ssim

ROOT = Path(__file__).resolve().parents[1]
SYNTH = ROOT / "data_samples" / "synth_256"


def test_psnr_of_a_known_error():
    target = torch.full((2, 3, 16, 16), 0.5)
    sign = torch.where(torch.arange(16 * 16).reshape(16, 16) % 2 == 0, 1.0, -1.0)
    pred = target + 0.1 * sign  # |error| = 0.1 everywhere: MSE = 0.01
    assert torch.allclose(psnr(pred, target), torch.full((2,), 20.0), atol=1e-4)  # 10 log10(1 / 0.01)
    assert math.isinf(float(psnr(target, target)[0]))


def test_ssim_matches_scikit_image_and_identity():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 48, 48, generator=g)
    b = (a + 0.1 * torch.randn(2, 3, 48, 48, generator=g)).clamp(0, 1)
    ours = ssim(a, b)
    for i in range(2):
        ref = sk_ssim(a[i].permute(1, 2, 0).numpy(), b[i].permute(1, 2, 0).numpy(), channel_axis=2, gaussian_weights=True,
                      sigma=1.5, use_sample_covariance=False, data_range=1.0)
        assert abs(float(ours[i]) - float(ref)) < 2e-3  # borders differ (padding vs cropping)
    assert torch.allclose(ssim(a, a), torch.ones(2), atol=1e-5)


def test_lpips_is_the_lpips_package_on_minus_one_to_one_inputs(lpips_reference):
    lp = Lpips()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 64, 64, generator=g)
    y = (x + 0.2 * torch.randn(2, 3, 64, 64, generator=g)).clamp(0, 1)
    torch.testing.assert_close(lp(x, y), lpips_reference(lp.net, "squeeze", x, y), rtol=1e-5, atol=1e-7)
    assert float(lp(x, x)[0]) == pytest.approx(0.0, abs=1e-6)
    assert "squeeze" in lp.label


def test_akd_of_a_known_shift():
    g = np.random.default_rng(0)
    pts = g.uniform(0, 64, (3, 68, 2))
    assert np.allclose(akd(pts + [3.0, -4.0], pts), 3.5)  # mean of |3| and |-4|


def test_motion_metrics_through_the_detector(run):
    net = AvatarModel.load(run, device="cpu")
    clip = read_clip(clip_folders(SYNTH)[0], 256, max_frames=2)
    mm = MotionMetrics(net.head_model, net.cfg)
    try:
        lm, fit = mm.driver(clip)
        same = mm.scores(clip.rgb, lm, fit, ground_truth=True)
        assert same["akd"] == pytest.approx(0.0, abs=1e-9) and same["aed"] == pytest.approx(0.0, abs=1e-9)
        assert same["apd"] == pytest.approx(0.0, abs=1e-3)
        shifted = mm.scores(torch.roll(clip.rgb, shifts=4, dims=-1), lm, fit, ground_truth=True)  # 4 px to the right
        assert shifted["akd"] == pytest.approx(2.0, abs=0.5)  # (|4| + |0|) / 2, up to the detector's jitter
    finally:
        mm.close()


def test_evaluate_rows_and_baselines(run):
    net = AvatarModel.load(run, device="cpu")
    r = evaluate(net, SYNTH, lods=[0], max_frames=2, motion=False, progress=False)
    keys = {(row["setting"], row["method"], row["lod"]) for row in r.rows}
    assert keys == {("self", "source", "–"), ("self", "coarse", 0), ("self", "full", 0),
                    ("cross", "source", "–"), ("cross", "coarse", 0), ("cross", "full", 0)}
    assert any(n.startswith("CSIM / same person: dlib") for n in r.notes) and any("random trunk" in n for n in r.notes)
    # the unchanged-source baseline, recomputed with scikit-image: source vs driver frame, both on the background
    want = []
    for folder in clip_folders(SYNTH):
        c = read_clip(folder, net.image_size, max_frames=2)
        comp = (c.rgb * c.mask + (1 - c.mask)).permute(0, 2, 3, 1).numpy()
        want.append(sk_psnr(comp[1], comp[0], data_range=1.0))
    row = next(x for x in r.rows if x["setting"] == "self" and x["method"] == "source")
    assert row["psnr"] == pytest.approx(np.mean(want), abs=1e-3)
    cross = next(x for x in r.rows if x["setting"] == "cross" and x["method"] == "full")
    assert "psnr" not in cross  # no ground truth across identities
    assert "| self | full | 0 |" in r.markdown()


def test_eval_cli_json_and_bad_lod(run, capsys):
    assert main(["eval", "--checkpoint", str(run), "--data", str(SYNTH), "--lod", "1", "--max-frames", "2", "--no-motion",
                 "--no-cross", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {row["method"] for row in out["rows"]} == {"source", "coarse", "full"}
    assert main(["eval", "--checkpoint", str(run), "--data", str(SYNTH), "--lod", "5", "--no-motion"]) == 2
    assert "levels 0..2" in capsys.readouterr().err


def test_orderings_on_hand_made_numbers():
    from omg_lite.tables import orderings

    lod = [{"lod": 0, "psnr": 20.0, "ssim": 0.80, "lpips": 0.20}, {"lod": 1, "psnr": 21.0, "ssim": 0.79, "lpips": 0.10}]
    abl = [{"variant": "full", "psnr": 22.0, "ssim": 0.9, "lpips": 0.1}, {"variant": "no_local", "psnr": 21.0, "ssim": 0.91, "lpips": 0.1},
           {"variant": "no_global", "psnr": 20.0, "ssim": 0.8, "lpips": 0.2}, {"variant": "no_shoulder", "psnr": 21.5, "ssim": 0.8, "lpips": 0.2}]
    got = dict(orderings(lod, abl))
    assert got["Sub #1 beats Sub #0 on PSNR"] and not got["Sub #1 beats Sub #0 on SSIM"] and got["Sub #1 beats Sub #0 on LPIPS"]
    assert not got["Ours (Full) beats w/o Local Feature on SSIM"] and not got["Ours (Full) beats w/o Local Feature on LPIPS"]  # a tie is not a win
    assert got["PSNR order w/o Global Feature < w/o Local Feature < w/o Shoulder < Ours (Full)"]


def test_tables_refuse_a_readme_without_markers_before_training(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# results\n<!-- omg-lite tables: end -->\n<!-- omg-lite tables: begin -->\n")
    assert main(["tables", "--out", str(tmp_path / "t"), "--preset", "smoke", "--readme", str(readme)]) == 2
    assert "needs one line '<!-- omg-lite tables: begin -->'" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


@pytest.mark.slow
def test_tables_at_smoke_size(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Results\n\n<!-- omg-lite tables: begin -->\nold table\n<!-- omg-lite tables: end -->\n\n## After\n")
    assert main(["tables", "--out", str(tmp_path / "t"), "--preset", "smoke", "--steps", "1", "--variants", "full", "no_refiner",
                 "--set", "encoder.weights=random", "train.w_lpips=0", "--readme", str(readme)]) == 0
    md = (tmp_path / "t" / "tables.md").read_text()
    assert readme.read_text() == ("# x\n\n## Results\n\n<!-- omg-lite tables: begin -->\n" + md.rstrip()
                                  + "\n<!-- omg-lite tables: end -->\n\n## After\n")
    assert "| Sub #0 |" in md and "| Sub #2 |" in md and "| w/o Refiner |" in md and "Produced by `omg-lite tables" in md
    data = json.loads((tmp_path / "t" / "tables.json").read_text())
    heads = [r["gaussians"] for r in data["lod_rows"]]
    assert heads == sorted(heads) and len(heads) == 3
    assert all(isinstance(o["holds"], bool) for o in data["orderings"])
    assert sorted(p.name for p in (tmp_path / "t" / "runs").iterdir()) == ["full", "no_refiner"]


def _frames_of(folder: Path, max_frames: int) -> int:
    """Valid frames of a clip, read straight from its params.npz (not through read_clip)."""
    return min(int(np.load(folder / "params.npz")["valid"].sum()), max_frames)


def test_eval_fit_rows_and_the_half_clip_protocol(run, tmp_path, capsys):
    import shutil

    data = tmp_path / "two"  # two clips: each gets its own fit
    for name in ("id000", "id001"):
        shutil.copytree(ROOT / "data_samples" / "synth_128" / name, data / name)
    base = ["eval", "--checkpoint", str(run), "--data", str(data), "--lod", "1", "--max-frames", "4", "--no-motion",
            "--no-identity", "--no-cross", "--json"]
    assert main(base + ["--fit", "4", "--fit-frames", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {row["method"]: row for row in out["rows"]}
    assert set(rows) == {"source", "coarse", "full", "coarse+fit", "full+fit"}
    scored = sum(_frames_of(data / n, 4) - 1 - 1 for n in ("id000", "id001"))  # drivers after the source (frame 0) and the N = 1 fitting frame
    assert {row["frames"] for row in rows.values()} == {scored}  # every row on the same frames, none the fit saw
    assert any(n.startswith("half-clip protocol") for n in out["notes"]) and any(n.startswith("+fit: ") for n in out["notes"])
    assert out["info"]["fit"] == 4 and out["info"]["fit_frames"] == 1
    for bad, why in ((["--fit", "-1"], "--fit -1"), (["--fit", "2", "--fit-frames", "3"], "--fit-frames 2 or less"),
                     (["--fit-frames", "1"], "needs --fit STEPS")):
        assert main(base + bad) == 2
        err = capsys.readouterr().err
        assert err.startswith("omg-lite: error:") and why in err and err.count("\n") == 1


def test_eval_fit_improves_the_source_view(run, tmp_path):
    """A clip whose frame 1 is frame 0 again: self-reenactment then scores the source view itself, which the
    personalisation fits, so the fitted rows' PSNR must rise above the feed-forward rows' (the fit's own objective)."""
    import shutil

    src = ROOT / "data_samples" / "synth_128" / "id000"
    clip = tmp_path / "same" / "id000"
    shutil.copytree(src, clip)
    for sub in ("rgb", "mask"):
        shutil.copy(clip / sub / "0000.png", clip / sub / "0001.png")
    z = dict(np.load(clip / "params.npz"))
    for k, v in z.items():
        if v.ndim and v.shape[0] == 4 and k != "landmark_ids":
            v[1] = v[0]
    np.savez(clip / "params.npz", **z)
    net = AvatarModel.load(run, device="cpu")
    r = evaluate(net, clip.parent, lods=[1], max_frames=2, cross=False, motion=False, identity=False, fit=30, progress=False)
    rows = {row["method"]: row for row in r.rows}
    assert rows["full+fit"]["frames"] == 1 and rows["full"]["frames"] == 1
    assert math.isinf(rows["source"]["psnr"])  # the scored frame is the source view itself
    assert rows["full+fit"]["psnr"] > rows["full"]["psnr"] + 0.5
    assert rows["coarse+fit"]["psnr"] > rows["coarse"]["psnr"] + 0.5
