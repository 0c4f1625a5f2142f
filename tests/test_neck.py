"""The neck's end ring (omg_lite.head.neck): a hand-made ring, and the placement rule checked on the posed mesh."""

from __future__ import annotations

import torch

from omg_lite.head import load_head_model
from omg_lite.head.neck import NECK_END_BAND, neck_ring, ring_translation
from omg_lite.head.params import HeadParams


def test_the_ring_is_the_neck_band_above_its_lowest_point():
    y = torch.tensor([0.30, -0.10, -0.095, -0.05, -0.12, -0.115])  # vertex 4 is the lowest, but not on the neck
    neutral = torch.stack([torch.zeros(6), y, torch.zeros(6)], 1)
    neck = torch.tensor([False, True, True, True, False, True])
    lowest = min(float(y[i]) for i in range(6) if neck[i])  # -0.115
    want = [i for i in range(6) if neck[i] and float(y[i]) < lowest + NECK_END_BAND]
    assert neck_ring(neutral, neck).tolist() == want == [5]
    neutral[5, 1] = 0.5  # now -0.10 is the lowest neck point: -0.10 and -0.095 lie within 1 cm
    assert neck_ring(neutral, neck).tolist() == [1, 2]


def test_ring_translation_puts_the_ring_centre_on_its_target():
    head = load_head_model()
    g = torch.Generator().manual_seed(0)
    shape = 0.5 * torch.randn(1, head.n_shape, generator=g).expand(3, -1)
    expression, pose = 0.5 * torch.randn(3, head.n_expr, generator=g), 0.2 * torch.randn(3, 15, generator=g)
    ring = neck_ring(head(shape[:1]).vertices[0], head.regions["neck"])
    assert 3 < len(ring) < int(head.regions["neck"].sum())
    target = torch.tensor([[0.01, -0.02, 0.03]])
    t = ring_translation(head, ring, target, shape, expression, pose)
    placed = head(HeadParams(shape, expression, pose, t)).vertices[:, ring].mean(1)  # the posed, translated ring centres
    torch.testing.assert_close(placed, target.expand(3, -1), atol=1e-6, rtol=0)
