"""Image metrics (omg_lite.metrics): the face-region figures beside the whole-image ones.

Independent truths: a masked PSNR written as a loop over pixels here, a perturbation outside the
region that must leave the face PSNR unchanged, scikit-image's SSIM map averaged over the region,
the lpips package's own spatial map, and the head mask compared with the synthetic world's
ground-truth head mask.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity as sk_ssim

from omg_lite.metrics import ImageMetrics, composite, face_region, masked_psnr, psnr, ssim_map

ROOT = Path(__file__).resolve().parents[1]


def _pair(seed: int = 0, size: int = 48):
    g = torch.Generator().manual_seed(seed)
    truth = torch.rand(2, 3, size, size, generator=g)
    pred = (truth + 0.1 * torch.randn(2, 3, size, size, generator=g)).clamp(0, 1)
    mask = torch.zeros(2, 1, size, size)
    mask[0, :, 10:30, 12:36] = 1
    mask[1, :, 20:44, 4:20] = 1
    return pred, truth, mask


def test_face_psnr_is_a_brute_force_masked_psnr():
    pred, truth, mask = _pair()
    got = masked_psnr(pred, truth, mask)
    for b in range(2):
        se, n = 0.0, 0
        for y in range(48):
            for x in range(48):
                if mask[b, 0, y, x] > 0:
                    for c in range(3):
                        se += float(pred[b, c, y, x] - truth[b, c, y, x]) ** 2
                        n += 1
        assert float(got[b]) == pytest.approx(10 * math.log10(n / se), rel=1e-5)


def test_a_change_outside_the_face_leaves_face_psnr_unchanged():
    pred, truth, mask = _pair(1)
    m = ImageMetrics()
    before = m(pred, truth, mask)
    worse = torch.where(mask > 0, pred, 1 - pred)  # every pixel outside the region changed, none inside
    after = m(worse, truth, mask)
    torch.testing.assert_close(after["face_psnr"], before["face_psnr"])
    assert (after["psnr"] < before["psnr"] - 1).all()  # the whole-image figure sees it
    inside = torch.where(mask > 0, 1 - pred, pred)  # the same change inside the region only
    assert (m(inside, truth, mask)["face_psnr"] < before["face_psnr"] - 1).all()


def test_face_ssim_is_scikit_images_ssim_map_over_the_region():
    pred, truth, mask = _pair(2)
    got = ImageMetrics()(pred, truth, mask)["face_ssim"]
    for b in range(2):
        _, full = sk_ssim(pred[b].permute(1, 2, 0).numpy(), truth[b].permute(1, 2, 0).numpy(), channel_axis=2, gaussian_weights=True,
                          sigma=1.5, use_sample_covariance=False, data_range=1.0, full=True)
        want = full.mean(2)[mask[b, 0].numpy() > 0].mean()  # the regions stay 4+ px from the borders, where padding rules differ
        assert float(got[b]) == pytest.approx(float(want), abs=3e-3)
    ones = torch.ones_like(mask)
    torch.testing.assert_close(ssim_map(pred, truth).mean((1, 2, 3)), ImageMetrics()(pred, truth, ones)["ssim"], rtol=1e-5, atol=1e-6)


def test_face_lpips_averages_the_lpips_packages_spatial_map(lpips_reference):
    import lpips

    pred, truth, mask = _pair(3, 64)
    m = ImageMetrics()
    got = m(pred, truth, mask)
    pkg = lpips.LPIPS(net="squeeze", pnet_rand=True, spatial=True, verbose=False)
    pkg.load_state_dict(m.lpips.net.state_dict())
    with torch.no_grad():
        spatial = pkg.eval()(2 * pred - 1, 2 * truth - 1)  # [B, 1, H, W], the package's documented [-1, 1] inputs
    want = torch.stack([spatial[b, 0][mask[b, 0] > 0].mean() for b in range(2)])
    torch.testing.assert_close(got["face_lpips"], want, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got["lpips"], lpips_reference(m.lpips.net, "squeeze", pred, truth), rtol=1e-5, atol=1e-7)


def test_an_empty_region_has_no_face_scores():
    pred, truth, _ = _pair(4)
    got = ImageMetrics()(pred, truth, torch.zeros(2, 1, 48, 48))
    assert got["face_psnr"].isnan().all() and got["face_ssim"].isnan().all() and got["face_lpips"].isnan().all()
    assert torch.isfinite(got["psnr"]).all()


def test_composite_is_the_mask_blend():
    rgb, mask = torch.rand(1, 3, 4, 4), (torch.rand(1, 1, 4, 4) > 0.5).float()
    out = composite(rgb, mask, 0.25)
    assert torch.equal(out[mask.expand_as(out) > 0], rgb[mask.expand_as(rgb) > 0])
    assert (out[mask.expand_as(out) == 0] == 0.25).all()
    assert math.isinf(float(psnr(out, out)[0]))


def test_the_head_mask_matches_the_synthetic_worlds_true_head_mask():
    """On a synthetic clip the posed head mesh is the world's own: the region is its true head mask
    (synth writes head_mask/NNNN.png) less the neck, within the portrait mask."""
    from omg_lite.head import load_head_model
    from omg_lite.head.params import load_clip

    folder = ROOT / "data_samples" / "synth_128" / "id000"
    params, camera, _ = load_clip(folder / "params.npz")
    read = lambda kind: torch.from_numpy(np.asarray(Image.open(folder / kind / "0000.png").convert("L")) > 127)  # noqa: E731
    portrait, true_head = read("mask"), read("head_mask")
    head = load_head_model(n_shape=params.shape.shape[1], n_expr=params.expression.shape[1])
    region = face_region(head, params[0:1], camera[0:1], portrait[None, None].float())[0, 0] > 0
    assert region.sum() > 500  # a face, not a speck
    inside = (region & true_head).sum() / region.sum()
    assert inside > 0.97  # the region is head pixels (up to the outline's antialiasing and the hair)
    assert region.sum() < true_head.sum()  # the neck is left out
