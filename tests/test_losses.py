"""The training loss L = 10 L2 + (1 - SSIM) + 0.1 LPIPS + 0.1 ||offset||_2, checked term by term."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

import omg_lite.train.losses as losses
from omg_lite.train.losses import LpipsRandomTrunkWarning, OMGLoss, build_lpips, l2, offset_reg, ssim, trunk_cached


def test_l2_by_hand():
    pred, target = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.5)
    assert l2(pred, target).item() == pytest.approx(0.25)
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 5, 7, generator=g), torch.rand(2, 3, 5, 7, generator=g)
    by_hand = sum(float(a[i, c, y, x] - b[i, c, y, x]) ** 2 for i in range(2) for c in range(3) for y in range(5) for x in range(7)) / (2 * 3 * 5 * 7)
    assert l2(a, b).item() == pytest.approx(by_hand, rel=1e-5)


def test_ssim_of_identical_images_is_one():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-5)


def test_ssim_matches_scikit_image():
    """skimage with the same Gaussian window (sigma 1.5, 11 taps, population covariance, data range 1).
    torchmetrics averages the SSIM map over the whole image, padding by 5 pixels with whole-sample
    reflection; skimage averages over the pixels 5 or more from the border. So skimage is given the
    images padded by np.pad(mode="reflect"): its interior is then exactly our domain. Tolerance 1e-5."""
    g = torch.Generator().manual_seed(2)
    a = torch.rand(2, 3, 48, 40, generator=g)
    b = (0.6 * a + 0.4 * torch.rand(2, 3, 48, 40, generator=g)).clamp(0, 1)
    ours = ssim(a, b).item()
    pad = lambda x: np.pad(x.double().numpy(), ((0, 0), (5, 5), (5, 5)), mode="reflect")  # noqa: E731
    theirs = np.mean([
        structural_similarity(pad(a[i]), pad(b[i]), channel_axis=0, data_range=1.0, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False, win_size=11)
        for i in range(2)
    ])
    assert ours == pytest.approx(theirs, abs=1e-5)
    assert ours < 0.95  # the images differ, so the comparison is not the trivial SSIM = 1


def test_offset_regulariser_is_the_mean_vertex_length():
    o = torch.tensor([[[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]], [[1.0, 2.0, 2.0], [0.0, 0.0, -2.0]]])  # lengths 5, 0, 3, 2
    assert offset_reg(o).item() == pytest.approx(2.5)
    z = torch.zeros(1, 4, 3, requires_grad=True)
    offset_reg(z).backward()
    assert torch.isfinite(z.grad).all()  # no NaN gradient at zero offsets


@pytest.fixture(scope="module")
def criterion() -> OMGLoss:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LpipsRandomTrunkWarning)
        return OMGLoss((10.0, 1.0, 0.1, 0.1), "alex")


def _images(seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    t = lambda: torch.rand(2, 3, 32, 32, generator=g)  # noqa: E731
    return t(), t(), t(), 0.02 * torch.randn(2, 10, 3, generator=g)


def test_total_is_the_weighted_sum_of_its_terms(criterion, lpips_reference):
    coarse, refined, target, offsets = _images()
    out = criterion(coarse, refined, target, offsets)
    lp = lambda x: lpips_reference(criterion.lpips, "alex", x, target).mean().item()  # noqa: E731  the package on 2x - 1
    by_hand = 0.1 * (offsets.norm(dim=-1).mean().item())
    for x in (coarse, refined):
        mse = ((x - target) ** 2).mean().item()
        by_hand += 10 * mse + 1 * (1 - ssim(x, target).item()) + 0.1 * lp(x)
    assert out.total.item() == pytest.approx(by_hand, rel=1e-5)
    assert out.terms["coarse/l2"].item() == pytest.approx(((coarse - target) ** 2).mean().item(), rel=1e-6)
    assert set(out.terms) == {"coarse/l2", "coarse/ssim", "coarse/lpips", "refined/l2", "refined/ssim", "refined/lpips", "offset"}


def test_without_a_refined_image_only_the_coarse_one_counts(criterion):
    coarse, _, target, offsets = _images(4)
    out = criterion(coarse, None, target, offsets)
    t = out.terms
    assert out.total.item() == pytest.approx(10 * t["coarse/l2"].item() + 1 - t["coarse/ssim"].item() + 0.1 * t["coarse/lpips"].item() + 0.1 * t["offset"].item(), rel=1e-6)
    assert not any(k.startswith("refined") for k in t)


def test_perfect_prediction_leaves_only_the_regulariser(criterion):
    _, _, target, offsets = _images(5)
    out = criterion(target.clone(), target.clone(), target, offsets)
    assert out.total.item() == pytest.approx(0.1 * offsets.norm(dim=-1).mean().item(), abs=1e-5)


def test_loss_gradients_reach_both_images(criterion):
    coarse, refined, target, offsets = _images(6)
    coarse.requires_grad_(True)
    refined.requires_grad_(True)
    offsets.requires_grad_(True)
    criterion(coarse, refined, target, offsets).total.backward()
    for x in (coarse, refined, offsets):
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_bad_inputs(criterion):
    coarse, refined, target, offsets = _images()
    with pytest.raises(ValueError, match="must match the target"):
        criterion(coarse[:, :, :16], refined, target, offsets)
    small = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="at least 32x32"):
        criterion(small, None, small, offsets[:1])
    with pytest.raises(ValueError, match="four non-negative"):
        OMGLoss((1.0, -1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="unknown LPIPS trunk"):
        build_lpips("resnet")


def test_offline_lpips_warns_once_and_says_so_in_its_label(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache
    monkeypatch.setattr(losses, "_WARNED", set())  # a fresh process
    assert not trunk_cached("alex")
    with pytest.warns(LpipsRandomTrunkWarning) as record:
        model, label = build_lpips("alex")
    assert len(record) == 1 and label == "LPIPS (alex, random trunk, offline)"
    with warnings.catch_warnings(record=True) as later:
        warnings.simplefilter("always")
        again, _ = build_lpips("alex")  # a second build in the same process (notebook 09 builds several): no repeat
    assert not [w for w in later if issubclass(w.category, LpipsRandomTrunkWarning)]
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    assert model(x, y, normalize=True).item() == again(x, y, normalize=True).item()  # the same fixed random trunk
    assert model(x, x, normalize=True).item() == 0.0
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "alexnet-owt-7be5be79.pth").touch()  # torchvision's file name for AlexNet
    assert trunk_cached("alex") and not trunk_cached("vgg")
