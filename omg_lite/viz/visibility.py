"""Plots for the depth buffer, OAFF's visibility mask M and the shoulder mask M_s (notebooks 04, 05).

matplotlib for images, plotly for 3D, ipywidgets for the yaw slider. World axes are FLAME's
(+y up, the face towards +z, the portrait camera on +z), so 3D views start from the camera.
Image points are drawn with ``imshow(extent=(0, W, H, 0))``: a point at pixel coordinates
(u, v) lands where it projects (pixel centres at +0.5).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import plotly.graph_objects as go
from matplotlib import pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from plotly.subplots import make_subplots
from torch import Tensor

VISIBLE = "#2ca02c"  # M = 1
OCCLUDED = "#d62728"  # M = 0
MASKED = "rgb(170,170,170)"  # a vertex left with its global feature only


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def _image(x: Tensor | np.ndarray) -> np.ndarray:
    """[3, H, W] or [H, W, 3] (tensor or array) -> [H, W, 3] array for imshow."""
    img = _np(x)
    return img.transpose(1, 2, 0) if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3 else img


def _subset(n: int, max_points: int | None, seed: int = 0) -> np.ndarray:
    if max_points is None or n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def depth_panel(depth: Tensor, ax: Axes | None = None, title: str = "depth z (m)") -> Axes:  # depth [H, W], 0 = empty
    """The z-buffer as an image; empty pixels are left blank."""
    d = _np(depth).astype(float)
    d[d <= 0] = np.nan
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    H, W = d.shape
    im = ax.imshow(d, extent=(0, W, H, 0), cmap="viridis_r", interpolation="nearest")
    plt.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title)
    ax.set_axis_off()
    return ax


def visibility_overlay(
    image: Tensor | np.ndarray,  # [3, H, W] or [H, W, 3]
    uv: Tensor,  # [V, 2] pixel coordinates of the vertices
    M: Tensor,  # [V] bool visibility
    ax: Axes | None = None,
    title: str = "",
    point_size: float = 1.0,
    show: str = "both",
) -> Axes:
    """The portrait with its vertices where they project: visible green, occluded red.

    ``show`` is "both" (occluded drawn over visible), "visible" or "occluded".
    """
    if show not in ("both", "visible", "occluded"):
        raise ValueError(f"show must be 'both', 'visible' or 'occluded', got {show!r}")
    img = _image(image)
    H, W = img.shape[:2]
    uv, M = _np(uv), _np(M).astype(bool)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(img, extent=(0, W, H, 0), interpolation="nearest")
    if show in ("both", "visible"):
        ax.scatter(uv[M, 0], uv[M, 1], s=point_size, c=VISIBLE, linewidths=0)
    if show in ("both", "occluded"):
        ax.scatter(uv[~M, 0], uv[~M, 1], s=point_size, c=OCCLUDED, linewidths=0)
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_title(title)
    ax.set_axis_off()
    return ax


def _scene_views(fig: go.Figure, eyes: list[dict]) -> None:
    hidden = dict(visible=False)
    for k, eye in enumerate(eyes):
        name = "scene" if k == 0 else f"scene{k + 1}"
        fig.layout[name].update(aspectmode="data", camera=dict(eye=eye, up=dict(x=0, y=1, z=0)), xaxis=hidden, yaxis=hidden, zaxis=hidden)
    fig.update_layout(height=420, margin=dict(l=0, r=0, t=40, b=0), showlegend=False)


def _cloud(points: np.ndarray, colors, size: float) -> go.Scatter3d:
    return go.Scatter3d(
        x=points[:, 0], y=points[:, 1], z=points[:, 2], mode="markers", marker=dict(size=size, color=colors), hoverinfo="skip"
    )


def visibility_cloud(
    points: Tensor,  # [V, 3] world
    M: Tensor,  # [V] bool
    max_points: int | None = None,
    marker_size: float = 1.5,
) -> go.Figure:
    """The vertices in 3D, visible green and occluded red, seen from the camera and from the other side."""
    p, m = _np(points), _np(M).astype(bool)
    keep = _subset(len(p), max_points)
    p, m = p[keep], m[keep]
    colors = np.where(m, VISIBLE, OCCLUDED)
    fig = make_subplots(rows=1, cols=2, specs=[[{"type": "scene"}] * 2], subplot_titles=["from the camera", "from behind"])
    fig.add_trace(_cloud(p, colors, marker_size), row=1, col=1)
    fig.add_trace(_cloud(p, colors, marker_size), row=1, col=2)
    _scene_views(fig, [dict(x=0, y=0, z=1.8), dict(x=0, y=0, z=-1.8)])
    return fig


def masking_clouds(
    points: Tensor,  # [V, 3] world
    colors: Tensor | np.ndarray,  # [V, 3] in [0, 1], the sampled local "features" (here colours)
    M: Tensor,  # [V] bool
    max_points: int | None = None,
    marker_size: float = 1.5,
    eye: tuple[float, float, float] = (1.6, 0.2, -0.8),
) -> go.Figure:
    """Sampled colours on the head without the mask (F_local) and with it (F_local * M, grey where M = 0)."""
    p, c, m = _np(points), np.clip(_np(colors), 0, 1), _np(M).astype(bool)
    keep = _subset(len(p), max_points)
    p, c, m = p[keep], c[keep], m[keep]
    rgb = [f"rgb({r},{g},{b})" for r, g, b in np.round(c * 255).astype(int)]
    masked = [s if v else MASKED for s, v in zip(rgb, m)]
    titles = ["F_local (no mask)", "F_local * M (occluded: global only)"]
    fig = make_subplots(rows=1, cols=2, specs=[[{"type": "scene"}] * 2], subplot_titles=titles)
    fig.add_trace(_cloud(p, rgb, marker_size), row=1, col=1)
    fig.add_trace(_cloud(p, masked, marker_size), row=1, col=2)
    view = dict(x=eye[0], y=eye[1], z=eye[2])
    _scene_views(fig, [view, view])
    return fig


def yaw_explorer(
    compute: Callable[[float], tuple[Tensor, Tensor, Tensor]],  # yaw (deg) -> depth [H, W], uv [V, 2], M [V]
    yaw_range: tuple[int, int] = (-60, 60),
    step: int = 5,
    initial: int = 30,
):
    """A slider over the head's yaw: the z-buffer, then the visible and the occluded vertices in two
    panels of their own (drawn together, the interleaved red and green points are hard to read).
    Returns the ``widgets.interactive`` (a widget, so nothing else is printed)."""
    import ipywidgets as widgets

    def draw(yaw: float) -> None:
        depth, uv, M = compute(float(yaw))
        fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
        depth_panel(depth, axes[0], f"z-buffer, yaw {yaw:+.0f} deg")
        shade = np.where(_np(depth)[..., None] > 0, 0.85, 1.0) * np.ones((*depth.shape, 3))
        M = _np(M).astype(bool)
        visibility_overlay(shade, uv, M, axes[1], f"visible (M = 1): {M.mean():.0%} of the vertices", show="visible")
        visibility_overlay(shade, uv, M, axes[2], f"occluded (M = 0): {(~M).mean():.0%}", show="occluded")
        plt.show()

    slider = widgets.IntSlider(value=initial, min=yaw_range[0], max=yaw_range[1], step=step, description="yaw (deg)",
                               continuous_update=False)
    return widgets.interactive(draw, yaw=slider)


def mask_panels(panels: dict[str, Tensor | np.ndarray], size: float = 2.6) -> Figure:
    """A row of images (masks as black / white), titled by their keys."""
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size + 0.4))
    for ax, (title, img) in zip(np.atleast_1d(axes), panels.items()):
        a = _image(img)
        ax.imshow(a.astype(float) if a.dtype == bool else a, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def mask_errors(
    predicted: Tensor,  # [H, W] bool
    truth: Tensor,  # [H, W] bool
    ax: Axes | None = None,
    title: str = "",
) -> Axes:
    """Agreement of two masks: both on white, only predicted red, only truth blue."""
    p, t = _np(predicted).astype(bool), _np(truth).astype(bool)
    img = np.zeros((*p.shape, 3))
    img[p & t] = 1.0
    img[p & ~t] = (0.9, 0.15, 0.15)
    img[~p & t] = (0.2, 0.4, 1.0)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(img, interpolation="nearest")
    ax.set_title(title or "white: both, red: only M_s, blue: only the truth", fontsize=9)
    ax.set_axis_off()
    return ax


def shoulder_points_figure(
    head_points: Tensor,  # [V, 3] world
    shoulder_points: Tensor,  # [N_s, 3] world, p^_s
    normals: Tensor,  # [N_s, 3] world, n_s
    max_points: int | None = 4000,
    normal_length: float = 0.03,
    normals_drawn: int = 60,
) -> go.Figure:
    """The head and the shoulder points on their image-aligned plane, with a few normals n_s."""
    h, s, n = _np(head_points), _np(shoulder_points), _np(normals)
    h = h[_subset(len(h), max_points)]
    s_keep = _subset(len(s), max_points)
    fig = go.Figure()
    fig.add_trace(_cloud(h, "rgb(120,120,200)", 1.2))
    fig.add_trace(_cloud(s[s_keep], "rgb(230,140,40)", 1.5))
    few = _subset(len(s), normals_drawn, seed=1)
    tips = s[few] + normal_length * n[few]
    xs, ys, zs = (np.stack([s[few, a], tips[:, a], np.full(len(few), np.nan)], 1).ravel() for a in range(3))
    fig.add_trace(go.Scatter3d(x=xs, y=ys, z=zs, mode="lines", line=dict(color="black", width=2), hoverinfo="skip"))
    _scene_views(fig, [dict(x=1.4, y=0.3, z=1.2)])
    return fig


def depth_histogram(values: Tensor, ax: Axes | None = None, title: str = "", xlabel: str = "") -> Axes:  # values [N]
    """A histogram of a set of depths or depth differences (metres)."""
    v = _np(values).ravel()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    ax.hist(v, bins=40, color="tab:orange")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    return ax

