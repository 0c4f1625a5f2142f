"""Plot helpers for notebook 06 (Gaussian splatting): renders, projected ellipses, 3D
ellipsoids, Gaussians on a mesh, and the benchmark's scaling plot.

Pixels follow the camera module: (u, v) with v down and pixel centres at +0.5, drawn with
``imshow(extent=(0, W, H, 0))`` so that a point at (u, v) lands where it projects.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import torch
from matplotlib import pyplot as plt
from matplotlib.axes import Axes
from torch import Tensor

from omg_lite.geometry.camera import Camera
from omg_lite.splat.project import covariance3d, quat_to_rotmat


def to_rgb(
    image: Tensor,  # [C, H, W] (first 3 channels = RGB) or [1, H, W]
) -> np.ndarray:  # [H, W, 3] in [0, 1]
    """The first three channels as an RGB picture (one channel is shown grey)."""
    x = image.detach().float().cpu()
    if x.shape[0] < 3:
        x = x[:1].expand(3, -1, -1)
    return x[:3].permute(1, 2, 0).clamp(0, 1).numpy()


def show_images(
    images: list[Tensor],  # each [C, H, W]
    titles: list[str] | None = None,
    size: float = 3.0,
    cmap: str | None = None,
) -> plt.Figure:
    """Images side by side: RGB for C >= 3, a colour map (``cmap``, default grey) for one channel."""
    fig, axes = plt.subplots(1, len(images), figsize=(size * len(images), size), squeeze=False)
    for k, (ax, img) in enumerate(zip(axes[0], images)):
        H, W = img.shape[-2:]
        if img.shape[0] == 1:
            ax.imshow(img[0].detach().cpu().numpy(), cmap=cmap or "gray", extent=(0, W, H, 0))
        else:
            ax.imshow(to_rgb(img), extent=(0, W, H, 0))
        ax.set_title(titles[k] if titles else "")
        ax.axis("off")
    fig.tight_layout()
    return fig


def ellipse_outline(
    mean2d: Tensor,  # [2]
    cov2d: Tensor,  # [2, 2]
    k: float = 3.0,
    n: int = 100,
) -> np.ndarray:  # [n, 2]
    """The k-sigma ellipse {x : (x - mu)^T Sigma'^-1 (x - mu) = k^2} as a closed polyline."""
    t = torch.linspace(0, 2 * math.pi, n, dtype=torch.float64)
    L = torch.linalg.cholesky(cov2d.detach().double().cpu())
    pts = mean2d.detach().double().cpu() + k * torch.stack([t.cos(), t.sin()], 1) @ L.T
    return pts.numpy()


def plot_ellipses(
    ax: Axes,
    means2d: Tensor,  # [N, 2]
    covs2d: Tensor,  # [N, 2, 2]
    ks: tuple[float, ...] = (1.0, 2.0, 3.0),
    **style,
) -> None:
    """Draw the k-sigma ellipses of 2D Gaussians on an image axis."""
    style = {"color": "w", "lw": 0.8, **style}
    for mu, cov in zip(means2d, covs2d):
        for k in ks:
            pts = ellipse_outline(mu, cov, k)
            ax.plot(pts[:, 0], pts[:, 1], **style)


def conic_to_cov(
    conics: Tensor,  # [..., 3] (a, b, c) of Sigma'^-1
) -> Tensor:  # [..., 2, 2] Sigma'
    """Invert the conic back to the (dilated) 2D covariance Sigma'."""
    a, b, c = conics.unbind(-1)
    inv = torch.stack([a, b, b, c], -1).reshape(conics.shape[:-1] + (2, 2))
    return torch.linalg.inv(inv)


def sampled_cov2d(
    mean: Tensor,  # [3] world
    quat: Tensor,  # [4]
    scale: Tensor,  # [3]
    camera: Camera,  # batch 1
    n: int = 20000,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:  # [2], [2, 2]
    """Monte Carlo truth for EWA: project samples x ~ N(mu, Sigma) exactly; their mean and covariance."""
    g = torch.Generator().manual_seed(seed)
    M = quat_to_rotmat(quat.double()) * scale.double()  # R S
    x = mean.double() + torch.randn(n, 3, generator=g, dtype=torch.float64) @ M.T
    uv, _ = camera.to(dtype=torch.float64).project_world(x[None])
    return uv[0].mean(0), torch.cov(uv[0].T)


def ellipsoid_figure(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    colors: np.ndarray | None = None,  # [N, 3] in [0, 1]
    k: float = 2.0,
    camera: Camera | None = None,  # batch 1: drawn as a marker at its centre
    resolution: int = 16,
) -> go.Figure:
    """The k-sigma ellipsoids x = mu + k R S u (|u| = 1) of a few 3D Gaussians, in plotly."""
    th, ph = np.meshgrid(np.linspace(0, np.pi, resolution), np.linspace(0, 2 * np.pi, 2 * resolution))
    u = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1).reshape(-1, 3)
    rows, cols = th.shape
    faces = [(r * cols + c, r * cols + c + 1, (r + 1) * cols + c) for r in range(rows - 1) for c in range(cols - 1)]
    faces += [(r * cols + c + 1, (r + 1) * cols + c + 1, (r + 1) * cols + c) for r in range(rows - 1) for c in range(cols - 1)]
    i, j, kk = np.array(faces).T
    M = (quat_to_rotmat(quats.detach().double()) * scales.detach().double()[:, None, :]).numpy()  # [N, 3, 3]
    colors = np.full((len(means), 3), 0.6) if colors is None else colors
    fig = go.Figure()
    for n in range(len(means)):
        p = means[n].detach().double().numpy() + k * u @ M[n].T
        r, g, b = (np.clip(colors[n], 0, 1) * 255).astype(int)
        fig.add_trace(go.Mesh3d(x=p[:, 0], y=p[:, 1], z=p[:, 2], i=i, j=j, k=kk, color=f"rgb({r},{g},{b})",
                                opacity=0.6, name=f"Gaussian {n}"))
    if camera is not None:
        c = camera.centre[0].detach().double().numpy()
        fig.add_trace(go.Scatter3d(x=[c[0]], y=[c[1]], z=[c[2]], mode="markers+text", text=["camera"],
                                   marker=dict(size=4, color="black"), name="camera"))
    fig.update_layout(scene=dict(aspectmode="data", camera=dict(up=dict(x=0, y=1, z=0), eye=dict(x=0.6, y=0.4, z=1.6))),
                      margin=dict(l=0, r=0, t=30, b=0), height=420)
    return fig


def covariance_table(
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
) -> np.ndarray:  # [N, 3, 3]
    """Sigma = R S S^T R^T for printing next to the ellipsoids."""
    return covariance3d(quats.detach().double(), scales.detach().double()).numpy()


def mesh_gaussians(
    vertices: Tensor,  # [V, 3]
    faces: Tensor,  # [F, 3]
    colours: Tensor | np.ndarray,  # [V, 3] in [0, 1]
    size: float = 0.6,
    thickness: float = 0.3,
    opacity: float = 0.9,
) -> dict[str, Tensor]:
    """Flat Gaussians on a mesh's vertices (batch 1), for pictures: disks tangent to the surface.

    Each disk's normal is the vertex normal (area-weighted face normals); its radius is ``size``
    times the mean length of the vertex's edges and its thickness ``thickness`` times that.
    """
    v = vertices.detach().float()
    f = faces.long()
    face_n = torch.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]], dim=1)
    normals = torch.zeros_like(v).index_add_(0, f.reshape(-1), face_n.repeat_interleave(3, 0))
    normals = normals / normals.norm(dim=1, keepdim=True).clamp_min(1e-12)
    edges = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).reshape(-1)  # each edge once per face side
    lengths = (v[edges[0::2]] - v[edges[1::2]]).norm(dim=1).repeat_interleave(2)
    e = torch.zeros(len(v)).index_add_(0, edges, lengths) / torch.zeros(len(v)).index_add_(
        0, edges, torch.ones_like(lengths)).clamp_min(1)  # [V] mean edge length per vertex
    # the rotation taking +z to the normal n: q = normalise(1 + n_z, -n_y, n_x, 0)
    quats = torch.stack([1 + normals[:, 2], -normals[:, 1], normals[:, 0], torch.zeros_like(normals[:, 0])], 1)
    flipped = quats.norm(dim=1) < 1e-6  # n = -z: a half turn about x
    quats[flipped] = torch.tensor([0.0, 1.0, 0.0, 0.0])
    scales = torch.tensor([size, size, size * thickness]) * e[:, None]
    colours = torch.as_tensor(np.asarray(colours), dtype=torch.float32)
    return dict(
        means=v[None],
        quats=quats[None],
        scales=scales[None],
        opacities=torch.full((1, len(v)), opacity),
        features=colours[None],
    )


