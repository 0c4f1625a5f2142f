"""``omg-lite eval``: self- and cross-reenactment metrics (paper Sec. 4, Tables 1 and 3).

Data: clips in the layout ``omg-lite synth`` / ``omg-lite track`` write (CLIP/params.npz,
CLIP/rgb/NNNN.png, CLIP/mask/NNNN.png; see ``omg_lite.clips``), read at the model's training
size (frames resized, intrinsics scaled, as in training). Frames marked ``valid = 0`` are skipped.

Settings:

- self-reenactment: the avatar of a clip's first frame drives to the clip's other frames with
  their own parameters and cameras ("absolute"); the truth is the driver frame I_d composited on
  the renderer's background outside its portrait mask, I_d = M rgb + (1 - M) bg, as in training
  (the Gaussians model head and shoulders, not the backdrop);
- cross-reenactment: the avatar of clip i's first frame driven by the frames of clip i + 1
  ("neck" placement, the source view). No ground truth exists: identity is scored against the
  source image (CSIM, same person), motion against the driver (AED, APD).

Rows (the paper's baselines beside the model): ``source`` (the source image unchanged),
``coarse`` (I_c, the splatted RGB without the refiner) and ``full`` (I_r), per level of detail.
Rows are keyed (setting, method, lod) and every score goes through ``_scores``. With ``fit`` steps,
the avatar personalised from the source photo (``Avatar.personalize``, ``omg_lite.personalize``)
joins as the methods ``coarse+fit`` and ``full+fit``, scored on the same drivers, truths and
metrics. With ``fit_frames`` N (the half-clip protocol) the fit also sees the clip's frames
1..N, and every row of the run scores self-reenactment on the frames after N only (N + 1..end),
so that no row is scored on a frame the fit saw.

Metrics, each image scored alone and averaged over frames (PSNR, SSIM, LPIPS, the truth I_d and
the face-region figures come from ``omg_lite.metrics``, the path training's held-out pass takes too):

    PSNR, SSIM, LPIPS                          whole image, and inside the truth's head mask
                                               (face_psnr, face_ssim, face_lpips; see omg_lite.metrics)
    CSIM  = cos(e(I), e(I_d))                  dlib's 128-d ResNet face descriptor (omg_lite.identity; the
                                               peers use ArcFace: compare orderings, not values)
    same person = share with |e(I) - e(I_d)| < 0.6   dlib's convention; a render without a face counts as not
    AKD   = mean_k,c |l_k,c(I) - l_k,c(I_d)|   iBUG-68 points from the tracking detector, pixels
                                               (mean absolute coordinate error, as the release)
    AED   = mean_e |psi_e(I) - psi_e(I_d)|     expression coefficients fitted by our tracker
    APD   = angle(R(I)^T R(I_d))               head rotation R_root R_neck fitted by our tracker, degrees

Where the detector finds no face in a driver frame of a synthetic clip, its true projected
landmarks (params.npz ``landmarks2d``) stand in; where it finds none in a rendered frame, that
frame has no AKD/AED/APD; the notes count both. Likewise for identity: CSIM averages over the
frames where dlib finds a face in both images; "face found" is the share of renders with a face
among the truths with one. The fits for AED/APD run our tracker on all frames of one clip (or of
one clip's renders) together, sharing the identity, without smoothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from omg_lite.avatar import Avatar, to_uint8
from omg_lite.clips import ClipFrames, clip_folders, read_clip
from omg_lite.drivers import retarget, track_config
from omg_lite.head.params import HeadParams
from omg_lite.identity import IdentityMetric
from omg_lite.metrics import FACE_REGION, ImageMetrics, Lpips, akd, composite, face_region, psnr, ssim  # noqa: F401 - psnr, ssim, Lpips: the public names notebooks import from here
from omg_lite.network import AvatarModel

METHODS = {"source": "source image (unchanged)", "coarse": "coarse render I_c (no refiner)", "full": "full model I_r",
           "coarse+fit": "I_c of the personalised avatar", "full+fit": "I_r of the personalised avatar"}


# ------------------------------------------------------------------------------------ motion metrics


class MotionMetrics:
    """AKD / AED / APD through the tracking module's detector and fitter."""

    def __init__(self, head, cfg):
        from omg_lite.tracking import LandmarkDetector, LandmarkFitter
        from omg_lite.tracking.track import fit_settings

        self.head = head
        self.detector = LandmarkDetector()
        self.fitter = LandmarkFitter(head, fit_settings(cfg, video=False))
        self.stats = {"driver_fallback": 0, "driver_frames": 0, "render_found": 0, "render_frames": 0}

    def close(self) -> None:
        self.detector.close()

    def landmarks(self, images: Tensor) -> tuple[np.ndarray, np.ndarray]:  # [M, 3, S, S] -> [M, 68, 2], [M] bool
        from omg_lite.tracking import NoFaceError

        pts, found = [], []
        for im in to_uint8(images):
            try:
                pts.append(self.detector.detect(im).ibug68)
                found.append(True)
            except NoFaceError:
                pts.append(np.full((68, 2), np.nan))
                found.append(False)
        return np.stack(pts), np.array(found)

    def fit(self, lm: np.ndarray, found: np.ndarray, size: int) -> HeadParams | None:  # -> [M] (None: no face at all)
        from omg_lite.tracking import FitTargets

        if not found.any():
            return None
        targets = FitTargets(torch.as_tensor(np.nan_to_num(lm), dtype=torch.float32), size, size, valid=torch.as_tensor(found))
        return self.fitter.fit(targets).params

    def driver(self, clip: ClipFrames) -> tuple[np.ndarray, HeadParams]:
        """Landmarks [M, 68, 2] and fitted parameters [M] of a clip's real frames (true landmarks where none is found)."""
        lm, found = self.landmarks(clip.rgb)
        self.stats["driver_frames"] += len(found)
        if clip.true_landmarks is not None and not found.all():
            self.stats["driver_fallback"] += int((~found).sum())
            lm[~found] = clip.true_landmarks[~found]
            found = np.ones_like(found)
        return lm, self.fit(lm, found, clip.rgb.shape[-1])

    def scores(self, renders: Tensor, drv_lm: np.ndarray, drv_fit: HeadParams | None, ground_truth: bool) -> dict:
        """AKD (when the renders have a ground truth), AED, APD of renders [M] against their drivers."""
        lm, found = self.landmarks(renders)
        self.stats["render_frames"] += len(found)
        self.stats["render_found"] += int(found.sum())
        ok = found & np.isfinite(drv_lm).all(axis=(1, 2))
        out: dict = {"motion_frames": int(ok.sum())}
        if not ok.any():
            return out
        if ground_truth:
            out["akd"] = float(akd(lm[ok], drv_lm[ok]).mean())
        fit = self.fit(lm, found, renders.shape[-1])
        if fit is not None and drv_fit is not None:
            from omg_lite.tracking import rotation_error_deg

            i = torch.as_tensor(np.flatnonzero(ok))
            out["aed"] = float((fit.expression[i] - drv_fit.expression[i]).abs().mean())
            out["apd"] = float(rotation_error_deg(fit.pose[i], drv_fit.pose[i]).mean())
        return out


