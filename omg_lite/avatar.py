"""One photo in, an animated multi-LOD avatar out (paper Sec. 3.4, "Real-time Enactment").

Reconstruction runs ONCE per source photo I_s (tracking, encoder, global branch, hierarchy,
Gaussian heads, shoulders; see ``omg_lite.model.omg``) and keeps the Gaussian set

    G = H_k U S,   H_k = {p_h, c, o, s, r} for every level k = 0..lod.

Enactment, per driving frame d, changes the head positions only:

    V_0 = LBS(T + B_S(beta_s) + B_P(theta_d) + B_E(psi_d) + o) + t_d,    p_h = Phi^k(V_0)
    F_r = Splat(H_k(p_h) U S, P),    I_c = F_r[:3],    I_r = I_c + R(F_r)

colour c, opacity o, scale s, rotation r and the shoulders S are reused as they are: no encoder,
no cross-attention, no Gaussian head runs per frame. ``avatar.lod = k`` picks another kept
level without reconstructing; only levels 0..lod of the reconstruction exist (reconstruct with
``lod=model.levels`` to switch freely).

Drivers and their placement live in ``omg_lite.drivers``, the network and its checkpoints in
``omg_lite.network``; the names notebooks and the README import from here stay importable here.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from omg_lite.device import pick_device, sync  # noqa: F401 - pick_device: a public name of this module
from omg_lite.drivers import (  # noqa: F401 - Driver, synthetic_path, save_synthetic_driver: public names of this module
    MAX_FRAMES, Driver, _track, load_driver, retarget, save_synthetic_driver, synthetic_path, track_config,
)
from omg_lite.geometry.camera import Camera, resize_camera
from omg_lite.head.params import HeadParams
from omg_lite.model.omg import GaussianSet, ModelOutput
from omg_lite.network import DATA_SAMPLES, DEFAULT_CHECKPOINT, AvatarModel  # noqa: F401 - DATA_SAMPLES, DEFAULT_CHECKPOINT: public names


@dataclass
class SourceFrame:
    """The one photo an avatar was reconstructed from, as the model saw it."""

    image: Tensor  # [1, 3, H, W] in [0, 1] (the portrait crop)
    mask: Tensor  # [1, 1, H, W] portrait mask M_p
    params: HeadParams  # [1] tracked (or known) source parameters
    camera: Camera  # [1] source view, H x W


class Avatar:
    """A reconstructed avatar: the Gaussian set G of every kept level, animated by positions only."""

    def __init__(self, net: AvatarModel, gaussians: GaussianSet, source: SourceFrame, seconds: dict[str, float] | None = None):
        self.net = net
        self.gaussians = gaussians  # levels 0..gaussians.lod, detached
        self.source = source
        self.seconds = dict(seconds or {})  # track / encoder / reconstruct, wall seconds
        self.lod = gaussians.lod
        self.fit = None  # the personalisation's FitReport, when this avatar is a personalised one

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_frame(cls, image, params: HeadParams, camera: Camera, mask, net: AvatarModel | None = None,
                   checkpoint: str | Path | None = None, lod: int | None = None) -> "Avatar":
        """Reconstruct from a frame with known parameters (a synthetic frame; no tracking).

        ``image`` [3, H, W] / [1, 3, H, W] float in [0, 1] or [H, W, 3] uint8; ``mask`` [H, W] portrait mask;
        ``camera`` the frame's H x W view. ``lod`` defaults to the model's finest level.
        """
        net = net or AvatarModel.load(checkpoint)
        image, mask = _image_tensor(image), _mask_tensor(mask)
        if image.shape[-2:] != (camera.height, camera.width) or mask.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"image {tuple(image.shape[-2:])}, mask {tuple(mask.shape[-2:])} and camera "
                             f"({camera.height}, {camera.width}) must have one size")
        lod = net.model.levels if lod is None else lod
        dev = net.device
        source = SourceFrame(image.to(dev), mask.to(dev), params[0:1].to(dev), camera[0:1].to(dev))
        return cls.reconstruct(net, source, lod, {})

    @classmethod
    def from_image(cls, photo, net: AvatarModel | None = None, checkpoint: str | Path | None = None,
                   lod: int | None = None) -> "Avatar":
        """Track a photo (path or [H, W, 3] array), crop it to the model's size, mask it, reconstruct."""
        from omg_lite.tracking.landmarks import to_rgb_uint8
        from omg_lite.tracking.portrait_mask import PortraitSegmenter
        from omg_lite.tracking.track import read_image

        net = net or AvatarModel.load(checkpoint)
        rgb = read_image(photo) if isinstance(photo, (str, Path)) else np.asarray(photo)
        cfg = track_config(net)
        t0 = time.perf_counter()
        r = _track(lambda: [rgb], cfg, net.head_model, video=False, role=f"source photo {photo if isinstance(photo, (str, Path)) else '(array)'}")
        crop, _ = r.crop.apply(to_rgb_uint8(rgb))
        with PortraitSegmenter() as seg:
            mask = seg(crop)
        seconds = {"track": time.perf_counter() - t0}
        lod = net.model.levels if lod is None else lod
        dev = net.device
        source = SourceFrame(_image_tensor(crop).to(dev), _mask_tensor(mask).to(dev), r.params.to(dev), r.camera.to(dev))
        return cls.reconstruct(net, source, lod, seconds)

    @classmethod
    @torch.no_grad()
    def reconstruct(cls, net: AvatarModel, source: SourceFrame, lod: int, seconds: dict | None = None) -> "Avatar":
        """Encoder + model reconstruction of a prepared source (timed, device synchronised)."""
        sync(net.device)
        t0 = time.perf_counter()
        enc = net.encode(source.image)
        sync(net.device)
        t1 = time.perf_counter()
        gs = net.model.reconstruct(enc, source.params, source.camera, source.mask, lod, keep_coarser=True)
        sync(net.device)
        seconds = {**(seconds or {}), "encoder": t1 - t0, "reconstruct": time.perf_counter() - t1}
        return cls(net, gs.detach(), source, seconds)

    # -- personalisation (omg_lite.personalize) -------------------------------------------------
    def personalize(self, steps: int | None = None, clip=None, settings=None, progress: bool = False) -> "Avatar":
        """A new avatar fitted to the source photo (and ``clip``, FitFrames of the same person); positions stay
        mesh-driven. On divergence it holds the feed-forward Gaussians and ``fit.diverged`` says why."""
        import dataclasses

        from omg_lite.personalize import FitSettings, fit, source_frames

        s = settings or FitSettings()
        s = s if steps is None else dataclasses.replace(s, steps=steps)
        gs, report = fit(self.net.model, self.gaussians, source_frames(self), clip, s, progress)
        avatar = Avatar(self.net, gs, self.source, self.seconds)
        avatar.lod, avatar.fit = self.lod, report
        return avatar

    def save(self, out: str | Path, overwrite: bool = False) -> Path:
        """Write this avatar as OUT/avatar.safetensors + OUT/avatar.json (``omg_lite.avatar_file.save_avatar``)."""
        from omg_lite.avatar_file import save_avatar

        return save_avatar(self, out, overwrite)

    @classmethod
    def load(cls, path: str | Path, net: AvatarModel) -> "Avatar":
        """Read a saved avatar; refused when it was made with another checkpoint or preset than ``net``."""
        from omg_lite.avatar_file import load_avatar

        return load_avatar(path, net)

    # -- level of detail -----------------------------------------------------------------------
    @property
    def lod(self) -> int:
        return self._lod

    @lod.setter
    def lod(self, k: int) -> None:
        if k not in self.gaussians.levels:
            raise ValueError(f"level of detail {k} is not available: this avatar was reconstructed up to level "
                             f"{self.gaussians.lod} and keeps {sorted(self.gaussians.levels)}")
        self._lod = int(k)

    @property
    def lods(self) -> list[int]:
        """The levels of detail this avatar keeps, 0..lod (``render(..., lod=k)`` takes any of them)."""
        return sorted(self.gaussians.levels)

    @property
    def levels(self) -> list[int]:
        """Deprecated: the old name of :attr:`lods`."""
        warnings.warn("Avatar.levels is deprecated: use Avatar.lods (the levels of detail kept)", DeprecationWarning, stacklevel=2)
        return self.lods

    def counts(self, lod: int | None = None) -> dict[str, int]:
        """Gaussians at a level: head (V_k), shoulder (valid ones) and total."""
        k = self.lod if lod is None else lod
        head = self.gaussians.num_head(k)
        s = self.gaussians.shoulders
        shoulder = 0 if s is None else int(s.valid.sum())
        return {"head": head, "shoulder": shoulder, "total": head + shoulder}

    @property
    def size(self) -> int:
        return self.source.camera.width

    def camera(self, size: int | None = None) -> Camera:
        """The source view at ``size`` pixels (default: the source's)."""
        return resize_camera(self.source.camera, size or self.size)

    # -- enactment ------------------------------------------------------------------------------
    def driving_params(self, driver, max_frames: int = MAX_FRAMES) -> HeadParams:
        """Per-frame parameters [M] that drive this avatar: the source's identity, the driver's motion
        (HeadParams are used as given, "absolute"; other drivers follow their own translation mode)."""
        d = load_driver(driver, self.net.head_model, track_config(self.net), max_frames)
        return retarget(self.net.head_model, self.source.params, d.params.to(self.net.device), d.translation)

    @torch.no_grad()
    def render(self, params: HeadParams, camera: Camera | None = None, lod: int | None = None) -> ModelOutput:
        """Render frames [M] of final parameters (see ``driving_params``); ``camera`` [1 or M], default the source view."""
        k = self.lod if lod is None else lod
        cam = self.camera() if camera is None else camera
        return self.net.model.render(self.gaussians, params.to(self.net.device), cam.to(self.net.device), k)

    def animate(self, driver, lod: int | None = None, size: int | None = None, refined: bool = True,
                progress: bool = False) -> Tensor:  # -> [M, 3, H, W] in [0, 1]
        """Render the avatar for every frame of a driver (HeadParams are used as given; others retargeted)."""
        from tqdm.auto import tqdm

        params = self.driving_params(driver)
        cam = self.camera(size)
        frames = []
        for m in tqdm(range(params.batch), desc=f"LOD {self.lod if lod is None else lod}", unit="frame", disable=not progress, leave=False):
            out = self.render(params[m], cam, lod)
            frames.append((out.refined if refined else out.coarse).clamp(0, 1).cpu())
        return torch.cat(frames)

    def positions(self, params: HeadParams, lod: int | None = None) -> Tensor:  # -> [M, N_h, 3]
        """Head Gaussian positions p_h = Phi^k(V_0) for final parameters."""
        with torch.no_grad():
            return self.net.model.head_positions(self.gaussians, params.to(self.net.device), self.lod if lod is None else lod)

    def export_ply(self, path: str | Path, lod: int | None = None, params: HeadParams | None = None) -> Path:
        """Write G = H_k U S (posed by ``params``, default the source) as a 3DGS .ply (``omg_lite.splat.ply``)."""
        from omg_lite.splat.ply import write_ply

        k = self.lod if lod is None else lod
        if k not in self.gaussians.levels:
            raise ValueError(f"level of detail {k} is not available: this avatar keeps {self.lods}")
        means = self.positions(self.source.params if params is None else params[0:1], k)[0]  # [N_h, 3]
        a = self.gaussians.levels[k]
        parts = [(means, a.quats[0], a.scales[0], a.opacities[0], a.features[0])]
        s = self.gaussians.shoulders
        if s is not None:
            v = s.valid[0]
            sa = s.attributes
            parts.append((s.means[0][v], sa.quats[0][v], sa.scales[0][v], sa.opacities[0][v], sa.features[0][v]))
        cat = [torch.cat([p[i] for p in parts]).float().cpu() for i in range(5)]
        return write_ply(path, *cat)


