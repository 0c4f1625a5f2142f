"""Pictures of the encoder's features for notebook 01 (matplotlib).

- PCA to RGB: the first three principal components of a feature map's C channels, each
  stretched between its 1st and 99th percentiles, shown as colours;
- local vs global: the cosine similarity of every local feature to one query pixel's feature,
  and of every patch token to the identity vector F_id (one vector for the whole image);
- the feature budget: unique samples of an s x s local map (s^2) against the vertex counts of
  the levels of detail (the paper: 296^2 = 87,616 samples for 79,936 vertices at level 2).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor

from omg_lite.viz import finish


def pca_rgb(feature_map: Tensor) -> np.ndarray:  # [C, h, w] -> [h, w, 3] in [0, 1]
    """The first three principal components of the channels, as colours."""
    if feature_map.ndim != 3:
        raise ValueError(f"pca_rgb expects a feature map [C, h, w], got {tuple(feature_map.shape)}")
    C, h, w = feature_map.shape
    x = feature_map.detach().float().cpu().reshape(C, -1).T  # [h w, C]
    x = x - x.mean(0)
    _, _, Vt = torch.linalg.svd(x, full_matrices=False)
    p = (x @ Vt[:3].T).numpy()
    p = np.pad(p, ((0, 0), (0, 3 - p.shape[1])))
    lo, hi = np.percentile(p, 1, axis=0), np.percentile(p, 99, axis=0)
    return np.clip((p - lo) / np.maximum(hi - lo, 1e-12), 0, 1).reshape(h, w, 3)


def token_grid(tokens: Tensor, grid: int) -> Tensor:  # [T, C] -> [C, grid, grid]
    """Patch tokens (row-major, T = grid^2) as a map."""
    T, C = tokens.shape
    if T != grid * grid:
        raise ValueError(f"{T} tokens do not make a {grid}x{grid} grid")
    return tokens.T.reshape(C, grid, grid)


def features_figure(image: Tensor, tokens: Tensor, local: Tensor, grid: int, title: str = "") -> Figure:
    """image [3, H, W] in [0, 1], tokens [T, C], local [C', h, w]: the image and both maps in PCA colours."""
    fig, ax = plt.subplots(1, 3, figsize=(12, 4.2))
    ax[0].imshow(image.permute(1, 2, 0).cpu().numpy())
    ax[0].set_title("input")
    ax[1].imshow(pca_rgb(token_grid(tokens, grid)), interpolation="nearest")
    ax[1].set_title(f"patch tokens F_tok ({grid}x{grid}, PCA)")
    ax[2].imshow(pca_rgb(local), interpolation="nearest")
    ax[2].set_title(f"local map F_local ({local.shape[-2]}x{local.shape[-1]}, PCA)")
    return finish(fig, ax, title)


def local_global_figure(image: Tensor, tokens: Tensor, identity: Tensor, local: Tensor, grid: int, query: tuple[float, float]) -> Figure:
    """Cosine similarity of local features to a query pixel (u, v in image pixels) and of the tokens to F_id.

    image [3, H, W], tokens [T, C], identity [C], local [C', h, w].
    """
    H, W = image.shape[-2:]
    u, v = query
    grid_uv = torch.tensor([[[[2 * u / W - 1, 2 * v / H - 1]]]], dtype=local.dtype)
    q = F.grid_sample(local[None], grid_uv, mode="bilinear", align_corners=False)[0, :, 0, 0]  # [C']
    sim_local = F.cosine_similarity(local, q[:, None, None], dim=0)
    sim_id = F.cosine_similarity(tokens, identity[None], dim=1).reshape(grid, grid)
    fig, ax = plt.subplots(1, 3, figsize=(12, 4.2))
    ax[0].imshow(image.permute(1, 2, 0).cpu().numpy(), extent=(0, W, H, 0))
    ax[0].plot([u], [v], "r+", ms=14, mew=2)
    ax[0].set_title("query pixel")
    im = ax[1].imshow(sim_local.detach().numpy(), extent=(0, W, H, 0), cmap="magma")
    ax[1].plot([u], [v], "c+", ms=14, mew=2)
    ax[1].set_title("local: cos(F_local(p), F_local(query))")
    fig.colorbar(im, ax=ax[1], fraction=0.046)
    im = ax[2].imshow(sim_id.detach().numpy(), extent=(0, W, H, 0), cmap="viridis", interpolation="nearest")
    ax[2].set_title("global: cos(F_tok, F_id)")
    fig.colorbar(im, ax=ax[2], fraction=0.046)
    return finish(fig, ax)


def feature_budget_figure(sizes: list[int], vertex_counts: dict[str, int]) -> Figure:
    """Unique local samples s^2 per map side s, against the vertex count of each level of detail."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    s = np.asarray(sizes)
    ax.plot(s, s**2, "o-", label="unique local samples s^2")
    for (name, n), colour in zip(vertex_counts.items(), ("C1", "C2", "C3", "C4")):
        ax.axhline(n, color=colour, ls="--", label=f"{name}: {n:,} vertices")
    ax.set_xlabel("local feature map side s (pixels)")
    ax.set_ylabel("count")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