# ------------------------------------------------------------------------------------ evaluation


@dataclass
class EvalResult:
    rows: list[dict]  # one per (setting, method, lod): metrics and counts
    notes: list[str]
    info: dict = field(default_factory=dict)

    def markdown(self) -> str:
        return metrics_table(self.rows) + "\n" + "\n".join(f"- {n}" for n in self.notes) + "\n"

    def to_json(self) -> str:
        return json.dumps({"info": self.info, "rows": self.rows, "notes": self.notes}, indent=2)


COLUMNS = (("psnr", "PSNR ↑", "{:.2f}"), ("ssim", "SSIM ↑", "{:.3f}"), ("lpips", "LPIPS ↓", "{:.3f}"),
           ("face_psnr", "face PSNR ↑", "{:.2f}"), ("face_ssim", "face SSIM ↑", "{:.3f}"), ("face_lpips", "face LPIPS ↓", "{:.3f}"),
           ("csim", "CSIM ↑", "{:.3f}"),
           ("same_person", "same person ↑", "{:.0%}"), ("face_share", "face found ↑", "{:.0%}"),
           ("akd", "AKD ↓ (px)", "{:.2f}"), ("aed", "AED ↓", "{:.3f}"), ("apd", "APD ↓ (deg)", "{:.2f}"))


