"""``omg-lite bench refiner``'s candidates and its refit-and-score path.

Independent truths: a half-resolution refiner whose inner correction is a constant b gives exactly
I_c + b (bilinear upsampling keeps a constant), and zero gives I_c; a refiner that passes I_c
through must score what ``evaluate`` scores for the coarse render; a refit on a target it can
reach lowers the loss.
"""

from __future__ import annotations

import pytest
import torch

from omg_lite.bench.refiner import HalfResolution, RefinerBench, candidate, refit
from omg_lite.model.refiner import Refiner
from omg_lite.train.losses import OMGLoss


@pytest.mark.parametrize("size", [32, 33])
def test_half_resolution_adds_its_inner_correction_upsampled(size):
    torch.manual_seed(0)
    inner = Refiner(8, 4, 1)
    F_r = torch.rand(2, 8, size, size)
    with torch.no_grad():
        inner.out.weight.zero_()
        inner.out.bias.zero_()
        assert torch.equal(HalfResolution(inner)(F_r), F_r[:, :3])
        inner.out.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        out = HalfResolution(inner)(F_r)
    assert out.shape == (2, 3, size, size)
    torch.testing.assert_close(out, F_r[:, :3] + torch.tensor([0.1, -0.2, 0.3])[:, None, None], atol=1e-6, rtol=0)


def test_candidates_are_what_they_say():
    trained = Refiner(8, 16, 2)
    assert candidate("width8", trained, 8, 2, 0).down[0][0].out_channels == 8
    assert candidate("half-width8", trained, 8, 2, 0).inner.down[0][0].out_channels == 8
    half = candidate("half", trained, 8, 2, 0)
    assert half.inner is not trained and torch.equal(half.inner.out.weight, trained.out.weight)  # a copy: refits leave the model alone
    F_r = torch.rand(1, 8, 16, 16)
    assert torch.equal(candidate("none", trained, 8, 2, 0)(F_r), F_r[:, :3])
    with pytest.raises(ValueError, match="unknown candidate"):
        candidate("tiny", trained, 8, 2, 0)


def test_a_refit_lowers_the_loss_on_a_reachable_target():
    torch.manual_seed(0)
    F = (0.7 * torch.rand(8, 8, 32, 32)).half()
    I = F[:, :3].float() + 0.2  # I_c shifted: a constant correction reaches it
    criterion = OMGLoss((10.0, 1.0, 0.0, 0.0))  # no LPIPS trunk to build
    zeros = torch.zeros(1, 1, 3)
    coarse = criterion(F[:, :3].float(), None, I, zeros).total.item()  # the I_c term: a constant of the refit
    R = Refiner(8, 4, 1)
    with torch.no_grad():
        before = criterion(F[:, :3].float(), R(F.float()), I, zeros).total.item() - coarse
    after = refit(R, F, I, criterion, steps=150, lr=1e-2, seed=0) - coarse
    assert after < 0.05 * before
    assert not R.training


def test_bench_scores_the_pass_through_as_the_coarse_render(run, data_samples):
    from omg_lite.evaluate import evaluate
    from omg_lite.network import AvatarModel

    data = data_samples / "synth_128"  # the smoke run's data: its last clip is held out
    rows = RefinerBench(checkpoint=str(run), candidates=("none", "half"), size=32, repeat=1, data=str(data), steps=2, epochs=1).run()
    assert [(r["refiner"], r["lod"]) for r in rows] == [("none", k) for k in range(3)] + [("half", k) for k in range(3)]
    assert all(r["refit_steps"] == (0 if r["refiner"] == "none" else 2) for r in rows)
    net = AvatarModel.load(run, device="cpu")
    coarse = {r["lod"]: r for r in evaluate(net, data, split="heldout", cross=False, motion=False, identity=False, progress=False).rows
              if r["method"] == "coarse"}
    for r in rows[:3]:
        assert r["psnr"] == pytest.approx(coarse[r["lod"]]["psnr"], abs=1e-3)
        assert r["ssim"] == pytest.approx(coarse[r["lod"]]["ssim"], abs=1e-3)
    with pytest.raises(ValueError, match="unknown candidate"):
        RefinerBench(candidates=("tiny",)).run()
