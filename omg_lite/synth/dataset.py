"""Writing and reading synthetic portrait sets (``omg-lite synth``).

:func:`write_synth` draws N identities x M frames and writes them in the layout documented in
:mod:`omg_lite.synth`; :class:`SynthDataset` and :func:`load_frame` read them back as tensors.

Randomness: one ``numpy.random.SeedSequence(seed)`` spawns a generator per identity, and each
identity draws, in order, its shape, look, light, backdrop, shoulders, framing and then its
frames' expressions and poses. The same seed gives the same bytes; identity i does not depend on
how many identities are drawn. Per identity (a clip, like one portrait video): shape,
appearance, torso, light, background and framing are fixed; per frame: expression, jaw, neck,
global pose and gaze.

The head stays on its shoulders: the head model's neck ends in an open ring that the torso's
collar hides, so each frame's translation is chosen to keep the centroid of that ring where it
is in the neutral pose (plus the clip's framing offset), whatever the root and neck rotations.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.spatial.transform import Rotation
from tqdm.auto import tqdm

from omg_lite.config import Config
from omg_lite.geometry.camera import Camera
from omg_lite.head import head_from_config
from omg_lite.head.neck import neck_ring, ring_translation
from omg_lite.head.params import HeadParams, load_clip, save_clip
from omg_lite.io import check_output_folder, output_folder
from omg_lite.safe_load import folder_names
from omg_lite.synth.appearance import head_albedo, low_frequency, sample_appearance
from omg_lite.synth.hair import hair_shell, pose_shell, sample_hair
from omg_lite.synth.scene import render_portrait, sample_background, sample_light
from omg_lite.synth.torso import N_AROUND, N_RINGS, sample_torso, torso_albedo, torso_mesh

GENERATOR_VERSION = 1
MIN_SIZE = 32
MAX_SIZE = 2048
FRAME_KINDS = ("rgb", "mask", "head_mask", "torso_mask")
MARKER, WHAT = "meta.json", "a set written by omg-lite synth"  # see omg_lite.io.output_folder


def _clip_name(i: int) -> str:
    return f"id{i:03d}"


def _frame_name(j: int) -> str:
    return f"{j:04d}"


def _check_args(identities: int, frames: int, size: int, seed: int) -> None:
    if identities < 1:
        raise ValueError(f"--identities must be at least 1, got {identities}")
    if frames < 1:
        raise ValueError(f"--frames must be at least 1, got {frames}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"--size must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {size}")
    if seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {seed}")


def _rotvec(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Axis-angle [M, 3] of R = R_y(yaw) R_x(pitch) R_z(roll) (FLAME axes: y up, face +z)."""
    return Rotation.from_euler("YXZ", np.stack([yaw, pitch, roll], -1)).as_rotvec()