def metrics_table(rows: list[dict], first: tuple[str, ...] = ("setting", "method", "lod", "gaussians")) -> str:
    """A markdown table of metric rows (missing values as "–")."""
    head = list(first) + [c[1] for c in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r[k]:,}" if k == "gaussians" and isinstance(r.get(k), int) else str(r.get(k, "–")) for k in first]
        cells += [fmt.format(r[k]) if r.get(k) is not None else "–" for k, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _mean(x: Tensor) -> float:
    return float(x.mean())


@torch.no_grad()
def evaluate(net: AvatarModel, data: str | Path, lods: list[int] | None = None, split: str = "all", heldout: int | None = None,
             max_frames: int | None = None, cross: bool = True, motion: bool = True, identity: bool = True,
             fit: int = 0, fit_frames: int = 0, progress: bool = True) -> EvalResult:
    """Self- and cross-reenactment metrics of ``net`` on the clips under ``data`` (module docstring).

    ``split``: "all" clips, or "heldout" = the last ``heldout`` clips by name (default: the
    checkpoint's ``train.heldout``, the identities its training never saw). ``identity``: CSIM and
    the same-person rate (dlib); ``motion``: AKD / AED / APD. ``fit``: personalisation steps for the
    ``+fit`` rows (0: none); ``fit_frames``: clip frames the fit also sees, scored on none (module docstring).
    """
    from tqdm.auto import tqdm

    folders = sorted(clip_folders(Path(data), "evaluation data"), key=lambda p: p.name)
    if split == "heldout":
        n = net.cfg.train.heldout if heldout is None else heldout
        if n < 1:
            raise ValueError("split 'heldout' needs at least one held-out clip (--heldout N)")
        if n > net.cfg.train.heldout or n >= len(folders):
            raise ValueError(f"--heldout {n}: the checkpoint held out its last {net.cfg.train.heldout} identities, and {data} has "
                             f"{len(folders)} clips; more would score clips it trained on: pass --heldout {net.cfg.train.heldout} "
                             "or less, or --split all for data it never saw")  # fmt: skip
        folders = folders[-n:]
    elif split != "all":
        raise ValueError(f"split must be 'all' or 'heldout', got {split!r}")
    if fit < 0 or fit_frames < 0:
        raise ValueError(f"--fit {fit} / --fit-frames {fit_frames}: steps and frames must be 0 (off) or more")
    if fit_frames and not fit:
        raise ValueError(f"--fit-frames {fit_frames} needs --fit STEPS (the personalisation those frames feed)")
    levels = list(range(net.model.levels + 1)) if lods is None else list(lods)
    for k in levels:
        if not 0 <= k <= net.model.levels:
            raise ValueError(f"--lod {k}: this model has levels 0..{net.model.levels}")
    size = net.image_size
    clips = [read_clip(f, size, max_frames) for f in folders]
    for c in clips:
        if fit_frames >= len(c) - 1:
            raise ValueError(f"--fit-frames {fit_frames}: clip {c.name} has {len(c)} valid frames (after --max-frames), and the "
                             f"half-clip protocol needs a source, N fitting frames and one to score: pass --fit-frames {len(c) - 2} or less")
    if any(c.params.expression.shape[1] != net.head_model.n_expr or c.params.shape.shape[1] != net.head_model.n_shape for c in clips):
        raise ValueError(f"the clips under {data} were made with another head model ({net.head_model.n_shape} shape / "
                         f"{net.head_model.n_expr} expression coefficients expected)")
    bg = net.cfg.model.background
    target = lambda c, i: composite(c.rgb[i], c.mask[i], bg)  # noqa: E731 - I_d = M rgb + (1 - M) bg
    metrics = ImageMetrics(net.device)
    mm = MotionMetrics(net.head_model, track_config(net)) if motion else None
    idm = IdentityMetric() if identity else None
    acc: dict[tuple, list[dict]] = {}  # (setting, method, lod) -> one score dict per clip
    reports = []  # the personalisation fits (FitReport), one per clip

    def add(key: tuple, values: dict) -> None:
        acc.setdefault(key, []).append(values)

    try:
        fits = [mm.driver(c) if mm else (None, None) for c in tqdm(clips, desc="track drivers", disable=not (progress and mm))]
        bar = tqdm(total=len(clips) * (1 + cross) * len(levels), desc="reenact", disable=not progress)
        for ci, c in enumerate(clips):
            avatar = Avatar.from_frame(c.rgb[0], c.params[0:1], c.camera[0:1], c.mask[0, 0], net=net, lod=max(levels))
            avatars = [("", avatar)]  # (method suffix, avatar)
            if fit:
                from omg_lite.personalize import clip_frames

                seen = slice(1, 1 + fit_frames)  # the frames the fit sees, scored by no row
                frames = clip_frames(avatar, c.rgb[seen], c.mask[seen], c.params[seen], c.camera[seen]) if fit_frames else None
                avatars.append(("+fit", avatar.personalize(fit, clip=frames, progress=progress)))
                reports.append(avatars[-1][1].fit)
            drv = torch.arange(1 + fit_frames, len(c))
            truth = target(c, drv).to(net.device)
            face = face_region(net.head_model, c.params[drv], c.camera[drv], c.mask[drv].to(net.device))  # [M, 1, S, S] A
            src = target(c, torch.zeros_like(drv)).to(net.device)
            lm, lm_fit = fits[ci]
            settings = [("self", c, drv, c.params[drv], c.camera[drv], truth, face, lm, lm_fit)]
            if cross and len(clips) > 1:
                d = clips[(ci + 1) % len(clips)]
                dlm, dfit = fits[(ci + 1) % len(clips)]
                params = retarget(net.head_model, c.params[0:1], d.params, "neck")
                settings.append(("cross", d, torch.arange(len(d)), params, avatar.camera(), None, None, dlm, dfit))
            for name, d, idx, params, cams, gt, face, dlm, dfit in settings:
                dl = None if dlm is None else dlm[idx.numpy()]
                df = None if dfit is None else dfit[idx]
                srcs = src[:1].expand(len(idx), -1, -1, -1)
                ids = None if idm is None else idm.reference(srcs if gt is None else gt)
                add((name, "source", None), _scores(srcs, gt, face, metrics, mm, dl, df, idm, ids))
                for k in levels:
                    for suffix, av in avatars:
                        out = av.render(params, cams, k)
                        n = av.counts(k)["total"]
                        for method, img in (("coarse", out.coarse), ("full", out.refined)):
                            if method == "full" and not net.cfg.model.use_refiner:
                                continue
                            add((name, method + suffix, k), {"gaussians": n, **_scores(img.clamp(0, 1), gt, face, metrics, mm, dl, df, idm, ids)})
                    bar.update(1)
        bar.close()
    finally:
        if mm is not None:
            mm.close()
    rows = [_row(key, vals) for key, vals in acc.items()]
    notes = [f"LPIPS: {metrics.label}", idm.note() if idm else "CSIM / same person not computed (identity metric off)",
             f"model: {net.label}; encoder weights: {net.encoder.weights_source}",
             f"{len(clips)} clip(s) from {data} ({split}), frames at {size}x{size}; self: first frame drives to the others, "
             "truth composited on the background outside the portrait mask; cross: clip i's avatar driven by clip i+1 (neck placement)",
             f"face PSNR / SSIM / LPIPS (self only): {FACE_REGION}"]
    if fit:
        diverged = sum(r.diverged is not None for r in reports)
        notes.append(f"+fit: the avatar personalised from the source photo{f' and frames 1..{fit_frames}' if fit_frames else ''} "
                     f"(omg_lite.personalize defaults, {fit} steps over the kept levels in turn, "
                     f"{np.mean([r.seconds for r in reports]):.0f} s per clip)"
                     + (f"; {diverged} fit(s) diverged and kept the feed-forward avatar" if diverged else ""))
    if fit_frames:
        notes.append(f"half-clip protocol: every self row scores frames {fit_frames + 1}.. only (the fit saw frames 1..{fit_frames})")
    if mm is not None:
        s = mm.stats
        notes.append(f"AKD/AED/APD average over the scored images where the detector found a face: {s['render_found']} of "
                     f"{s['render_frames']} (baselines and renders; per row: motion_frames in the JSON); rows without any show –")
        if s["driver_fallback"]:
            notes.append(f"AKD: the detector missed {s['driver_fallback']} of {s['driver_frames']} driver frames; their true projected landmarks stand in")
    else:
        notes.append("AKD/AED/APD not computed (motion metrics off)")
    return EvalResult(rows, notes, {"data": str(data), "split": split, "clips": [c.name for c in clips], "lods": levels, "checkpoint": net.label,
                                   "fit": fit, "fit_frames": fit_frames})


def _scores(pred: Tensor, gt: Tensor | None, face: Tensor | None, metrics: ImageMetrics, mm: MotionMetrics | None, drv_lm, drv_fit,
            idm: IdentityMetric | None, ids) -> dict:
    out: dict = {"frames": pred.shape[0]}
    if gt is not None:
        scores = metrics(pred, gt, face)
        out.update({k: _mean(v) for k, v in scores.items() if not k.startswith("face_")})
        if face is not None:
            has = face.flatten(1).any(1)  # images whose head mask is not empty
            out["region_frames"] = int(has.sum())
            out.update({k: _mean(v[has]) for k, v in scores.items() if k.startswith("face_") and has.any()})
    if idm is not None:
        out.update(idm.scores(pred, ids))
    if mm is not None and drv_lm is not None:
        out.update(mm.scores(pred, drv_lm, drv_fit, ground_truth=gt is not None))
    return out


def _row(key: tuple, scores: list[dict]) -> dict:
    """Frame-weighted means over clips: image metrics over all frames, motion metrics over frames with a face;
    Gaussians: the mean count over the clips' avatars (the shoulders differ per source)."""
    setting, method, lod = key
    counts = [s["gaussians"] for s in scores if "gaussians" in s]
    row: dict = {"setting": setting, "method": method, "lod": "–" if lod is None else lod,
                 "gaussians": round(float(np.mean(counts))) if counts else "–", "frames": sum(s["frames"] for s in scores)}
    for count in ("motion_frames", "face_frames", "face_found", "region_frames"):
        if any(count in s for s in scores):
            row[count] = sum(s.get(count, 0) for s in scores)
    if row.get("face_frames"):
        row["face_share"] = row["face_found"] / row["face_frames"]  # renders with a face, of the truths with one
    for k, _, _ in COLUMNS:
        weight = {"akd": "motion_frames", "aed": "motion_frames", "apd": "motion_frames", "csim": "face_found",
                  "same_person": "face_frames", "face_psnr": "region_frames", "face_ssim": "region_frames",
                  "face_lpips": "region_frames"}.get(k, "frames")
        have = [(s[k], s[weight]) for s in scores if s.get(k) is not None and s.get(weight, 0) > 0]
        if have:
            row[k] = float(np.average([v for v, _ in have], weights=[w for _, w in have]))
    return row
