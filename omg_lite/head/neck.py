"""The neck's end ring: where a head sits on its shoulders.

The head model's neck ends in an open ring that clothes hide. A head posed by (psi, theta) stays
on its shoulders when its translation keeps that ring's centre where it was,

    t = c_ring(target) - c_ring(LBS(beta, psi, theta)),    c_ring(V) = mean_{i in ring} V_i

the rule the synthetic world uses to place its heads, the avatar's "neck" retargeting and the
tracking bench. The ring is the neck vertices within :data:`NECK_END_BAND` of the neck's lowest
point in the neutral pose.
"""

from __future__ import annotations

import torch
from torch import Tensor

NECK_END_BAND = 0.01  # metres: neck vertices this close to the neck's lowest point form its end ring


def neck_ring(neutral: Tensor, neck: Tensor) -> Tensor:  # [V, 3], [V] bool -> [R] vertex indices
    """The end ring of the neck ``neck`` (the head model's "neck" region) on the neutral mesh ``neutral``
    (the identity's vertices at zero expression, pose and translation; +y up)."""
    y = neutral[neck, 1]
    return neck.nonzero().squeeze(1)[y < y.min() + NECK_END_BAND]


def ring_translation(head, ring: Tensor, target: Tensor, shape: Tensor, expression: Tensor, pose: Tensor) -> Tensor:  # -> [M, 3]
    """t that puts the ring centre of the head posed by (shape, expression, pose) [M] at ``target`` [M or 1, 3]."""
    posed = head(shape, expression, pose, torch.zeros(shape.shape[0], 3, dtype=shape.dtype, device=shape.device)).vertices  # [M, V, 3]
    return target - posed[:, ring].mean(1)
