"""The synthetic renderer: head + torso through one z-buffer, Lambert shading, a background.

Head and torso are concatenated into one mesh (the torso's face indices offset by the head's
vertex count), so occlusion between them is exact, and each pixel's winning face tells which
mesh it shows:

    head mask   = face_idx in [0, F_head)         torso mask = face_idx in [F_head, F_head + F_torso)
    hair mask   = face_idx >= F_head + F_torso     (only with a hair shell, :mod:`.hair`)
    portrait    = head OR torso OR hair mask       depth = camera-space z (0 on the background)

Colour is shaded in linear light with a key light and an ambient term (Lambert):

    c_lin = albedo_lin * tint * (ambient + key * max(0, n . l)),   albedo_lin = albedo_srgb ^ 2.2

where n is the interpolated vertex normal, turned towards the camera (the meshes are open, so
inner faces can show), and l the unit direction towards the light, fixed in the world for a
clip. The colour image is rendered ``supersample`` times larger and box-filtered; masks and
depth come from a z-buffer at the output size, so they are exactly what the z-buffer gives there.
"""

from __future__ import annotations

import colorsys
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.nn import functional as nnf
from torch import Tensor

from omg_lite.geometry.camera import Camera
from omg_lite.geometry.zbuffer import rasterize

GAMMA = 2.2
BACKGROUND_KINDS = ("flat", "gradient", "noise")


@dataclass
class Light:
    """A clip's lighting: a directional key light plus ambient, in world axes."""

    direction: list[float]  # [3] unit vector towards the light
    key: float
    ambient: float
    tint: list[float]  # [3] colour of the light (multiplies the albedo)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Background:
    """A clip's backdrop: a flat colour, a linear gradient or smooth noise (sRGB)."""

    kind: str  # one of BACKGROUND_KINDS
    colours: list[list[float]]  # [C, 3]: 1 colour (flat), 2 (gradient ends) or a grid's cells (noise)
    angle: float = 0.0  # gradient direction, radians
    grid: int = 0  # noise: the colour grid is grid x grid, upsampled bicubically

    def to_dict(self) -> dict:
        return asdict(self)


def sample_light(rng: np.random.Generator) -> Light:
    """A key light from the front hemisphere (azimuth +-60 deg, elevation 0..50 deg)."""
    az, el = np.radians(rng.uniform(-60.0, 60.0)), np.radians(rng.uniform(0.0, 50.0))
    direction = [float(np.cos(el) * np.sin(az)), float(np.sin(el)), float(np.cos(el) * np.cos(az))]
    warmth = rng.uniform(-0.06, 0.06)
    return Light(
        direction=direction,
        key=float(rng.uniform(0.7, 1.0)),
        ambient=float(rng.uniform(0.2, 0.4)),
        tint=[1.0 + warmth, 1.0, 1.0 - warmth],
    )


def _random_colour(rng: np.random.Generator) -> list[float]:
    return list(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.5), rng.uniform(0.2, 0.95)))


def sample_background(rng: np.random.Generator) -> Background:
    kind = BACKGROUND_KINDS[int(rng.integers(len(BACKGROUND_KINDS)))]
    if kind == "flat":
        return Background(kind, [_random_colour(rng)])
    if kind == "gradient":
        return Background(kind, [_random_colour(rng), _random_colour(rng)], angle=float(rng.uniform(0, 2 * np.pi)))
    grid = int(rng.integers(3, 7))
    base = np.array(_random_colour(rng))
    cells = np.clip(base * rng.uniform(0.75, 1.25, (grid * grid, 1)) + rng.normal(0, 0.04, (grid * grid, 3)), 0, 1)
    return Background(kind, cells.tolist(), grid=grid)


