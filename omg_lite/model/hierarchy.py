"""The coarse-to-fine hierarchy with occlusion-aware fusion (paper, Key Designs 1 and 2).

Global features are computed once on level 0 and carried up the levels with the vertices by
the subdivision operator Phi, after a per-level transform Psi_k:

    F^{GS_{k+1}}_global, V_{k+1} = Phi(Psi_k(F^{GS_k}_global), V_k),   Psi_k(F) = F + MLP_k(LN(F))

Local features are re-sampled at every level by projecting the level's vertices into the
source view (P) and reading the dense map F_local bilinearly, then brought to the width D:

    F^{GS_k}_local = W_local Sampling(P(V_k), F_local)              [B, V_k, D]

OAFF keeps the local feature only where the vertex is visible in the source view (M from the
z-buffer of the level-0 mesh, which every finer level lies on):

    F^{GS_k}_h = F^{GS_k}_global + F^{GS_k}_local * M^{GS_k}

Ablation switches remove exactly one term: without the global branch F_h = F_local * M (and no
Psi_k exist), without local features F_h = F_global (W_local does not exist), without the
visibility mask M = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from omg_lite.geometry.camera import Camera
from omg_lite.geometry.sampling import sample_features
from omg_lite.geometry.subdivide import Subdivider
from omg_lite.geometry.visibility import DepthBuffer, fuse


class LevelTransform(nn.Module):
    """Psi_k(F) = F + MLP_k(LN(F)), applied before subdividing level k's global features."""

    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, F: Tensor) -> Tensor:  # [B, V_k, D] -> [B, V_k, D]
        return F + self.mlp(F)


@dataclass
class Level:
    """One level of the source mesh and its fused features."""

    k: int
    vertices: Tensor  # [B, V_k, 3] world
    F_h: Tensor  # [B, V_k, D] fused features
    visible: Tensor  # [B, V_k] bool, M^{GS_k} (all true without the visibility mask)


class Hierarchy(nn.Module):
    """Psi_k for k < K, W_local, and the per-level fusion F_h = F_global + F_local * M."""

    def __init__(self, levels: int, dim: int, local_dim: int, use_global: bool, use_local: bool, use_visibility: bool, tol: float):
        super().__init__()
        self.use_visibility, self.tol = use_visibility, tol
        self.psi = nn.ModuleList(LevelTransform(dim) for _ in range(levels)) if use_global else None
        self.local = nn.Linear(local_dim, dim) if use_local else None

    def forward(
        self,
        sub: Subdivider,
        F_global: Tensor | None,  # [B, V_0, D] level-0 global features (None without the global branch)
        vertices: Tensor,  # [B, V_0, 3] world, the refined source mesh
        F_local: Tensor | None,  # [B, C', h, w] dense local map (None without local features)
        camera: Camera,  # the source view
        depth: DepthBuffer | None,  # z-buffer of the level-0 mesh in the source view (None: M = 1)
        levels: list[int],  # the levels to fuse, ascending
    ) -> list[Level]:
        out = []
        for k in range(levels[-1] + 1):
            if k > 0:
                vertices = sub.up(vertices, k - 1)
                if F_global is not None:
                    F_global = sub.up(self.psi[k - 1](F_global).float(), k - 1)  # Phi in float32, also under autocast
            if k in levels:
                out.append(self._fuse(k, F_global, vertices, F_local, camera, depth))
        return out

    def _fuse(self, k: int, F_global, vertices, F_local, camera, depth) -> Level:
        B, V = vertices.shape[:2]
        if depth is not None and self.use_visibility:
            M = depth.visible(camera.world_to_camera(vertices.detach()), self.tol)  # [B, V_k], z <= zhat (1 + tol)
        else:
            M = torch.ones(B, V, dtype=torch.bool, device=vertices.device)
        if F_local is None:
            return Level(k, vertices, F_global, M)
        sampled, _, _ = sample_features(F_local, vertices, camera)  # [B, V_k, C']
        local = self.local(sampled)  # [B, V_k, D]
        if F_global is None:
            return Level(k, vertices, local * M[..., None].to(local.dtype), M)
        return Level(k, vertices, fuse(F_global, local, M), M)
