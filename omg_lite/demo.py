"""``omg-lite demo``, ``omg-lite reenact`` and ``omg-lite personalize``: one photo in, an animated avatar at LOD 0, 1, 2 out.

The demo reconstructs once (paper Sec. 3.4: tracking, encoder and model run once on the source),
then animates the same Gaussian set at every kept level of detail with the same driver,
position-only, and writes into OUT (atomically: a temporary folder beside OUT, renamed at the end,
so an interrupted demo leaves nothing under OUT)::

    OUT/avatar.mp4          [source | LOD 0 | LOD 1 | LOD 2] side by side (avatar.gif without H.264);
                            with --fit STEPS: [source | feed-forward LOD K | personalised LOD 0 | 1 | 2]
    OUT/avatar_lod0.ply     the avatar's Gaussians per level (3DGS layout, source pose)
    OUT/source.png          the portrait crop the model saw
    OUT/report.json         reconstruction time, FPS and Gaussian counts per level, encoder weights,
    OUT/report.md           checkpoint, driver, machine load (timings on a shared CPU are noisy)

Defaults and why: the sample portrait is a frame of the synthetic world
(``data_samples/synth_256/id000``, seed 1: an identity the ``lite`` checkpoint never saw, as the
lite run draws its identities from seed 0). The tracker finds it (MediaPipe lands within about
2 px of the true landmarks), and the lite model is trained on this world only: a real photo such
as ``skimage.data.astronaut()`` tracks well too, but is far outside what a synthetic-trained model
with an offline (random) encoder can reconstruct. Pass ``--image`` for your own. The driver is
``data_samples/driver/params.npz`` (a smooth synthetic expression/pose path, 48 frames at 25 fps).
Personalisation (``--fit STEPS``, ``omg_lite.personalize``) refines the reconstructed avatar on
its own photo before animating; ``--avatar DIR`` animates an avatar that ``omg-lite personalize``
saved instead of reconstructing one. FPS per level is timed per frame (positions + splatting + refiner, device synchronised), as the
paper times it; ``omg-lite bench enact`` gives the figures over 100 frames after warm-up.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from omg_lite import samples
from omg_lite.avatar import Avatar, to_uint8
from omg_lite.clips import resize_image
from omg_lite.config import DEMO_MAX_FRAMES, MAX_FRAMES
from omg_lite.drivers import load_driver
from omg_lite.network import AvatarModel
from omg_lite.device import sync
from omg_lite.io import check_output_file, check_output_folder, output_folder

log = logging.getLogger(__name__)

LABEL_BAND = 16  # pixels of caption above each panel
FIT_STEPS = 60  # the demo's default personalisation (omg-lite demo --fit 0 shows the feed-forward avatar alone)
MARKER = "report.json"  # what makes a folder an omg-lite demo output (see omg_lite.io.output_folder)


def write_frames(path: str | Path, frames: np.ndarray, fps: float, gif_fallback: bool = False) -> Path:  # frames [M, H, W, 3] uint8
    """Write a video atomically: .mp4 with H.264 (PyAV) or .gif (imageio).

    Without an H.264 encoder in this PyAV build an .mp4 becomes a .gif when ``gif_fallback`` (the
    demo, which names its own file; said in the log) and is an error otherwise (the user named the
    file). Any other failure, a full disk or an unwritable folder, is raised as it is.
    """
    from omg_lite.tracking.video import h264_available, write_video

    path = Path(path)
    if path.suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"{path.name}: the output video must end in .mp4 or .gif")
    if path.suffix.lower() == ".mp4":
        if h264_available():
            return write_video(path, frames, fps=fps)
        if not gif_fallback:
            raise ValueError(f"{path.name}: this PyAV build has no H.264 encoder (libx264); write a .gif instead (--out NAME.gif)")
        log.warning("this PyAV build has no H.264 encoder (libx264): writing %s as a GIF", path.with_suffix(".gif").name)
        path = path.with_suffix(".gif")
    import imageio.v3 as iio

    from omg_lite.io import atomic_file

    with atomic_file(path, suffix=".gif") as tmp:
        iio.imwrite(tmp, frames, extension=".gif", duration=1000.0 / fps, loop=0)
    return path


def captioned(panel: np.ndarray, text: str) -> np.ndarray:  # [H, W, 3] uint8 -> [H + band, W, 3]
    """A panel with a white caption band above it."""
    from PIL import Image, ImageDraw

    H, W = panel.shape[:2]
    im = Image.new("RGB", (W, H + LABEL_BAND), (255, 255, 255))
    im.paste(Image.fromarray(panel), (0, LABEL_BAND))
    ImageDraw.Draw(im).text((3, 2), text, fill=(0, 0, 0))
    return np.asarray(im)


@torch.no_grad()
def animate_timed(avatar: Avatar, params, lod: int, size: int, bar=None, warmup: int = 2) -> tuple[np.ndarray, list[float]]:
    """Frames [M, H, W, 3] uint8 at one level and each frame's render time (s), device synchronised,
    after ``warmup`` untimed renders (the first calls compile and allocate)."""
    cam = avatar.camera(size)
    for m in range(min(warmup, params.batch)):
        avatar.render(params[m], cam, lod)
    frames, times = [], []
    for m in range(params.batch):
        sync(avatar.net.device)
        t0 = time.perf_counter()
        out = avatar.render(params[m], cam, lod)
        sync(avatar.net.device)
        times.append(time.perf_counter() - t0)
        frames.append(to_uint8(out.refined))
        if bar is not None:
            bar.update(1)
    return np.concatenate(frames), times


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an --out that is a file, or a non-empty folder without --overwrite (or not a demo output)."""
    check_output_folder(Path(out), overwrite, MARKER, "an omg-lite demo output")


