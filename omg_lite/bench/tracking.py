"""``omg-lite bench track``: accuracy and speed of the 3DMM estimator (``omg_lite.tracking``).

Three figures, each against an independent truth:

- ``synthetic-true-landmarks``: frames of the stand-in head with random shapes, expressions and
  poses, the true landmarks projected from the generating parameters; head-orientation error
  (angle of R_true^T R_fit, R = R_root R_neck) and interior landmark reprojection error.
- ``astronaut``: the detector on ``skimage.data.astronaut()``; interior reprojection error and
  jaw-contour-to-jaw-line distance in % of the inter-ocular distance.
- ``synthetic-video``: the synthetic world rendered along a smooth head path, encoded to H.264,
  decoded, detected and tracked, without and with temporal smoothing; per-frame orientation
  error and jitter J = mean_m |a_{m+1} - 2 a_m + a_{m-1}| of the yaw/pitch/roll angles a (deg),
  next to the true path's own J.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from omg_lite.bench import Bench
from omg_lite.config import Config, pick
from omg_lite.geometry.camera import Camera
from omg_lite.head.params import HeadParams


def random_params(head, n: int, rng: np.random.Generator) -> HeadParams:
    """Random frames in the synthetic world's ranges (yaw +-40, pitch +-20, roll +-8 deg, jaw <= 0.3 rad)."""
    S, E = head.n_shape, head.n_expr
    ang = np.radians(np.stack([rng.uniform(-40, 40, n), rng.uniform(-20, 20, n), rng.uniform(-8, 8, n)], 1))
    share = rng.uniform(0, 0.4, (n, 1))
    pose = np.zeros((n, 15))
    pose[:, 0:3] = Rotation.from_euler("YXZ", ang * (1 - share)).as_rotvec()
    pose[:, 3:6] = Rotation.from_euler("YXZ", ang * share).as_rotvec()
    pose[:, 6] = 0.3 * rng.uniform(0, 1, n) ** 2
    f32 = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    shape = f32(rng.normal(0, 1, (n, S)))
    expr = f32(rng.normal(0, 1, (n, E)) * rng.uniform(0.2, 1, (n, 1)))
    trans = f32(rng.uniform(-0.02, 0.02, (n, 3)) + [0.0, 0.05, 0.0])
    return HeadParams(shape, expr, f32(pose), trans)


def smooth_path(head, frames: int, rng: np.random.Generator) -> HeadParams:
    """One identity moving smoothly: yaw 30 sin(2 pi s), pitch 10 sin(4 pi s + phi), roll 5 sin(2 pi s + phi'), jaw and expression slow."""
    s = np.linspace(0.0, 1.0, frames)
    ph = rng.uniform(0, 2 * math.pi, 3)
    ang = np.radians(np.stack([30 * np.sin(2 * math.pi * s), 10 * np.sin(4 * math.pi * s + ph[0]), 5 * np.sin(2 * math.pi * s + ph[1])], 1))
    pose = np.zeros((frames, 15))
    pose[:, 0:3] = Rotation.from_euler("YXZ", 0.8 * ang).as_rotvec()
    pose[:, 3:6] = Rotation.from_euler("YXZ", 0.2 * ang).as_rotvec()
    pose[:, 6] = 0.12 * (1 - np.cos(4 * math.pi * s + ph[2]))
    E = head.n_expr
    a, b = rng.normal(0, 0.6, E), rng.normal(0, 0.6, E)
    expr = np.outer(np.sin(2 * math.pi * s), a) + np.outer(np.sin(2 * math.pi * s + 1.0), b)
    f32 = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    shape = f32(rng.normal(0, 1, head.n_shape))[None].expand(frames, -1).clone()
    return HeadParams(shape, f32(expr), f32(pose), torch.zeros(frames, 3))


