"""Per-level Gaussian heads (paper, Sec. 3: head Gaussians anchored at the level-k vertices).

One small MLP per level k reads the fused feature of each level-k vertex and predicts the
attributes of the Gaussian anchored there (its mean is the vertex itself, so enactment only
moves vertices):

    c, o, s, r = Head_k(F^{GS_k}_h)

with the activations

    colour   c = raw                                     [B, N, C]  (C = 32; c[..., :3] = coarse RGB)
    opacity  o = sigmoid(raw)                            [B, N]
    scale    s = s_k softplus(raw + ln(e - 1))           [B, N, 3]  (s = s_k at raw = 0)
    rotation r = (raw + (1, 0, 0, 0)) / ||.||            [B, N, 4]  (w, x, y, z); identity at raw = 0

where s_k is the base size of level k: the mean edge length of the level-k template mesh, which
halves with every subdivision, so a fresh head covers the surface at every LOD. The shoulder
branch uses the same activations with its own base size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as Fn
from torch import Tensor, nn

# softplus(SOFTPLUS_ONE) = 1: a zero raw scale gives the base size.
SOFTPLUS_ONE = math.log(math.e - 1)


@dataclass
class GaussianAttributes:
    """Appearance of N Gaussians (the part enactment reuses; means live elsewhere)."""

    features: Tensor  # [B, N, C] colour features, first 3 = coarse RGB
    opacities: Tensor  # [B, N] in (0, 1)
    scales: Tensor  # [B, N, 3] linear, > 0
    quats: Tensor  # [B, N, 4] unit (w, x, y, z)

    @property
    def count(self) -> int:
        return self.features.shape[1]


def attribute_width(channels: int) -> int:
    """Raw outputs per Gaussian: C colour + 1 opacity + 3 scale + 4 rotation."""
    return channels + 1 + 3 + 4


def activate(
    raw: Tensor,  # [B, N, C + 8]
    base_scale: Tensor,  # [] or [B, N, 1] base size s_k
    channels: int,
) -> GaussianAttributes:
    """Split raw outputs into attributes and apply the activations of the module docstring."""
    c, o, s, r = raw.split([channels, 1, 3, 4], dim=-1)
    identity = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=r.dtype, device=r.device)
    return GaussianAttributes(
        features=c,
        opacities=torch.sigmoid(o[..., 0]),
        scales=base_scale * Fn.softplus(s + SOFTPLUS_ONE),
        quats=Fn.normalize(r + identity, dim=-1),
    )


class GaussianHead(nn.Module):
    """Head_k: LN -> Linear -> GELU -> Linear, then the activations."""

    def __init__(self, dim: int, hidden: int, channels: int):
        super().__init__()
        self.channels = channels
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, attribute_width(channels)))

    def forward(
        self,
        F_h: Tensor,  # [B, N, D] fused features of the level's vertices
        base_scale: Tensor,  # [] base size s_k of the level
    ) -> GaussianAttributes:
        return activate(self.mlp(F_h), base_scale, self.channels)