def _sample_frames(rng: np.random.Generator, frames: int, n_expr: int, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """Expressions [M, E] and poses [M, 15] (root, neck, jaw, eye L, eye R axis-angles)."""
    s = cfg.synth
    M = frames
    # a few components at a time, as real expressions are (all at once gives grimaces)
    active = rng.uniform(size=(M, n_expr)) < 0.25
    strength = rng.uniform(0.3, 1.0, (M, 1)) * s.expression_std
    expression = np.clip(rng.normal(0.0, 1.0, (M, n_expr)) * strength * active, -2.5 * s.expression_std, 2.5 * s.expression_std)
    # the head's orientation, split between the root and the neck joints
    total = np.stack(
        [
            np.radians(rng.uniform(-s.max_yaw_deg, s.max_yaw_deg, M)),
            np.radians(rng.uniform(-s.max_pitch_deg, s.max_pitch_deg, M)),
            np.radians(rng.uniform(-s.max_roll_deg, s.max_roll_deg, M)),
        ]
    )  # [3, M]
    neck_share = rng.uniform(0.0, 0.4, M)
    pose = np.zeros((M, 15))
    pose[:, 0:3] = _rotvec(*(total * (1 - neck_share)))
    pose[:, 3:6] = _rotvec(*(total * neck_share))
    open_mouth = rng.uniform(size=M) < 0.4  # most portraits keep the mouth (nearly) closed
    pose[:, 6] = np.where(open_mouth, s.max_jaw_rad * rng.uniform(0.0, 1.0, M), 0.03 * rng.uniform(0.0, 1.0, M))
    gaze = _rotvec(*np.radians(rng.uniform(-s.max_gaze_deg, s.max_gaze_deg, (2, M))), np.zeros(M))
    pose[:, 9:12] = gaze
    pose[:, 12:15] = gaze
    return expression, pose


def _write_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG")


def write_synth(
    out: str | Path,
    identities: int,
    frames: int,
    size: int,
    seed: int,
    overwrite: bool = False,
    cfg: Config | None = None,
    progress: bool = True,
) -> Path:
    """Render ``identities`` x ``frames`` portraits at ``size`` x ``size`` into the folder ``out``.

    The set is written into a temporary folder beside ``out`` and renamed into place at the end,
    so ``out`` never holds half a set. An existing non-empty ``out`` is refused unless
    ``overwrite`` (and even then only if it holds a synth set's ``meta.json``).
    """
    cfg = cfg or Config()
    _check_args(identities, frames, size, seed)
    if cfg.synth.supersample < 1 or cfg.synth.batch_frames < 1:
        raise ValueError("synth.supersample and synth.batch_frames must be at least 1")
    out = Path(out)
    check_output_folder(out, overwrite, MARKER, WHAT)  # before the head model is read
    head = head_from_config(cfg.head)
    with output_folder(out, overwrite, MARKER, WHAT) as tmp:
        seeds = np.random.SeedSequence(seed).spawn(identities)
        with tqdm(total=identities * frames, unit="frame", desc="synth", disable=not progress) as bar:
            for i in range(identities):
                _write_clip(tmp / _clip_name(i), head, np.random.default_rng(seeds[i]), frames, size, cfg, bar)
        meta = {
            "generator": "omg_lite.synth",
            "version": GENERATOR_VERSION,
            "seed": seed,
            "identities": identities,
            "frames": frames,
            "size": size,
            "clips": [_clip_name(i) for i in range(identities)],
            "head_model": {
                "source": head.source,
                "n_shape": int(head.n_shape),
                "n_expr": int(head.n_expr),
                "n_vertices": int(head.num_vertices),
                "n_faces": int(head.num_faces),
            },
            "torso": {"n_vertices": N_RINGS * N_AROUND, "n_faces": 2 * (N_RINGS - 1) * N_AROUND},
            "camera": asdict(cfg.camera),
            "synth": asdict(cfg.synth),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


@torch.no_grad()
def _write_clip(clip: Path, head, rng: np.random.Generator, frames: int, size: int, cfg: Config, bar) -> None:
    """Draw one identity and render its frames into ``clip``."""
    S, E = int(head.n_shape), int(head.n_expr)
    std = cfg.synth.shape_std
    shape = torch.tensor(np.clip(rng.normal(0.0, std, S), -2.5 * std, 2.5 * std), dtype=torch.float32)  # [S]
    look = sample_appearance(rng)
    light = sample_light(rng)
    background = sample_background(rng)

    neutral = head(shape[None])  # zero expression, pose and translation
    neck = head.regions["neck"]
    neck_verts = neutral.vertices[0][neck]
    torso_p = sample_torso(rng, neck_verts)
    end = neck_ring(neutral.vertices[0], neck)  # the neck's end ring
    jitter = rng.uniform([-0.012, -0.012, -0.05], [0.012, 0.012, 0.05])  # the clip's framing, metres
    framing = torch.tensor(jitter + [0.0, cfg.synth.head_height, 0.0], dtype=torch.float32)

    albedo = head_albedo(look, neutral.vertices[0], head.regions)
    t_verts, t_faces, t_skin = torso_mesh(torso_p)
    t_albedo = torso_albedo(torso_p, t_verts, t_skin, look.skin, (look.wave_freq, look.wave_phase, look.wave_amp))
    t_verts = t_verts + framing

    M = frames
    expression, pose = (torch.tensor(a, dtype=torch.float32) for a in _sample_frames(rng, M, E, cfg))
    hair = None
    if cfg.synth.hair:  # drawn after everything else, so a clip with hair shows the same person and poses as without
        hair_p = sample_hair(rng)
        shell, shell_faces = hair_shell(hair_p, neutral.vertices[0], head.faces, head.regions)
        shell_albedo = (torch.tensor(look.hair) * low_frequency(shell * 3.0, look.wave_freq, look.wave_phase, look.wave_amp)[:, None]).clamp(0, 1)
    betas = shape[None].expand(M, S).clone()
    translation = ring_translation(head, end, neutral.vertices[0, end].mean(0), betas, expression, pose) + framing  # [M, 3] keeps the neck end put
    params = HeadParams(betas, expression, pose, translation)
    camera = Camera.frontal(batch=M, size=size, fov_deg=cfg.camera.fov_deg, distance=cfg.camera.distance)

    kinds = (*FRAME_KINDS, "hair_mask") if cfg.synth.hair else FRAME_KINDS
    for kind in (*kinds, "depth"):
        (clip / kind).mkdir(parents=True)
    landmarks3d = []
    for lo in range(0, M, cfg.synth.batch_frames):
        hi = min(lo + cfg.synth.batch_frames, M)
        p = params[lo:hi]
        o = head(p.shape, p.expression, p.pose, p.translation)
        if head.has_landmarks:
            landmarks3d.append(o.landmarks)
        if cfg.synth.hair:
            hair = (pose_shell(shell, o.transforms), shell_faces, shell_albedo)
        r = render_portrait(
            o.vertices, head.faces, albedo, t_verts, t_faces, t_albedo, camera[lo:hi], light, background, cfg.synth.supersample, hair
        )
        rgb = (r.rgb.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
        for b in range(hi - lo):
            name = _frame_name(lo + b)
            _write_png(clip / "rgb" / f"{name}.png", rgb[b])
            masks = [("mask", r.mask), ("head_mask", r.head_mask), ("torso_mask", r.torso_mask)]
            for kind, m in masks + ([("hair_mask", r.hair_mask)] if hair is not None else []):
                _write_png(clip / kind / f"{name}.png", m[b].numpy().astype(np.uint8) * 255)
            np.save(clip / "depth" / f"{name}.npy", r.depth[b].numpy().astype(np.float32))
        bar.update(hi - lo)
    extra = {}
    if landmarks3d:
        lmk = torch.cat(landmarks3d)  # [M, K, 3]
        extra = dict(landmarks2d=camera.project_world(lmk)[0].numpy(), landmarks3d=lmk.numpy(), landmark_ids=head.lmk_ids.numpy())
    save_clip(clip / "params.npz", params, camera, **extra)
    identity = dict(
        appearance=look.to_dict(), torso=torso_p.to_dict(), light=light.to_dict(), background=background.to_dict(), framing=framing.tolist()
    )
    if cfg.synth.hair:
        identity["hair"] = hair_p.to_dict()
    (clip / "identity.json").write_text(json.dumps(identity, indent=2) + "\n")


def _read_meta(root: Path) -> dict:
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"no meta.json in {root}: not a set written by omg-lite synth (make one with `omg-lite synth --out {root}`)")
    try:
        meta = json.loads(meta_path.read_text())
        folder_names(meta["clips"], meta_path)
        int(meta["frames"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{meta_path} is not an omg-lite synth meta.json ({e}); fix or remove it") from None
    return meta


def _read_png(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"missing frame file {path}; the synth set is incomplete")
    return np.asarray(Image.open(path))


def load_frame(root: str | Path, clip: str | int, frame: int) -> dict:
    """One frame of a synth set as tensors.

    Returns ``rgb`` [3, H, W] float in [0, 1]; ``mask``, ``head_mask``, ``torso_mask`` (and
    ``hair_mask`` in a set written with ``synth.hair``) [H, W] bool; ``depth`` [H, W] float32; the frame's ``K`` [3, 3], ``R`` [3, 3], ``t`` [3],
    ``shape`` [S], ``expression`` [E], ``pose`` [15], ``translation`` [3], ``landmarks2d``
    [K, 2] (when the head model has landmarks); and ``clip`` (name), ``frame`` (index).
    """
    root = Path(root)
    meta = _read_meta(root)
    name = meta["clips"][clip] if isinstance(clip, int) else clip
    if name not in meta["clips"]:
        raise KeyError(f"no clip {clip!r} in {root}; it has {meta['clips']}")
    params, camera, extra = load_clip(root / name / "params.npz")
    return _frame(root / name, name, frame, params, camera, extra)


def _frame(clip_dir: Path, name: str, frame: int, params: HeadParams, camera: Camera, extra: dict) -> dict:
    M = params.batch
    if not 0 <= frame < M:
        raise IndexError(f"frame {frame} out of range: clip {name} has {M} frames")
    f = _frame_name(frame)
    item: dict = {"rgb": torch.from_numpy(_read_png(clip_dir / "rgb" / f"{f}.png").copy()).permute(2, 0, 1).float() / 255}
    for kind in FRAME_KINDS[1:]:
        item[kind] = torch.from_numpy(_read_png(clip_dir / kind / f"{f}.png") > 127)
    if (clip_dir / "hair_mask").is_dir():  # a set written with synth.hair
        item["hair_mask"] = torch.from_numpy(_read_png(clip_dir / "hair_mask" / f"{f}.png") > 127)
    depth_path = clip_dir / "depth" / f"{f}.npy"
    if not depth_path.is_file():
        raise FileNotFoundError(f"missing frame file {depth_path}; the synth set is incomplete")
    item["depth"] = torch.from_numpy(np.load(depth_path))
    item.update(K=camera.K[frame], R=camera.R[frame], t=camera.t[frame])
    item.update(shape=params.shape[frame], expression=params.expression[frame], pose=params.pose[frame], translation=params.translation[frame])
    if "landmarks2d" in extra:
        item["landmarks2d"] = torch.from_numpy(extra["landmarks2d"][frame])
    item.update(clip=name, frame=frame)
    return item


class SynthDataset(torch.utils.data.Dataset):
    """All frames of a synth set, clip after clip; ``ds[k]`` is :func:`load_frame`'s dict."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.meta = _read_meta(self.root)
        self.clips: list[str] = list(self.meta["clips"])
        self.frames: int = int(self.meta["frames"])
        self._params: dict[str, tuple] = {}

    def __len__(self) -> int:
        return len(self.clips) * self.frames

    def clip_params(self, clip: str | int) -> tuple[HeadParams, Camera, dict]:
        """A clip's (HeadParams [M], Camera [M], extra arrays), read once."""
        name = self.clips[clip] if isinstance(clip, int) else clip
        if name not in self._params:
            self._params[name] = load_clip(self.root / name / "params.npz")
        return self._params[name]

    def __getitem__(self, k: int) -> dict:
        if not -len(self) <= k < len(self):
            raise IndexError(f"index {k} out of range for a synth set of {len(self)} frames")
        c, j = divmod(k % len(self), self.frames)
        return _frame(self.root / self.clips[c], self.clips[c], j, *self.clip_params(c))