def render_clip(head, params: HeadParams, size: int, cfg: Config, rng: np.random.Generator) -> tuple[np.ndarray, HeadParams, Camera]:
    """Render ``params`` in the synthetic world (one look, torso, light, backdrop): -> (rgb [M, H, W, 3] uint8, params with translations, cameras)."""
    from omg_lite.synth.appearance import head_albedo, sample_appearance
    from omg_lite.head.neck import neck_ring, ring_translation
    from omg_lite.synth.scene import render_portrait, sample_background, sample_light
    from omg_lite.synth.torso import sample_torso, torso_albedo, torso_mesh

    M = params.batch
    look, light, background = sample_appearance(rng), sample_light(rng), sample_background(rng)
    zero = HeadParams.zeros(1, head.n_shape, head.n_expr)
    neutral = head(params.shape[:1], zero.expression, zero.pose, zero.translation)
    neck = head.regions["neck"]
    neck_verts = neutral.vertices[0][neck]
    torso_p = sample_torso(rng, neck_verts)
    end = neck_ring(neutral.vertices[0], neck)
    framing = torch.tensor([0.0, cfg.synth.head_height, 0.0])
    albedo = head_albedo(look, neutral.vertices[0], head.regions)
    t_verts, t_faces, t_skin = torso_mesh(torso_p)
    t_albedo = torso_albedo(torso_p, t_verts, t_skin, look.skin, (look.wave_freq, look.wave_phase, look.wave_amp))
    t = ring_translation(head, end, neutral.vertices[0, end].mean(0), params.shape, params.expression, params.pose) + framing
    params = HeadParams(params.shape, params.expression, params.pose, t)
    camera = Camera.frontal(batch=M, size=size, fov_deg=cfg.camera.fov_deg, distance=cfg.camera.distance)
    rgb = []
    for lo in range(0, M, cfg.synth.batch_frames):
        p = params[lo : lo + cfg.synth.batch_frames]
        verts = head(p.shape, p.expression, p.pose, p.translation).vertices
        r = render_portrait(verts, head.faces, albedo, t_verts + framing, t_faces, t_albedo, camera[lo : lo + p.batch], light, background, cfg.synth.supersample)
        rgb.append((r.rgb.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy())
    return np.concatenate(rgb), params, camera


def euler_deg(pose: torch.Tensor) -> np.ndarray:  # [M, 15] -> [M, 3] yaw, pitch, roll of R_root R_neck
    from omg_lite.tracking.fitting import head_rotation

    return np.degrees(Rotation.from_matrix(head_rotation(pose.double()).numpy()).as_euler("YXZ"))


def jitter_deg(angles: np.ndarray) -> float:  # [M, 3]
    return float(np.abs(angles[2:] - 2 * angles[1:-1] + angles[:-2]).mean())


@dataclass
class TrackBench(Bench):
    """Tracking accuracy (synthetic truth, the astronaut photo, a rendered video) and time per frame."""

    # Synthetic frames fitted from their true landmarks.
    stills: int = pick(8, 2)
    # Frames of the rendered smooth-path video.
    video_frames: int = pick(48, 8)
    # Image side of the synthetic frames.
    size: int = 256
    seed: int = 0

    name = "track"

    def run(self) -> list[dict]:
        return [self._stills(), self._astronaut(), *self._video()]

    def _stills(self) -> dict:
        from omg_lite.head import head_from_config
        from omg_lite.tracking.fitting import FitSettings, FitTargets, LandmarkFitter, reprojection_error, rotation_error_deg

        cfg = Config()
        head = head_from_config(cfg.head)
        truth = random_params(head, self.stills, np.random.default_rng(self.seed))
        cam = Camera.frontal(batch=self.stills, size=self.size, fov_deg=cfg.camera.fov_deg, distance=cfg.camera.distance)
        with torch.no_grad():
            uv, _ = cam.project_world(head(truth).landmarks)
        fitter = LandmarkFitter(head, FitSettings(noise=0.001, fov_deg=cfg.camera.fov_deg, distance=cfg.camera.distance))
        rot, rep, t0 = [], [], time.perf_counter()
        for m in range(self.stills):
            targets = FitTargets(uv[m : m + 1], self.size, self.size)
            fit = fitter.fit(targets)
            rot.append(float(rotation_error_deg(fit.params.pose, truth.pose[m : m + 1])[0]))
            rep.append(float(reprojection_error(fit, head, targets, interior=False)[0]))
        sec = (time.perf_counter() - t0) / self.stills
        return {"case": "synthetic-true-landmarks", "frames": self.stills, "size": self.size, "pose_err_deg_mean": np.mean(rot), "pose_err_deg_max": np.max(rot),
                "reproj_px_mean": np.mean(rep), "reproj_px_max": np.max(rep), "s_per_frame": sec}  # fmt: skip

    def _astronaut(self) -> dict:
        from skimage import data

        from omg_lite.head import head_from_config
        from omg_lite.tracking.fitting import polyline_distance2
        from omg_lite.tracking.track import track_frames

        cfg = Config()
        head = head_from_config(cfg.head)
        r = track_frames(lambda: [data.astronaut()], head, cfg, video=False)
        with torch.no_grad():
            uv, _ = r.camera.project_world(head(r.params).landmarks)
        target = torch.as_tensor(r.ibug68[:, :17], dtype=torch.float64)
        contour = float(polyline_distance2(target, uv[:, :17].double()).sqrt().mean())
        iod = float(r.interocular[0])
        return {"case": "astronaut", "frames": 1, "size": r.crop.size, "reproj_pct_iod": 100 * float(r.errors[0]) / iod,
                "contour_pct_iod": 100 * contour / iod, "s_detect": r.seconds["detect_per_frame"], "s_per_frame": r.seconds["fit_per_frame"]}  # fmt: skip

    def _video(self) -> list[dict]:
        from omg_lite.head import head_from_config
        from omg_lite.tracking.fitting import rotation_error_deg
        from omg_lite.tracking.track import track_frames
        from omg_lite.tracking.video import read_frames, write_video

        cfg = Config()
        head = head_from_config(cfg.head)
        rng = np.random.default_rng(self.seed + 1)
        rgb, truth, _ = render_clip(head, smooth_path(head, self.video_frames, rng), self.size, cfg, rng)
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            path = write_video(Path(tmp) / "path.mp4", rgb, fps=25)
            for smooth in (0.0, cfg.track.smooth):
                cfg.track.smooth = smooth
                r = track_frames(lambda: read_frames(path), head, cfg, video=True)
                ok = r.valid
                err = rotation_error_deg(r.params.pose[ok], truth.pose[ok]).numpy()
                rows.append({"case": f"synthetic-video smooth={smooth:g}", "frames": len(ok), "size": self.size, "valid": int(ok.sum()),
                             "pose_err_deg_mean": float(err.mean()), "pose_err_deg_max": float(err.max()),
                             "jitter_deg": jitter_deg(euler_deg(r.params.pose)), "jitter_true_deg": jitter_deg(euler_deg(truth.pose)),
                             "s_detect": r.seconds["detect_per_frame"], "s_per_frame": r.seconds["fit_per_frame"]})  # fmt: skip
        return rows