def run_demo(image: str | Path | None = None, driver: str | Path | None = None, out: str | Path = "demo_out",
             checkpoint: str | Path | None = None, preset: str | None = None, size: int | None = None,
             max_frames: int = DEMO_MAX_FRAMES, overwrite: bool = False, net: AvatarModel | None = None,
             progress: bool = True, fit: int = 0, avatar: str | Path | None = None) -> dict:
    """Reconstruct ``image`` (or load ``avatar``), personalise it with ``fit`` steps, animate it with ``driver`` at every
    level, write OUT (module docstring); -> report."""
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    out = Path(out)
    check_out(out, overwrite)
    if image is not None and avatar is not None:
        raise ValueError("give --image (to reconstruct) or --avatar (a saved avatar), not both")
    image = Path(avatar if avatar is not None else image if image is not None else samples.PORTRAIT)
    driver = driver if driver is not None else samples.DRIVER
    t0 = time.perf_counter()
    net = net or AvatarModel.load(checkpoint, preset)
    load_s = time.perf_counter() - t0
    d = load_driver(driver, net.head_model, net.cfg, max_frames)  # a bad driver fails before the expensive part
    ff, avatar = source_avatar(net, image, avatar, fit, progress)
    warm = Avatar.reconstruct(net, avatar.source, avatar.gaussians.lod).seconds  # again, past first-call costs
    params = avatar.driving_params(d, max_frames)
    size = size or avatar.size
    levels = avatar.lods
    panels = [np.repeat(to_uint8(resize_image(avatar.source.image, size)), len(d), axis=0)]
    captions = ["source"]
    per_lod = []
    with tqdm(total=len(d) * (len(levels) + (ff is not None)), unit="frame", desc="animate", disable=not progress) as bar:
        if ff is not None:  # the paper's feed-forward avatar beside the personalised one
            panels.append(animate_timed(ff, params, ff.lod, size, bar)[0])
            captions.append(f"feed-forward LOD {ff.lod}")
        for k in levels:
            frames, times = animate_timed(avatar, params, k, size, bar)
            panels.append(frames)
            c = avatar.counts(k)
            captions.append(f"{'fitted ' * (avatar.fit is not None)}LOD {k}: {c['total'] / 1000:.1f}K")
            per_lod.append({"lod": k, **c, "fps": len(times) / sum(times), "ms_per_frame": 1e3 * float(np.median(times))})
    video = np.stack([np.concatenate([captioned(p[m], c) for p, c in zip(panels, captions)], 1) for m in range(len(d))])

    with output_folder(out, overwrite, MARKER, "an omg-lite demo output") as tmp:
        video_path = write_frames(tmp / "avatar.mp4", video, d.fps, gif_fallback=True)
        from PIL import Image

        Image.fromarray(to_uint8(avatar.source.image)[0]).save(tmp / "source.png")
        for k in levels:
            avatar.export_ply(tmp / f"avatar_lod{k}.ply", k)
        report = _report(avatar, warm, net, image, d, per_lod, size, video_path.name, load_s, time.perf_counter() - t_start)
        (tmp / MARKER).write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "report.md").write_text(report_markdown(report))
    return report


