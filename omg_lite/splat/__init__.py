"""Gaussian splatting: ``render()`` with numba, reference and gsplat backends, EWA projection, .ply I/O.

See ``render.py`` for the conventions every backend shares.
"""

from omg_lite.splat.ply import PlyGaussians, read_ply, write_ply
from omg_lite.splat.project import Projection, project_gaussians
from omg_lite.splat.render import RenderOutput, render

__all__ = ["PlyGaussians", "Projection", "RenderOutput", "project_gaussians", "read_ply", "render", "write_ply"]