def _image_tensor(image) -> Tensor:  # -> [1, 3, H, W] float in [0, 1]
    x = torch.as_tensor(np.asarray(image)) if not isinstance(image, Tensor) else image
    if x.dtype == torch.uint8:
        if x.ndim != 3 or x.shape[-1] != 3:
            raise ValueError(f"a uint8 image must be [H, W, 3], got {tuple(x.shape)}")
        x = x.permute(2, 0, 1).float() / 255
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[:2] != (1, 3) or not x.is_floating_point():
        raise ValueError(f"image must be [3, H, W] float in [0, 1] or [H, W, 3] uint8, got {tuple(x.shape)} {x.dtype}")
    return x.float()


def _mask_tensor(mask) -> Tensor:  # -> [1, 1, H, W] float {0, 1}
    m = torch.as_tensor(np.asarray(mask)) if not isinstance(mask, Tensor) else mask
    while m.ndim < 4:
        m = m[None]
    if m.shape[:2] != (1, 1):
        raise ValueError(f"portrait mask must be [H, W], got {tuple(mask.shape)}")
    return (m.float() > 0.5).float()


def to_uint8(frames: Tensor) -> np.ndarray:  # [M, 3, H, W] in [0, 1] -> [M, H, W, 3] uint8
    return (frames.clamp(0, 1).permute(0, 2, 3, 1) * 255).round().to(torch.uint8).cpu().numpy()