def source_avatar(net: AvatarModel, image: Path, saved: str | Path | None, fit: int, progress: bool) -> tuple[Avatar | None, Avatar]:
    """(feed-forward avatar or None, the avatar to animate): ``saved`` loaded as it is, else ``image`` reconstructed
    and personalised with ``fit`` steps (a diverged fit keeps the feed-forward avatar, with a warning)."""
    if saved is not None:
        if fit:
            raise ValueError("--avatar loads an avatar that is already personalised: drop --fit (or personalise from --image)")
        return None, Avatar.load(saved, net)
    if fit < 0:
        raise ValueError(f"--fit takes a number of steps >= 0, got {fit}")
    ff = Avatar.from_image(image, net=net)
    if not fit:
        return None, ff
    fitted = ff.personalize(fit, progress=progress)
    if fitted.fit.diverged:
        log.warning("personalisation stopped: %s; the feed-forward avatar is kept", fitted.fit.diverged)
    return ff, fitted


def _report(avatar: Avatar, warm: dict, net: AvatarModel, image: Path, d, per_lod: list[dict], size: int, video: str, load_s: float,
            wall_s: float) -> dict:
    notes = []
    if avatar.fit is not None and avatar.fit.diverged:
        notes.append(f"personalisation stopped ({avatar.fit.diverged}): the feed-forward avatar is shown")
    if not net.trained:
        notes.append("the model is UNTRAINED: the pictures show the pipeline, not a result")
    if "random" in net.encoder.weights_source:
        notes.append("the DINOv2 encoder has random weights (offline stand-in): its features carry no learned meaning")
    return {
        "checkpoint": net.label,
        "preset": net.preset,
        "encoder": f"{net.cfg.encoder.name}, weights: {net.encoder.weights_source}",
        "source": _shown(image),
        "driver": {"name": _shown(Path(d.name)), "frames": len(d), "fps": d.fps, "translation": d.translation},
        "size": size,
        "reconstruction_s": {k: round(v, 4) for k, v in avatar.seconds.items()},
        "reconstruction_s_model": round(avatar.seconds["encoder"] + avatar.seconds["reconstruct"], 4),
        "reconstruction_s_warm": round(warm["encoder"] + warm["reconstruct"], 4),
        "lods": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()} for row in per_lod],
        "personalisation": None if avatar.fit is None else {"steps": avatar.fit.steps, "seconds": round(avatar.fit.seconds, 2),
                                                             "loss_first": round(avatar.fit.losses[0], 4), "loss_last": round(avatar.fit.losses[-1], 4),
                                                             "diverged": avatar.fit.diverged},
        "video": video,
        "ply": [f"avatar_lod{row['lod']}.ply" for row in per_lod],
        "device": str(net.device),
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "load_average": [round(x, 2) for x in os.getloadavg()],
                    "platform": platform.platform()},
        "model_load_s": round(load_s, 3),
        "wall_s": round(wall_s, 2),
        "notes": notes,
    }


