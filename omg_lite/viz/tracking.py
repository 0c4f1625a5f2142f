"""Pictures of the tracker for notebook 02 (matplotlib): landmarks, the loss curve, the fitted
mesh over the photo.

Image coordinates are the camera module's pixels (u right, v down, pixel centres at +0.5), drawn
with ``imshow(extent=(0, W, H, 0))`` so a point at (u, v) lands where it projects. The mesh
overlay shades the fitted mesh's z-buffer (``geometry.zbuffer.rasterize``) with a headlight
Lambert term and blends it over the photo, so only the visible surface shows.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor

from omg_lite.geometry.camera import Camera
from omg_lite.geometry.zbuffer import rasterize
from omg_lite.viz import finish


def landmarks_figure(image: np.ndarray, points: np.ndarray, ibug68: np.ndarray, title: str = "") -> Figure:
    """image [H, W, 3], points [478, 2] (MediaPipe), ibug68 [68, 2]: the full mesh points and the iBUG subset."""
    H, W = image.shape[:2]
    fig, ax = plt.subplots(1, 2, figsize=(11, 5.5))
    for a in ax:
        a.imshow(image, extent=(0, W, H, 0))
        a.axis("off")
    ax[0].plot(points[:, 0], points[:, 1], ".", ms=1.5, color="c")
    ax[0].set_title(f"MediaPipe face mesh: {len(points)} points")
    ax[1].plot(ibug68[:, 0], ibug68[:, 1], ".", ms=5, color="lime")
    ax[1].set_title("the iBUG-68 subset used for fitting")
    lo, hi = points.min(0), points.max(0)
    pad = 0.35 * (hi - lo).max()
    for a in ax:
        a.set_xlim(lo[0] - pad, hi[0] + pad)
        a.set_ylim(hi[1] + pad, lo[1] - pad)
    return finish(fig, title=title)


def loss_curve_figure(losses: list[float], stage_ends: list[int]) -> Figure:
    """The fitting energy after each L-BFGS evaluation, with the stage boundaries."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.semilogy(np.arange(1, len(losses) + 1), losses)
    for end, name in zip(stage_ends, ("rigid", "full")):
        ax.axvline(end, color="0.6", ls="--")
        ax.text(end, max(losses), f" end of {name}", va="top", fontsize=8, color="0.4")
    ax.set_xlabel("energy evaluation")
    ax.set_ylabel("E (normalised)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def mesh_overlay(
    image: np.ndarray,  # [H, W, 3] uint8 or float in [0, 1]
    vertices: Tensor,  # [V, 3] world
    faces: Tensor,  # [F, 3]
    camera: Camera,  # one camera of the image's size
    alpha: float = 0.6,
) -> np.ndarray:  # [H, W, 3] float in [0, 1]
    """The visible surface of a mesh, shaded with a headlight, blended over the image."""
    img = np.asarray(image, dtype=np.float32)
    img = img / 255.0 if np.asarray(image).dtype == np.uint8 else img
    verts_cam = camera.world_to_camera(vertices[None].to(camera.K.dtype))
    with torch.no_grad():
        frags = rasterize(verts_cam, faces, camera.K, camera.height, camera.width)
        n = F.normalize(torch.cross(verts_cam[:, faces[:, 1]] - verts_cam[:, faces[:, 0]], verts_cam[:, faces[:, 2]] - verts_cam[:, faces[:, 0]], dim=-1), dim=-1)
        centre = verts_cam[:, faces].mean(2)  # [1, F, 3]
        shade = (n * F.normalize(centre, dim=-1)).sum(-1).abs()  # [1, F] |cos| between normal and view ray
    f = frags.face_idx[0]
    lit = torch.where(f >= 0, 0.25 + 0.75 * shade[0][f.clamp_min(0)], torch.zeros_like(f, dtype=shade.dtype)).numpy()
    mask = (f >= 0).numpy()[..., None]
    grey = np.repeat(lit[..., None], 3, -1) * np.array([0.75, 0.9, 1.0])
    return np.where(mask, (1 - alpha) * img + alpha * grey, img)


def fit_overlay_figure(image: np.ndarray, overlay: np.ndarray, detected: np.ndarray, fitted: np.ndarray, title: str = "") -> Figure:
    """image and overlay [H, W, 3]; detected and fitted iBUG points [68, 2]."""
    H, W = image.shape[:2]
    fig, ax = plt.subplots(1, 2, figsize=(11, 5.5))
    ax[0].imshow(image, extent=(0, W, H, 0))
    ax[0].plot(detected[:, 0], detected[:, 1], ".", ms=5, color="lime", label="detected")
    ax[0].plot(fitted[:, 0], fitted[:, 1], "x", ms=4, color="red", label="fitted model")
    ax[0].legend(loc="lower right", fontsize=8)
    ax[0].set_title("landmarks: detected vs fitted")
    ax[1].imshow(overlay, extent=(0, W, H, 0))
    ax[1].set_title("fitted mesh (z-buffer, shaded) over the photo")
    return finish(fig, ax, title)


def head_sliders(head, height: int = 480):
    """ipywidgets sliders for one identity coefficient beta_i, one expression coefficient psi_j and
    the jaw opening, moving the head's plotly mesh (``viz.mesh.head_mesh_figure``) in place.

    One ``go.FigureWidget`` is built once and its vertices updated on every change (no ``.show()``
    inside ``widgets.interactive``: under ``jupyter nbconvert --execute`` that output race stalled
    the kernel for minutes)."""
    import ipywidgets as widgets
    import plotly.graph_objects as go

    from omg_lite.viz.mesh import head_mesh_figure

    controls = dict(
        shape_i=widgets.Dropdown(options=[(n, i) for i, n in enumerate(head.shape_names)], value=0, description="shape"),
        beta_i=widgets.FloatSlider(value=0.0, min=-3, max=3, step=0.25, description="beta_i", continuous_update=False),
        expr_j=widgets.Dropdown(options=[(n, j) for j, n in enumerate(head.expression_names)], value=0, description="expression"),
        psi_j=widgets.FloatSlider(value=0.0, min=-3, max=3, step=0.25, description="psi_j", continuous_update=False),
        jaw=widgets.FloatSlider(value=0.0, min=0.0, max=0.4, step=0.02, description="jaw (rad)", continuous_update=False),
    )

    def posed() -> tuple[Tensor, Tensor, str]:  # vertices [V, 3], landmarks [K, 3], title
        c = {k: w.value for k, w in controls.items()}
        p = head.zeros(1)
        p.shape[0, c["shape_i"]] = c["beta_i"]
        p.expression[0, c["expr_j"]] = c["psi_j"]
        p.pose[0, 6] = c["jaw"]
        with torch.no_grad():
            o = head(p)
        name = (f"{head.shape_names[c['shape_i']]} = {c['beta_i']:+.1f}, {head.expression_names[c['expr_j']]} = {c['psi_j']:+.1f}, "
                f"jaw = {c['jaw']:.2f} rad")
        return o.vertices[0], o.landmarks[0], name

    v, lm, name = posed()
    fig = go.FigureWidget(head_mesh_figure(v, head.faces, landmarks=lm, title=name, height=height))

    def redraw(_=None) -> None:
        v, lm, name = posed()
        with fig.batch_update():
            for trace, pts in zip(fig.data, (v, lm)):
                trace.x, trace.y, trace.z = (pts[:, i].numpy().astype(float) for i in range(3))
            fig.layout.title = name

    for w in controls.values():
        w.observe(redraw, names="value")
    return widgets.VBox([widgets.HBox(list(controls.values())[:3]), widgets.HBox(list(controls.values())[3:]), fig])