def background_image(bg: Background, height: int, width: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The backdrop as an sRGB image [3, H, W]."""
    cols = torch.tensor(bg.colours, dtype=dtype)  # [C, 3]
    if bg.kind == "flat":
        return cols[0][:, None, None].expand(3, height, width).clone()
    if bg.kind == "gradient":
        ys = (torch.arange(height, dtype=dtype) + 0.5) / height - 0.5
        xs = (torch.arange(width, dtype=dtype) + 0.5) / width - 0.5
        s = (xs[None, :] * np.cos(bg.angle) + ys[:, None] * np.sin(bg.angle)) / np.sqrt(0.5) + 0.5  # [H, W] in [0, 1]
        return cols[0][:, None, None] + s.clamp(0, 1)[None] * (cols[1] - cols[0])[:, None, None]
    if bg.kind == "noise":
        grid = cols.T.reshape(1, 3, bg.grid, bg.grid)
        return nnf.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)[0].clamp(0, 1)
    raise ValueError(f"unknown background kind {bg.kind!r}; expected one of {BACKGROUND_KINDS}")


def vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:  # verts [B, V, 3], faces [F, 3] -> [B, V, 3]
    """Area-weighted vertex normals: the sum of the cross products of the faces around a vertex."""
    v0, v1, v2 = (verts[:, faces[:, k]] for k in range(3))  # [B, F, 3] each
    fn = torch.cross(v1 - v0, v2 - v0, dim=-1)  # [B, F, 3], length = 2 * area
    n = torch.zeros_like(verts)
    for k in range(3):
        n.index_add_(1, faces[:, k], fn)
    return nnf.normalize(n, dim=-1)


@dataclass
class Rendered:
    """B rendered frames: colour, the head / torso (/ hair) split of the portrait, and depth."""

    rgb: Tensor  # [B, 3, H, W] sRGB in [0, 1]
    head_mask: Tensor  # [B, H, W] bool
    torso_mask: Tensor  # [B, H, W] bool
    depth: Tensor  # [B, H, W] camera-space z, 0 on the background
    hair_mask: Tensor | None = None  # [B, H, W] bool, where the hair shell is the visible surface (None: no hair)

    @property
    def mask(self) -> Tensor:
        """[B, H, W] bool: the portrait (foreground) mask."""
        m = self.head_mask | self.torso_mask
        return m if self.hair_mask is None else m | self.hair_mask


def _scaled(camera: Camera, s: int) -> Camera:
    """The same view s times larger: pixel coordinates scale by s (u' = s u with pixel centres at +0.5)."""
    K = camera.K.clone()
    K[:, :2] *= s
    return Camera(K, camera.R, camera.t, camera.width * s, camera.height * s)


def render_portrait(
    head_verts: Tensor,  # [B, Vh, 3] world
    head_faces: Tensor,  # [Fh, 3]
    head_albedo: Tensor,  # [Vh, 3] sRGB
    torso_verts: Tensor,  # [Vt, 3] world
    torso_faces: Tensor,  # [Ft, 3]
    torso_albedo: Tensor,  # [Vt, 3] sRGB
    camera: Camera,  # B cameras
    light: Light,
    background: Background,
    supersample: int = 2,
    hair: tuple[Tensor, Tensor, Tensor] | None = None,  # verts [B, Vr, 3] world, faces [Fr, 3], albedo [Vr, 3] sRGB
) -> Rendered:
    """Render B frames of a head on its torso, with its hair shell if given (see the module docstring)."""
    B, Vh, _ = head_verts.shape
    if camera.batch != B:
        raise ValueError(f"render_portrait: {B} head meshes but {camera.batch} cameras")
    if supersample < 1:
        raise ValueError(f"render_portrait: supersample must be >= 1, got {supersample}")
    dtype, device = head_verts.dtype, head_verts.device
    verts = torch.cat([head_verts, torso_verts.to(device, dtype).expand(B, -1, -1)], 1)  # [B, V, 3]
    faces = torch.cat([head_faces.long(), torso_faces.long().to(head_faces.device) + Vh]).to(device)  # [F, 3]
    albedo = torch.cat([head_albedo, torso_albedo.to(head_albedo.device)]).to(device, dtype)  # [V, 3]
    Fh, Ft = head_faces.shape[0], torso_faces.shape[0]
    if hair is not None:  # appended last, so the head's and torso's face indices stay as they are without hair
        h_verts, h_faces, h_albedo = hair
        faces = torch.cat([faces, h_faces.long().to(device) + verts.shape[1]])
        verts = torch.cat([verts, h_verts.to(device, dtype)], 1)
        albedo = torch.cat([albedo, h_albedo.to(device, dtype)])

    verts_cam = camera.world_to_camera(verts)
    frags = rasterize(verts_cam, faces, camera.K, camera.height, camera.width)
    head_mask = (frags.face_idx >= 0) & (frags.face_idx < Fh)
    torso_mask = (frags.face_idx >= Fh) & (frags.face_idx < Fh + Ft)
    hair_mask = None if hair is None else frags.face_idx >= Fh + Ft

    big = _scaled(camera, supersample) if supersample > 1 else camera
    hi = rasterize(verts_cam, faces, big.K, big.height, big.width)
    normals_cam = vertex_normals(verts_cam, faces)
    n = nnf.normalize(hi.interpolate(normals_cam, faces), dim=-1)  # [B, H', W', 3]
    p = hi.interpolate(verts_cam, faces)  # [B, H', W', 3] surface points; the camera sits at 0
    n = torch.where((n * p).sum(-1, keepdim=True) > 0, -n, n)  # face the camera
    l_cam = camera.R @ torch.tensor(light.direction, dtype=dtype, device=device)  # [B, 3]
    lambert = (n * l_cam[:, None, None, :]).sum(-1).clamp_min(0)  # [B, H', W']
    a_lin = hi.interpolate(albedo.expand(B, -1, -1), faces).clamp(0, 1) ** GAMMA  # [B, H', W', 3]
    tint = torch.tensor(light.tint, dtype=dtype, device=device)
    shaded = (a_lin * tint * (light.ambient + light.key * lambert)[..., None]).clamp(0, 1) ** (1 / GAMMA)
    bg = background_image(background, big.height, big.width, dtype).to(device).permute(1, 2, 0)  # [H', W', 3]
    rgb = torch.where(hi.mask[..., None], shaded, bg)  # [B, H', W', 3]
    rgb = rgb.permute(0, 3, 1, 2)
    if supersample > 1:
        rgb = nnf.avg_pool2d(rgb, supersample)
    return Rendered(rgb.clamp(0, 1), head_mask, torso_mask, frags.depth * (frags.face_idx >= 0), hair_mask)
