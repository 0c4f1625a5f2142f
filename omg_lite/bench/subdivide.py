"""``omg-lite bench subdivide``: the cost of Phi, x^{k+1} = U_k x^k, on the head's topology.

The topology (edges, faces, U_k) is built once per head (``precompute_ms``); per frame only
positions (C = 3) and features (C channels) are subdivided. One row per level k, each timing
level 0 -> k. ``gather_mean_ms`` times positions + features through the index-gather + mean
form of the same definition, x^{k+1} = [x^k, (x^k_i + x^k_j) / 2], which the sparse matmul beat.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from omg_lite.bench import Bench, time_ms
from omg_lite.geometry.subdivide import Subdivider
from omg_lite.head import load_head_model


def _gather_mean(sub: Subdivider, x: torch.Tensor, level: int) -> torch.Tensor:
    """x [B, V_0, C] -> [B, V_level, C] by gathering each edge's endpoints and averaging."""
    for k in range(level):
        e = sub.edges[k]
        x = torch.cat([x, 0.5 * (x.index_select(1, e[:, 0]) + x.index_select(1, e[:, 1]))], dim=1)
    return x


def _topology() -> tuple[str, torch.Tensor, torch.Tensor]:
    """(name, vertices [V, 3], faces [F, 3]) of the head model's mesh (the stand-in offline)."""
    head = load_head_model(None)
    return "standin head", head.v_template.float(), head.faces


@dataclass
class SubdivideBench(Bench):
    """Time Phi per level: topology precompute (once), then positions and C-channel features (per frame)."""

    # Feature channels C subdivided with the positions.
    channels: int = 32
    # Finest subdivision level K.
    levels: int = 2
    # Timed repetitions (the median is reported).
    repeat: int = 21

    name = "subdivide"

    def run(self) -> list[dict]:
        if self.channels < 1 or self.levels < 0 or self.repeat < 1:
            raise ValueError("bench subdivide: --channels and --repeat must be at least 1, --levels at least 0")
        mesh, verts, faces = _topology()
        V, C = verts.shape[0], self.channels
        x = verts[None]  # [1, V, 3]
        f = torch.randn(1, V, C)  # [1, V, C]

        def build(level: int) -> Subdivider:
            sub = Subdivider(faces, V, level)
            for k in range(level):
                sub.upsample_matrix(k)
            return sub

        rows = []
        for k in range(self.levels + 1):
            sub = build(k)
            rows.append(
                {
                    "mesh": mesh,
                    "level": k,
                    "vertices": sub.num_vertices[k],
                    "faces": sub.faces[k].shape[0],
                    "precompute_ms": time_ms(lambda: build(k), warmup=1, repeat=5),
                    "positions_ms": time_ms(lambda: sub(x, k), repeat=self.repeat),
                    f"features{C}_ms": time_ms(lambda: sub(f, k), repeat=self.repeat),
                    f"positions+features{C}_ms": time_ms(lambda: (sub(x, k), sub(f, k)), repeat=self.repeat),
                    "gather_mean_ms": time_ms(lambda: (_gather_mean(sub, x, k), _gather_mean(sub, f, k)), repeat=self.repeat),
                    "threads": torch.get_num_threads(),
                }
            )
        return rows
