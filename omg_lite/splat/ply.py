"""Gaussians to and from ``.ply`` in the standard 3DGS layout, so avatars open in splat viewers.

One vertex per Gaussian, binary little-endian float32 properties, in this order:

    x, y, z                      mean (world, metres)
    nx, ny, nz                   zeros (unused, kept for the layout)
    f_dc_0, f_dc_1, f_dc_2       (f_k - 0.5) / SH_C0 for the first three feature channels, so that
                                 a viewer's colour 0.5 + SH_C0 f_dc is the feature's RGB
    f_rest_0 .. f_rest_{R-1}     zeros: no view-dependent colour (R = 45, the degree-3 layout
                                 viewers expect; ``sh_rest`` may pick 0, 9 or 24)
    opacity                      logit(o) = log(o / (1 - o)), o clamped to [1e-7, 1 - 1e-7]
    scale_0, scale_1, scale_2    log(s), s clamped below at 1e-8
    rot_0 .. rot_3               unit quaternion (w, x, y, z)
    feat_3 .. feat_{C-1}         the remaining feature channels, raw (viewers ignore them)

``write_ply`` writes atomically (a temporary file, then ``os.replace``); ``read_ply`` reads
binary little-endian files in this layout (``feat_*`` are optional: C = 3 without them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from omg_lite.io import atomic_file
from omg_lite.splat.project import SCALE_MIN

SH_C0 = 0.28209479177387814  # the degree-0 spherical harmonic, 1 / (2 sqrt(pi))
OPACITY_EPS = 1e-7


@dataclass
class PlyGaussians:
    """The Gaussians of one .ply file, flat (no batch dimension, no levels: not model.omg.GaussianSet)."""

    means: Tensor  # [N, 3]
    quats: Tensor  # [N, 4] (w, x, y, z)
    scales: Tensor  # [N, 3] linear
    opacities: Tensor  # [N]
    features: Tensor  # [N, C], C >= 3 (first 3 = RGB)


def _properties(C: int, sh_rest: int) -> list[str]:
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(sh_rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
            + [f"feat_{k}" for k in range(3, C)])


def write_ply(
    path: str | os.PathLike,
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4] (w, x, y, z), any non-zero norm
    scales: Tensor,  # [N, 3] linear
    opacities: Tensor,  # [N] in [0, 1]
    features: Tensor,  # [N, C], C >= 3
    sh_rest: int = 45,
) -> Path:
    """Write Gaussians as a 3DGS ``.ply`` (layout in the module docstring); returns the path."""
    if features.ndim != 2 or features.shape[1] < 3:
        raise ValueError(f"features must be [N, C] with C >= 3 (first 3 = RGB), got {list(features.shape)}")
    N, C = features.shape
    for name, x, shape in (("means", means, (N, 3)), ("quats", quats, (N, 4)), ("scales", scales, (N, 3)),
                           ("opacities", opacities, (N,))):
        if tuple(x.shape) != shape:
            raise ValueError(f"{name} must be {list(shape)} to match features [N, C] = {[N, C]}, got {list(x.shape)}")
    if sh_rest not in (0, 9, 24, 45):
        raise ValueError(f"sh_rest must be 0, 9, 24 or 45 (SH degree 0-3), got {sh_rest}")
    arrays = {k: v.detach().cpu().double().numpy() for k, v in
              dict(means=means, quats=quats, scales=scales, opacities=opacities, features=features).items()}
    for name, x in arrays.items():
        if not np.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or Inf")
    norms = np.linalg.norm(arrays["quats"], axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("quats has zero quaternion(s): a rotation needs a non-zero (w, x, y, z)")
    o = np.clip(arrays["opacities"], OPACITY_EPS, 1 - OPACITY_EPS)
    columns = ([arrays["means"], np.zeros((N, 3)), (arrays["features"][:, :3] - 0.5) / SH_C0, np.zeros((N, sh_rest)),
                np.log(o / (1 - o))[:, None], np.log(np.maximum(arrays["scales"], SCALE_MIN)),
                arrays["quats"] / norms, arrays["features"][:, 3:]])
    data = np.concatenate(columns, axis=1).astype("<f4")
    names = _properties(C, sh_rest)
    header = "\n".join(["ply", "format binary_little_endian 1.0", f"element vertex {N}"]
                       + [f"property float {n}" for n in names] + ["end_header"]) + "\n"

    path = Path(path)
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(np.ascontiguousarray(data).tobytes())
    return path


def read_ply(path: str | os.PathLike) -> PlyGaussians:
    """Read a binary little-endian 3DGS ``.ply`` (as written by ``write_ply`` or by 3DGS training)."""
    path = Path(path)
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise ValueError(f"{path} is not a .ply file")
        names, count, fmt = [], None, None
        while True:
            line = f.readline()
            if not line:
                raise ValueError(f"{path}: the header has no end_header line")
            words = line.decode("ascii").split()
            if words[:1] == ["end_header"]:
                break
            if words[:1] == ["format"]:
                fmt = words[1]
            elif words[:2] == ["element", "vertex"]:
                count = int(words[2])
            elif words[:1] == ["element"] and count is not None:
                raise ValueError(f"{path}: only a vertex element is supported, found {words[1]!r}")
            elif words[:1] == ["property"]:
                if words[1] != "float":
                    raise ValueError(f"{path}: property {words[-1]!r} is {words[1]}, expected float")
                names.append(words[2])
        if fmt != "binary_little_endian" or count is None:
            raise ValueError(f"{path}: expected a binary_little_endian vertex element, got format {fmt!r}")
        data = np.frombuffer(f.read(4 * len(names) * count), dtype="<f4").reshape(count, len(names))
    column = {n: i for i, n in enumerate(names)}
    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
                "rot_0", "rot_1", "rot_2", "rot_3"]
    missing = [n for n in required if n not in column]
    if missing:
        raise ValueError(f"{path}: not a 3DGS .ply, missing properties {missing}")
    extra = sorted((int(n[5:]), n) for n in names if n.startswith("feat_"))

    def take(*keys: str) -> Tensor:
        return torch.from_numpy(data[:, [column[k] for k in keys]].astype(np.float32))

    rgb = 0.5 + SH_C0 * take("f_dc_0", "f_dc_1", "f_dc_2")
    return PlyGaussians(
        means=take("x", "y", "z"),
        quats=take("rot_0", "rot_1", "rot_2", "rot_3"),
        scales=torch.exp(take("scale_0", "scale_1", "scale_2")),
        opacities=torch.sigmoid(take("opacity")[:, 0]),
        features=torch.cat([rgb, take(*(n for _, n in extra))], 1) if extra else rgb,
    )