def scaling_figure(rows: list[dict]) -> plt.Figure:
    """Time against blended pairs (log-log), one colour per N, one marker per S, with the
    least-squares fit time = a N + b pairs drawn for each N (a per Gaussian, b per pair)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    sizes = sorted({r["S"] for r in rows})
    markers = dict(zip(sizes, "os^dv"))
    A = np.array([[r["N"], r["pairs"]] for r in rows], dtype=float)
    (a, b), *_ = np.linalg.lstsq(A, np.array([r["ms"] for r in rows], dtype=float), rcond=None)
    for n in sorted({r["N"] for r in rows}):
        pts = [(r["pairs"], r["ms"], r["S"]) for r in rows if r["N"] == n]
        xs = np.geomspace(min(p for p, _, _ in pts), max(p for p, _, _ in pts), 20)
        line = ax.plot(xs, a * n + b * xs, "--", lw=1)[0]
        for p, t, size in pts:
            ax.plot(p, t, markers[size], color=line.get_color(), label=f"N={n:,}" if size == sizes[0] else None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Gaussian-pixel pairs blended")
    ax.set_ylabel(f"{rows[0]['pass']} time (ms)")
    ax.set_title(f"fit (dashed): {a * 1e3:.2f} us per Gaussian + {b * 1e6:.0f} ns per pair\n"
                 + "markers: " + ", ".join(f"{markers[size]} S={size}" for size in sizes), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
