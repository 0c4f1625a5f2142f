"""Interactive head meshes (plotly) for the notebooks: surface, regions, landmarks, joints.

World axes are FLAME's (+y up, the face looks towards +z); the scene's camera starts in front
of the face with +y up.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from torch import Tensor

# Colours of the head model's vertex regions (later names paint over earlier ones).
REGION_COLOURS = {
    "face": (0.87, 0.70, 0.60),
    "neck": (0.84, 0.67, 0.57),
    "ears": (0.85, 0.66, 0.56),
    "scalp": (0.33, 0.23, 0.16),
    "nose": (0.88, 0.69, 0.59),
    "lips": (0.74, 0.40, 0.40),
    "brows": (0.30, 0.20, 0.14),
    "mouth_interior": (0.35, 0.08, 0.08),
    "eyeballs": (0.95, 0.95, 0.95),
    "irises": (0.30, 0.45, 0.60),
    "pupils": (0.05, 0.05, 0.05),
}
SKIN = (0.87, 0.70, 0.60)


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def region_colours(regions: dict[str, Tensor | np.ndarray]) -> np.ndarray:
    """Per-vertex RGB [V, 3] in [0, 1] from a head model's ``regions`` (skin where none applies)."""
    if not regions:
        raise ValueError("region_colours needs at least one region mask")
    V = len(_np(next(iter(regions.values()))))
    colours = np.tile(np.asarray(SKIN, dtype=float), (V, 1))
    for name, rgb in REGION_COLOURS.items():
        if name in regions:
            colours[_np(regions[name]).astype(bool)] = rgb
    return colours


def head_mesh_figure(
    vertices: Tensor | np.ndarray,  # [V, 3]
    faces: Tensor | np.ndarray,  # [F, 3]
    vertex_colours: np.ndarray | None = None,  # [V, 3] in [0, 1]
    landmarks: Tensor | np.ndarray | None = None,  # [K, 3]
    joints: Tensor | np.ndarray | None = None,  # [J, 3]
    title: str | None = None,
    height: int = 520,
) -> go.Figure:
    """One interactive 3D view of a head mesh, optionally with landmarks (green) and joints (red)."""
    v, f = _np(vertices).astype(float), _np(faces).astype(int)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"vertices must be [V, 3] and faces [F, 3], got {v.shape} and {f.shape}")
    mesh = dict(x=v[:, 0], y=v[:, 1], z=v[:, 2], i=f[:, 0], j=f[:, 1], k=f[:, 2], name="head", flatshading=False)
    if vertex_colours is not None:
        c = np.round(np.clip(_np(vertex_colours), 0, 1) * 255).astype(int)
        mesh["vertexcolor"] = [f"rgb({r},{g},{b})" for r, g, b in c]
    else:
        mesh["color"] = "rgb(222,178,153)"
    traces = [go.Mesh3d(**mesh, lighting=dict(ambient=0.35, diffuse=0.8, specular=0.1, roughness=0.8), lightposition=dict(x=100, y=200, z=300))]
    for pts, colour, name in ((landmarks, "rgb(0,200,0)", "landmarks"), (joints, "rgb(220,0,0)", "joints")):
        if pts is not None:
            p = _np(pts)
            traces.append(go.Scatter3d(x=p[:, 0], y=p[:, 1], z=p[:, 2], mode="markers", marker=dict(size=3, color=colour), name=name))
    fig = go.Figure(traces)
    fig.update_layout(
        title=title,
        height=height,
        margin=dict(l=0, r=0, t=30 if title else 0, b=0),
        scene=dict(aspectmode="data", camera=dict(eye=dict(x=0.0, y=0.0, z=1.6), up=dict(x=0, y=1, z=0)), xaxis_visible=False, yaxis_visible=False, zaxis_visible=False),
    )
    return fig
