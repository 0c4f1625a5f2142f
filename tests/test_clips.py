"""Reading clips at a size (omg_lite.clips): the one resize rule for frames, masks and intrinsics.

Independent truths: a point projected with the resized camera lands where the image scaling
sends it, K' = diag(S / W, S / H, 1) K by hand; the mask rule on hand-made 2x2 blocks; PIL's
own decoding of the committed frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from omg_lite.clips import read_clip, resize_frame, resize_mask
from omg_lite.geometry.camera import Camera

ROOT = Path(__file__).resolve().parents[1]


def test_resized_camera_projects_where_the_pixels_went():
    cam = Camera.frontal(batch=1, size=256)
    pts = torch.tensor([[[0.03, -0.02, 0.1], [-0.05, 0.04, 0.0]]])  # [1, 2, 3] world
    uv, _ = cam.project_world(pts)
    _, _, small = resize_frame(torch.zeros(1, 3, 256, 256), torch.zeros(1, 1, 256, 256), cam, 64)
    uv_small, _ = small.project_world(pts)
    torch.testing.assert_close(uv_small, uv * 64 / 256)
    assert (small.width, small.height) == (64, 64)


def test_the_mask_rule_keeps_pixels_more_than_half_on():
    m = torch.zeros(1, 1, 4, 4)
    m[0, 0, 0, 0:2] = 1  # top-left block: 2 of 4 on -> off
    m[0, 0, 0:2, 2:4] = 1
    m[0, 0, 1, 3] = 0  # top-right block: 3 of 4 on -> on
    m[0, 0, 2:4, 0:2] = 1  # bottom-left: 4 of 4 -> on
    assert resize_mask(m, 2)[0, 0].tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_read_clip_at_the_files_size_is_the_files():
    folder = ROOT / "data_samples" / "synth_128" / "id000"
    clip = read_clip(folder, 128, max_frames=2)
    for j in range(2):
        rgb = np.asarray(Image.open(folder / "rgb" / f"{j:04d}.png").convert("RGB"))
        mask = np.asarray(Image.open(folder / "mask" / f"{j:04d}.png").convert("L")) > 127
        assert np.array_equal((clip.rgb[j] * 255).round().byte().permute(1, 2, 0).numpy(), rgb)
        assert np.array_equal(clip.mask[j, 0].numpy() > 0.5, mask)
