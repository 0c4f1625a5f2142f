"""Personalisation: refine a feed-forward avatar on its own photo (and a short clip of the person).

The feed-forward reconstruction (paper Sec. 3, one pass of the encoder and the model) gives the
Gaussian set G = H_k U S of every kept level k. Personalisation optimises, per avatar, exactly
what enactment reuses, starting from those values:

    theta = { c_k, o_k, s_k, r_k (every kept level k),  o (canonical vertex offsets),  c_S, o_S, s_S (shoulders) }

(``FitSettings`` picks the groups; by default the colours c_k of every level and the shoulders'
colour, opacity and scale, the groups that measured best on held-out poses; see the README)
against target frames I_t (the source photo, plus the tracked frames of a clip when given) with
the paper's training loss (``omg_lite.train.losses.OMGLoss``) and a prior that keeps the avatar
close to what the network predicted, so that what one view cannot see stays as the network
guessed it and new poses stay stable:

    L(theta) = sum_t OMGLoss(I_c, I_r; I_t, o) + lambda_prior sum_g mean_g (theta_g - theta_g^ff)^2

Each attribute is optimised in the unconstrained space its activation maps from (colour as is,
logit opacity, log scale, unnormalised quaternion, o = delta_max tanh(u)), so opacities stay in
(0, 1), scales positive, rotations unit and offsets within delta_max, as the network's heads
guarantee. The refiner R and every network weight stay as trained (shared by all avatars).

Positions are never optimised: enactment stays position-only, p_h = Phi^k(LBS(...) + o), and
the shoulder means stay where reconstruction put them. Every kept level is fitted at once: step i
renders level k = i mod (K + 1), so each level gets 1 / (K + 1) of the steps and all share the
offsets; switching LOD afterwards needs no refit.

Frames of a clip tracked apart from the photo (``--video``) teach the head only: each one's render is replaced by its target outside the
frame's head region W (the tracked head's z-buffer mask, collar band left out, dilated by 1/16
of the image side to take in the hair around it), I' = W I + (1 - W) I_t. The torso's Gaussians
are fixed in the photo's world, and a clip tracked on its own (its own crop and camera) does not
put its torso where the photo's is; the photo alone teaches the torso.

Stopping: a step whose loss is NaN/Inf, or a loss that rises above ``diverge_ratio`` times its
starting value (averaged over a window, on the same targets: the photo's steps and the clip's
steps are judged apart, since a clip frame's loss starts at its own level), stops the fit; the
feed-forward avatar is kept and the report says so (``FitReport.diverged``).

Hand-written, not a library: the loop is an ordinary Adam loop over a handful of tensors; what is
specific is the parameterisation and the prior.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as Fn
from torch import Tensor

from omg_lite.geometry.camera import Camera
from omg_lite.head.params import HeadParams
from omg_lite.model.gaussian_heads import GaussianAttributes
from omg_lite.model.omg import GaussianSet

log = logging.getLogger(__name__)

EPS = 1e-4  # opacities are clamped to [EPS, 1 - EPS] before the logit, offsets to (1 - EPS) delta_max before atanh


@dataclass
class FitSettings:
    """How a personalisation fit runs (the defaults are what the README's figures use)."""

    # Adam steps in all (levels take turns: step i fits level i mod (K + 1)).
    steps: int = 60
    # Learning rate of each parameter group (in its unconstrained space).
    lr_features: float = 0.01
    lr_opacity: float = 0.01
    lr_scale: float = 0.003
    lr_rotation: float = 0.003
    lr_offsets: float = 0.003
    lr_shoulder: float = 0.01
    # Which groups are optimised (the others stay feed-forward).
    fit_geometry: bool = False  # opacity, scale, rotation of the head Gaussians
    fit_offsets: bool = False  # the canonical vertex offsets o
    fit_shoulders: bool = True  # colour, opacity, scale of the shoulder Gaussians
    # Loss weights (lambda1..lambda4 of the paper) and the prior's weight lambda_prior.
    loss_weights: tuple[float, float, float, float] = (10.0, 1.0, 0.1, 0.1)
    prior: float = 1.0
    lpips_net: str = "alex"
    # With clip frames: the share of steps that fit the source photo (the others draw a clip frame).
    source_share: float = 0.5
    # Stop (and keep the feed-forward avatar) when the loss, averaged over `window` steps, exceeds
    # diverge_ratio times its first window's average.
    diverge_ratio: float = 1.5
    window: int = 10
    seed: int = 0

    def check(self) -> "FitSettings":
        if self.steps < 1:
            raise ValueError(f"a personalisation fit needs at least 1 step, got {self.steps}")
        rates = {k: v for k, v in asdict(self).items() if k.startswith("lr_")}
        if any(not (math.isfinite(v) and v >= 0) for v in rates.values()) or self.prior < 0:
            raise ValueError(f"learning rates and the prior weight must be non-negative numbers, got {rates}, prior {self.prior}")
        on = (self.lr_features, self.fit_geometry * max(self.lr_opacity, self.lr_scale, self.lr_rotation),
              self.fit_offsets * self.lr_offsets, self.fit_shoulders * self.lr_shoulder)
        if max(on) <= 0:
            raise ValueError("nothing to fit: every parameter group is off or has a learning rate of 0")
        if not 0 <= self.source_share <= 1:
            raise ValueError(f"source_share must be in [0, 1], got {self.source_share}")
        return self


@dataclass
class FitFrames:
    """Target frames: images composited on the renderer's background, with the parameters that render them."""

    images: Tensor  # [M, 3, H, W] in [0, 1]
    params: HeadParams  # [M] final parameters (the avatar's identity, the frame's motion)
    camera: Camera  # [M] views at H x W
    weight: Tensor | None = None  # [M, 1, H, W] in [0, 1]: the pixels that teach (None: all of them)

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass
class FitReport:
    steps: int  # steps run
    losses: list[float]  # total loss per step
    levels: list[int]  # level fitted at each step
    seconds: float  # wall time
    cpu_seconds: float  # this process's CPU time (one torch thread: the wall time on a machine nobody else uses)
    diverged: str | None = None  # why the fit stopped early (the feed-forward avatar is kept), or None
    frames: int = 1  # target frames (source + clip frames)
    settings: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------ parameters


def _logit(o: Tensor) -> Tensor:
    return torch.logit(o.clamp(EPS, 1 - EPS))


class Parameters:
    """The unconstrained leaves theta of a Gaussian set, their feed-forward values and their groups."""

    def __init__(self, gs: GaussianSet, max_offset: float, s: FitSettings):
        self.gs, self.max_offset = gs, max_offset
        self.leaves: dict[str, Tensor] = {}
        self.groups: dict[str, float] = {}  # leaf name -> learning rate
        for k, a in gs.levels.items():
            self._add(f"features{k}", a.features, s.lr_features, True)
            self._add(f"opacity{k}", _logit(a.opacities), s.lr_opacity, s.fit_geometry)
            self._add(f"scale{k}", a.scales.log(), s.lr_scale, s.fit_geometry)
            self._add(f"rotation{k}", a.quats, s.lr_rotation, s.fit_geometry)
        u = torch.atanh((gs.offsets / max_offset).clamp(-1 + EPS, 1 - EPS))
        self._add("offsets", u, s.lr_offsets, s.fit_offsets)
        sh = gs.shoulders
        if sh is not None:
            a = sh.attributes
            self._add("shoulder_features", a.features, s.lr_shoulder, s.fit_shoulders)
            self._add("shoulder_opacity", _logit(a.opacities), s.lr_shoulder, s.fit_shoulders)
            self._add("shoulder_scale", a.scales.log(), s.lr_shoulder, s.fit_shoulders)
        self.initial = {k: v.detach().clone() for k, v in self.leaves.items()}

    def _add(self, name: str, value: Tensor, lr: float, on: bool) -> None:
        self.leaves[name] = value.detach().clone().float().requires_grad_(on and lr > 0)
        if on and lr > 0:
            self.groups[name] = lr

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([{"params": [self.leaves[k]], "lr": lr} for k, lr in self.groups.items()])

    def prior(self) -> Tensor:
        """sum_g mean_g (theta_g - theta_g^ff)^2 over the optimised groups."""
        return sum((self.leaves[k] - self.initial[k]).square().mean() for k in self.groups)

    def gaussians(self) -> GaussianSet:
        """The Gaussian set theta describes (positions as the feed-forward set has them)."""
        x, gs = self.leaves, self.gs
        levels = {k: GaussianAttributes(x[f"features{k}"], torch.sigmoid(x[f"opacity{k}"]), x[f"scale{k}"].exp(),
                                        Fn.normalize(x[f"rotation{k}"], dim=-1)) for k in gs.levels}
        sh = gs.shoulders
        if sh is not None:
            a = sh.attributes
            attrs = GaussianAttributes(x["shoulder_features"], torch.sigmoid(x["shoulder_opacity"]) * sh.valid, x["shoulder_scale"].exp(), a.quats)
            sh = sh.replace(attributes=attrs)
        return GaussianSet(gs.lod, levels, gs.source_means, self.max_offset * torch.tanh(x["offsets"]), gs.shape, sh)


# ------------------------------------------------------------------------------------ the fit


def fit(model, gs: GaussianSet, source: FitFrames, clip: FitFrames | None = None, settings: FitSettings | None = None,
        progress: bool = False) -> tuple[GaussianSet, FitReport]:
    """Personalise the Gaussian set ``gs`` of ``model`` (an OMGModel) on ``source`` (+ ``clip``) -> (fitted set, report).

    On divergence the returned set is ``gs`` itself (the feed-forward avatar) and ``report.diverged`` says why.
    """
    from tqdm.auto import tqdm

    from omg_lite.train.losses import OMGLoss

    s = (settings or FitSettings()).check()
    theta = Parameters(gs, model.cfg.max_offset, s)
    opt = theta.optimizer()
    loss_fn = OMGLoss(s.loss_weights, s.lpips_net).to(model.background.device)
    levels = sorted(gs.levels)
    gen = torch.Generator().manual_seed(s.seed)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    losses: list[float] = []
    fitted: list[int] = []
    history: dict[bool, list[float]] = {True: [], False: []}  # the losses of the photo's steps and of the clip's, apart
    diverged = None
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        with torch.enable_grad(), tqdm(range(s.steps), desc="personalize", unit="step", disable=not progress, leave=False) as bar:
            for i in bar:
                k = levels[i % len(levels)]
                frames = clip if clip is not None and torch.rand((), generator=gen) >= s.source_share else source
                j = int(torch.randint(len(frames), (), generator=gen))
                out = model.render(theta.gaussians(), frames.params[j : j + 1], frames.camera[j : j + 1], k)
                target, coarse, refined = frames.images[j : j + 1], out.coarse, out.refined
                if frames.weight is not None:  # I' = W I + (1 - W) I_t: only W's pixels teach
                    w = frames.weight[j : j + 1]
                    coarse, refined = (w * x + (1 - w) * target for x in (coarse, refined))
                terms = loss_fn(coarse, refined if model.cfg.use_refiner else None, target, out.offsets)
                loss = terms.total + s.prior * theta.prior()
                value = float(loss.detach())
                losses.append(value)
                fitted.append(k)
                history[frames is source].append(value)
                diverged = _diverged(history[frames is source], s, "" if frames is source else " on the clip's frames")
                if diverged:
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar.set_postfix(loss=f"{value:.4f}", lod=k)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    report = FitReport(len(losses), losses, fitted, time.perf_counter() - t0, time.process_time() - c0, diverged, len(source) + (len(clip) if clip else 0), asdict(s))
    if diverged:
        return gs, report
    with torch.no_grad():
        return theta.gaussians().detach(), report


def _diverged(losses: list[float], s: FitSettings, where: str = "") -> str | None:
    """Why to stop now (NaN/Inf, or a rising loss over these steps, all on the same targets), or None."""
    if not math.isfinite(losses[-1]):
        return f"the loss became {losses[-1]}{where} at its step {len(losses)}"
    w = s.window
    if len(losses) >= 2 * w:
        first, last = sum(losses[:w]) / w, sum(losses[-w:]) / w
        if last > s.diverge_ratio * first:
            return f"the loss rose{where} from {first:.4g} to {last:.4g} (mean over {w} steps) by its step {len(losses)}"
    return None


# ------------------------------------------------------------------------------------ targets


def source_frames(avatar) -> FitFrames:
    """The source photo as a target: I_t = M_p I_s + (1 - M_p) bg, at the source's parameters and view."""
    s = avatar.source
    bg = avatar.net.cfg.model.background
    return FitFrames(s.image * s.mask + bg * (1 - s.mask), s.params, s.camera)


def clip_frames(avatar, rgb: Tensor, mask: Tensor, params: HeadParams, camera: Camera, head_only: bool = False) -> FitFrames:
    """Frames of a clip of the same person (crops rgb [M, 3, H, W], masks [M, 1, H, W], tracked params and views [M])
    as targets: composited on the background, rendered with the avatar's identity beta_s and the frame's motion.
    ``head_only``: a clip tracked apart from the photo; its frames teach the head region only (the module docstring)."""
    from omg_lite.drivers import retarget

    from omg_lite.geometry.shoulders import head_mask
    from omg_lite.geometry.zbuffer import rasterize

    dev = avatar.net.device
    bg = avatar.net.cfg.model.background
    rgb, mask, camera = rgb.to(dev), mask.to(dev), camera.to(dev)
    final = retarget(avatar.net.head_model, avatar.source.params, params.to(dev), "absolute")
    if not head_only:
        return FitFrames(rgb * mask + bg * (1 - mask), final, camera)
    H, W = rgb.shape[-2:]
    with torch.no_grad():
        verts = avatar.net.head_model(final).vertices  # [M, V, 3]
        frags = rasterize(camera.world_to_camera(verts), avatar.net.head_model.faces, camera.K, H, W)
        r = max(1, H // 16)  # the hair around the head
        weight = Fn.max_pool2d(head_mask(frags, getattr(avatar.net.model, "collar", None))[:, None].float(), 2 * r + 1, 1, r)
    return FitFrames(rgb * mask + bg * (1 - mask), final, camera, weight)


def video_frames(avatar, video, max_frames: int, fit_frames: int) -> FitFrames:
    """Track a video of the person (one clip crop, as ``omg-lite track``), keep ``fit_frames`` valid frames spread
    evenly over it, mask them and make them targets (:func:`clip_frames`)."""
    import numpy as np

    from omg_lite.avatar import _image_tensor, _mask_tensor
    from omg_lite.drivers import _track, track_config
    from omg_lite.tracking.landmarks import to_rgb_uint8
    from omg_lite.tracking.portrait_mask import PortraitSegmenter
    from omg_lite.tracking.video import read_frames, video_info

    info = video_info(video)
    if info["frames"] > max_frames:
        raise ValueError(f"--video {video} has {info['frames']} frames, more than --max-frames {max_frames}: pass a larger --max-frames or a shorter clip")
    r = _track(lambda: read_frames(video, max_frames), track_config(avatar.net), avatar.net.head_model, video=True, role=f"clip {video}")
    valid = np.flatnonzero(r.valid)
    keep = set(valid[np.linspace(0, len(valid) - 1, min(fit_frames, len(valid))).round().astype(int)].tolist())
    crops, masks = [], []
    with PortraitSegmenter() as seg:
        for m, frame in enumerate(read_frames(video, max_frames)):
            if m in keep:
                crop, _ = r.crop.apply(to_rgb_uint8(frame))
                crops.append(_image_tensor(crop))
                masks.append(_mask_tensor(seg(crop)))
    idx = torch.as_tensor(sorted(keep))
    frames = clip_frames(avatar, torch.cat(crops), torch.cat(masks), r.params[idx], r.camera[idx], head_only=True)  # tracked apart from the photo
    warning = other_person(avatar.source.image, torch.cat(crops))
    if warning:
        warnings.warn(f"--video {video}: {warning}; fitting on it blends two people", OtherPersonWarning, stacklevel=2)
    return frames


class OtherPersonWarning(UserWarning):
    """The clip given for personalisation does not look like the person in the photo."""


def other_person(photo: Tensor, frames: Tensor) -> str | None:  # [1, 3, H, W], [M, 3, H, W] in [0, 1]
    """Why the frames look like someone else than the photo (median dlib distance >= 0.6, ``omg_lite.identity``),
    or None (same person, or no face to compare: then nothing is claimed)."""
    import numpy as np

    from omg_lite.avatar import to_uint8
    from omg_lite.identity import SAME_PERSON_DISTANCE, IdentityModel, IdentityModelMissing, distance

    try:
        model = IdentityModel()
    except IdentityModelMissing as e:
        log.warning("the clip's identity is not checked: %s", e)
        return None
    ref, emb = model.embed(to_uint8(photo)), model.embed(to_uint8(frames))
    if not ref.found[0] or not emb.found.any():
        return None
    d = float(np.median(distance(emb.vectors[emb.found], ref.vectors[:1])))
    return f"its faces are {d:.2f} from the photo's (dlib distance; >= {SAME_PERSON_DISTANCE} means another person)" if d >= SAME_PERSON_DISTANCE else None
