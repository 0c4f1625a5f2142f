"""The global branch and Psi_offset (paper, Key Design 1: global features on the coarse mesh).

Each level-0 vertex i owns a learnable positional embedding E_i; the embeddings are the queries
of a stack of L transformer decoder layers that cross-attend to the encoder's tokens, once per
source image and only on the V_0 coarse vertices (5023 on FLAME, not the 79,936 of level 2):

    m        = LN(W_m [F_id; F_tok])                      memory, [B, 1 + T, D]
    x^0      = E                                          queries, [V_0, D]
    x^{l+1}  = y + MLP(LN(y)),   y = x^l + CrossAttn(LN(x^l), m)
    F^{GS_0}_global = LN(x^L)                             [B, V_0, D]

    CrossAttn(x, m) = W_o softmax((W_q x)(W_k m)^T / sqrt(d_h)) (W_v m)    (per head, d_h = D / heads)

There is no self-attention among the queries: its cost grows with V_0^2, the cross-attention's
only with V_0 T. The identity vector F_id (DINOv2's CLS token) rides along as one more token.

The vertex offsets that refine the tracked mesh come from the same features (Psi_offset),
bounded by tanh so that a fresh network starts near the tracked FLAME surface:

    T_p = T + B_S + B_P + B_E + Psi_offset(F^{GS_0}_global),
    Psi_offset(F) = delta_max tanh(MLP(F))                [B, V_0, 3], canonical space, metres
"""

from __future__ import annotations

import torch
import torch.nn.functional as Fn
from torch import Tensor, nn


class CrossAttention(nn.Module):
    """Multi-head attention of N queries to M memory tokens (scaled dot product)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"the attention width {dim} must be divisible by the number of heads {heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(
        self,
        x: Tensor,  # [B, N, D] queries
        m: Tensor,  # [B, M, D] memory
    ) -> Tensor:  # [B, N, D]
        B, N, D = x.shape
        h = self.heads
        q = self.q(x).reshape(B, N, h, D // h).transpose(1, 2)  # [B, h, N, d_h]
        k, v = self.kv(m).reshape(B, -1, 2, h, D // h).permute(2, 0, 3, 1, 4)  # 2 x [B, h, M, d_h]
        y = Fn.scaled_dot_product_attention(q, k, v)  # [B, h, N, d_h]
        return self.out(y.transpose(1, 2).reshape(B, N, D))


class DecoderLayer(nn.Module):
    """y = x + CrossAttn(LN(x), m);  x' = y + MLP(LN(y))  (pre-norm)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(
        self,
        x: Tensor,  # [B, N, D]
        m: Tensor,  # [B, M, D]
    ) -> Tensor:  # [B, N, D]
        x = x + self.attn(self.norm_q(x), m)
        return x + self.mlp(self.norm_mlp(x))


class GlobalBranch(nn.Module):
    """F^{GS_0}_global: V_0 learned vertex queries cross-attending to the encoder tokens."""

    def __init__(self, num_vertices: int, token_dim: int, dim: int, layers: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.queries = nn.Parameter(0.02 * torch.randn(num_vertices, dim))  # E, [V_0, D]
        self.memory = nn.Sequential(nn.Linear(token_dim, dim), nn.LayerNorm(dim))  # W_m then LN
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, mlp_ratio) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        tokens: Tensor,  # [B, T, C] encoder patch tokens F_tok
        identity: Tensor,  # [B, C] identity vector F_id
    ) -> Tensor:  # [B, V_0, D]
        m = self.memory(torch.cat([identity[:, None], tokens], 1))  # [B, 1 + T, D]
        x = self.queries.expand(tokens.shape[0], -1, -1)  # [B, V_0, D]
        for layer in self.layers:
            x = layer(x, m)
        return self.norm(x)


class OffsetHead(nn.Module):
    """Psi_offset(F) = delta_max tanh(MLP(F)): per-vertex offsets in canonical space."""

    def __init__(self, dim: int, max_offset: float):
        super().__init__()
        self.max_offset = max_offset
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 3))
        nn.init.normal_(self.mlp[-1].weight, std=1e-3)  # start near the tracked surface
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(
        self,
        F_global: Tensor,  # [B, V_0, D]
    ) -> Tensor:  # [B, V_0, 3]
        return self.max_offset * torch.tanh(self.mlp(F_global))