def _shown(path: Path) -> str:
    """A path as the report shows it: relative to the working folder when inside it, else its name."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return path.name


def report_markdown(r: dict) -> str:
    """The report as a short markdown page."""
    lines = [
        "# omg-lite demo", "",
        f"- checkpoint: {r['checkpoint']}", f"- encoder: {r['encoder']}",
        f"- source: {r['source']}; driver: {r['driver']['name']} ({r['driver']['frames']} frames at {r['driver']['fps']:g} fps, "
        f"translation: {r['driver']['translation']})",
        f"- reconstruction: {r['reconstruction_s_model']:.3f} s (encoder {r['reconstruction_s']['encoder']:.3f} s + model "
        f"{r['reconstruction_s']['reconstruct']:.3f} s) the first time, {r['reconstruction_s_warm']:.3f} s once warm; "
        f"tracking {r['reconstruction_s'].get('track', 0):.2f} s",
        *([] if not r.get("personalisation") else [f"- personalised: {r['personalisation']['steps']} steps in {r['personalisation']['seconds']:.1f} s, "
                                                    f"loss {r['personalisation']['loss_first']:.4f} -> {r['personalisation']['loss_last']:.4f}"]),
        f"- rendered at {r['size']}x{r['size']} on {r['device']}; load average {r['machine']['load_average']} on "
        f"{r['machine']['cpu_count']} CPUs (timings on a shared machine are noisy); wall time {r['wall_s']:.1f} s", "",
        "| LOD | head | shoulder | total | FPS | ms / frame (median) |", "|---|---|---|---|---|---|",
    ]
    lines += [f"| {x['lod']} | {x['head']:,} | {x['shoulder']:,} | {x['total']:,} | {x['fps']:.2f} | {x['ms_per_frame']:.1f} |" for x in r["lods"]]
    lines += ["", f"Video: `{r['video']}`; Gaussians: {', '.join(f'`{p}`' for p in r['ply'])}."]
    lines += [""] + [f"**Note:** {n}." for n in r["notes"]]
    return "\n".join(lines).rstrip() + "\n"


def check_video_out(out: Path, overwrite: bool) -> None:
    """Refuse an --out video that is not .mp4 / .gif, exists without --overwrite, or cannot be written."""
    if Path(out).suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"--out {Path(out).name}: the output video must end in .mp4 or .gif")
    check_output_file(out, overwrite)


def reenact(checkpoint: str | Path | None, source: str | Path, driver: str | Path, out: str | Path, lod: int | None = None,
            preset: str | None = None, size: int | None = None, max_frames: int = MAX_FRAMES, net: AvatarModel | None = None,
            progress: bool = True, overwrite: bool = False, fit: int = 0, avatar: str | Path | None = None) -> Path:
    """Reconstruct ``source`` (or load ``avatar``), personalise it with ``fit`` steps, drive it with ``driver`` at one level,
    write the video ``out`` (.mp4 or .gif)."""
    out = Path(out)
    check_video_out(out, overwrite)
    net = net or AvatarModel.load(checkpoint, preset)
    lod = net.model.levels if lod is None else lod
    if not 0 <= lod <= net.model.levels:
        raise ValueError(f"--lod {lod}: this model has levels 0..{net.model.levels}")
    d = load_driver(driver, net.head_model, net.cfg, max_frames)
    _, av = source_avatar(net, source, avatar, fit, progress)
    av.lod = lod
    frames = to_uint8(av.animate(d, size=size, progress=progress))
    return write_frames(out, frames, d.fps)


def personalize(image: str | Path, out: str | Path, video: str | Path | None = None, steps: int = FIT_STEPS, fit_frames: int = 24,
                max_frames: int = DEMO_MAX_FRAMES, overwrite: bool = False, net: AvatarModel | None = None, progress: bool = True) -> dict:
    """Reconstruct ``image``, personalise it on the photo (and ``video``'s tracked frames), save it into OUT with
    OUT/compare.png [source | feed-forward | personalised] at each level, in the source pose; -> summary."""
    from PIL import Image

    from omg_lite.evaluate import psnr
    from omg_lite.io import check_output_folder
    from omg_lite.avatar_file import AVATAR_JSON
    from omg_lite.personalize import source_frames, video_frames

    check_output_folder(Path(out), overwrite, AVATAR_JSON, "an omg-lite personalised avatar")
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    ff = Avatar.from_image(image, net=net)
    clip = None if video is None else video_frames(ff, video, max_frames, fit_frames)
    fitted = ff.personalize(steps, clip, progress=progress)
    if fitted.fit.diverged:
        log.warning("personalisation stopped: %s; the feed-forward avatar is saved", fitted.fit.diverged)
    target = source_frames(ff)
    rows, panels = [], [to_uint8(target.images)[0]]
    for k in ff.lods:
        a, b = (av.render(target.params, target.camera, k).refined.clamp(0, 1) for av in (ff, fitted))
        rows.append({"lod": k, "psnr_feed_forward": float(psnr(a, target.images)[0]), "psnr_personalised": float(psnr(b, target.images)[0])})
        panels += [to_uint8(a)[0], to_uint8(b)[0]]
    path = fitted.save(out, overwrite)
    from omg_lite.io import atomic_file

    with atomic_file(path / "compare.png", suffix=".png") as tmp:
        Image.fromarray(np.concatenate(panels, 1)).save(tmp)
    return {"out": str(path), "steps": fitted.fit.steps, "seconds": fitted.fit.seconds, "frames": fitted.fit.frames,
            "diverged": fitted.fit.diverged, "loss_first": fitted.fit.losses[0], "loss_last": fitted.fit.losses[-1], "source_psnr": rows}
