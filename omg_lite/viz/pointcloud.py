"""Point clouds per level of detail (plotly) and projections drawn over a portrait (matplotlib).

Used by notebook 03 (subdivision and projective sampling). World axes are FLAME's (+y up, the
face looks towards +z), so the 3D views start from the front with +y up. Image coordinates are
the camera module's pixels: (u, v) with v down and pixel centres at +0.5, drawn with
``imshow(extent=(0, W, H, 0))`` so that a point at (u, v) lands where it projects.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch
from matplotlib import pyplot as plt
from matplotlib.axes import Axes
from plotly.subplots import make_subplots
from torch import Tensor


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def features_to_rgb(
    features: Tensor,  # [V, C]
) -> np.ndarray:  # [V, 3] in [0, 1]
    """Colours for per-vertex features: C = 3 is read as RGB, wider features by their first
    three principal components, each stretched between its 1st and 99th percentiles."""
    f = features.detach().float().cpu()
    if f.ndim != 2:
        raise ValueError(f"features must be [V, C], got shape {tuple(f.shape)}")
    if f.shape[1] == 3:
        return f.clamp(0, 1).numpy()
    f = f - f.mean(0)
    _, _, Vt = torch.linalg.svd(f, full_matrices=False)
    p = (f @ Vt[:3].T).numpy()  # [V, min(C, 3)]
    p = np.pad(p, ((0, 0), (0, 3 - p.shape[1])))
    lo, hi = np.percentile(p, 1, axis=0), np.percentile(p, 99, axis=0)
    return np.clip((p - lo) / np.maximum(hi - lo, 1e-12), 0, 1)


def _rgb_strings(colors: np.ndarray) -> list[str]:
    c = np.round(np.clip(colors, 0, 1) * 255).astype(int)
    return [f"rgb({r},{g},{b})" for r, g, b in c]


def lod_point_clouds(
    points: list[Tensor],  # K + 1 tensors [V_k, 3]
    colors: list[np.ndarray],  # K + 1 arrays [V_k, 3] in [0, 1]
    titles: list[str] | None = None,
    max_points: int | None = None,
    marker_size: float = 1.5,
    seed: int = 0,
) -> go.Figure:
    """One interactive 3D scene per level, side by side; ``max_points`` draws a random subset."""
    if len(points) != len(colors):
        raise ValueError(f"got {len(points)} point sets but {len(colors)} colour sets")
    titles = titles or [f"LOD {k}: {len(p)} vertices" for k, p in enumerate(points)]
    n = len(points)
    fig = make_subplots(rows=1, cols=n, specs=[[{"type": "scene"}] * n], subplot_titles=titles, horizontal_spacing=0.01)
    rng = np.random.default_rng(seed)
    for k, (p, c) in enumerate(zip(points, colors)):
        p, c = _np(p), np.asarray(c)
        if max_points is not None and len(p) > max_points:
            keep = rng.choice(len(p), max_points, replace=False)
            p, c = p[keep], c[keep]
        marker = dict(size=marker_size, color=_rgb_strings(c))
        trace = go.Scatter3d(x=p[:, 0], y=p[:, 1], z=p[:, 2], mode="markers", marker=marker, name=f"LOD {k}", hoverinfo="skip")
        fig.add_trace(trace, row=1, col=k + 1)
    front = dict(eye=dict(x=0, y=0, z=1.8), up=dict(x=0, y=1, z=0))
    hidden = dict(visible=False)
    fig.update_scenes(aspectmode="data", camera=front, xaxis=hidden, yaxis=hidden, zaxis=hidden)
    fig.update_layout(height=420, margin=dict(l=0, r=0, t=40, b=0), showlegend=False)
    return fig


def projection_overlay(
    image: Tensor | np.ndarray,  # [H, W, 3] in [0, 1] (or uint8)
    uv: Tensor,  # [V, 2] image pixel coordinates
    valid: Tensor | None = None,  # [V] bool
    colors: np.ndarray | None = None,  # [V, 3] in [0, 1]
    ax: Axes | None = None,
    title: str = "",
    point_size: float = 1.0,
) -> Axes:
    """The portrait with the projected points on it; invalid points (outside, behind) are red x."""
    img = _np(image)
    H, W = img.shape[:2]
    uv = _np(uv)
    ok = np.ones(len(uv), bool) if valid is None else _np(valid).astype(bool)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(img, extent=(0, W, H, 0), interpolation="nearest")
    ax.scatter(uv[ok, 0], uv[ok, 1], s=point_size, c=None if colors is None else np.asarray(colors)[ok], linewidths=0)
    bad = ~ok & np.isfinite(uv).all(1)
    if bad.any():
        ax.scatter(uv[bad, 0], uv[bad, 1], s=8 * point_size, c="red", marker="x", linewidths=0.5)
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_title(title)
    ax.set_axis_off()
    return ax


def density_patches(
    clouds: dict[str, Tensor],  # name -> [N, 3] world points (every one: no subsampling)
    camera,  # Camera, batch 1: the patches are squares of its image plane
    centres: dict[str, Tensor],  # patch name -> [3] world point at its centre
    half: float = 0.015,  # half side of a patch, world units (metres)
    depth: float = 0.03,  # front surface only: points at most this far behind the patch centre
    colours: dict[str, np.ndarray] | None = None,  # name -> [N, 3] in [0, 1]
) -> plt.Figure:
    """True density per level: every point of each cloud inside the same square patches (rows), seen by
    the camera, front surface only (within ``depth`` behind the patch centre), with the count in each title."""
    cam = {n: _np(camera.world_to_camera(p[None].float())[0]) for n, p in clouds.items()}
    fig, axes = plt.subplots(len(centres), len(clouds), figsize=(2.6 * len(clouds), 2.6 * len(centres)), squeeze=False)
    for i, (patch, c) in enumerate(centres.items()):
        cx, cy, cz = _np(camera.world_to_camera(c.reshape(1, 1, 3).float())[0, 0])
        for j, (name, p) in enumerate(cam.items()):
            inside = (np.abs(p[:, 0] - cx) < half) & (np.abs(p[:, 1] - cy) < half) & (p[:, 2] < cz + depth)
            ax = axes[i, j]
            col = None if colours is None else colours[name][inside]
            ax.scatter((p[inside, 0] - cx) * 1e3, (p[inside, 1] - cy) * 1e3, s=4, c=col, linewidths=0)
            ax.set_xlim(-half * 1e3, half * 1e3)
            ax.set_ylim(half * 1e3, -half * 1e3)  # image v down
            ax.set_aspect("equal")
            ax.set_title(f"{name}, {patch}: {int(inside.sum()):,}", fontsize=9)
            ax.tick_params(labelsize=7)
        axes[i, 0].set_ylabel("mm")
    fig.tight_layout()
    return fig
