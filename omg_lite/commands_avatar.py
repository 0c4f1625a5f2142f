"""The ``omg-lite`` subcommands that animate an avatar: ``demo``, ``reenact``, ``personalize``.

Like ``omg_lite.commands`` (which holds the others and their shared checks): each function's
signature is its command line (tyro) and its docstring the help text; the work lives in
``omg_lite.demo``.
"""

from __future__ import annotations

from pathlib import Path

from omg_lite.commands import FRAMES, LOD, SIZE, check_args
from omg_lite.config import DEMO_MAX_FRAMES, MAX_FRAMES

COMMANDS: dict = {}


def demo(
    image: Path | None = None,
    driver: Path | None = None,
    out: Path = Path("demo_out"),
    checkpoint: Path | None = None,
    preset: str | None = None,
    size: int | None = None,
    max_frames: int = DEMO_MAX_FRAMES,
    overwrite: bool = False,
    encoder_weights: str | None = None,
    flame_path: Path | None = None,
    fit: int = 60,
    avatar: Path | None = None,
) -> None:
    """One photo in, an animated avatar out: reconstruct once, personalise, animate at LOD 0, 1 and 2 side by side.

    Writes OUT/avatar.mp4 (or .gif), OUT/avatar_lod{0,1,2}.ply, OUT/source.png, OUT/report.md and OUT/report.json.

    Args:
        image: A portrait photo; default: a synthetic portrait shipped in data_samples (an identity the lite model never saw).
        driver: A params.npz, a folder with one (omg-lite track / synth output), an image or a video; default: data_samples/driver.
        out: Output folder (written atomically; refused if it exists and is not empty, unless --overwrite).
        checkpoint: A training run folder or a step_XXXXXX.safetensors file; default: data_samples/lite.
        preset: Refuse a checkpoint trained with another preset (smoke, lite, paper).
        size: Side of the rendered frames; default: the model's training size.
        max_frames: Refuse longer drivers (frames are never dropped silently).
        overwrite: Replace an earlier demo output at --out.
        encoder_weights: The DINOv2 weights file the checkpoint was trained on, when it was a local file.
        flame_path: The FLAME pickle the checkpoint was trained on, when it was trained on FLAME.
        fit: Personalisation steps on the photo before animating (0: the feed-forward avatar alone); shown beside the feed-forward one.
        avatar: A saved avatar (omg-lite personalize --out) to animate instead of reconstructing --image.
    """
    from omg_lite.network import AvatarModel
    from omg_lite import samples
    from omg_lite.demo import check_out, run_demo

    check_args(size=(size, SIZE), max_frames=(max_frames, FRAMES))
    check_out(out, overwrite)  # before loading anything
    net = AvatarModel.load(checkpoint, preset, encoder_weights=encoder_weights, flame_path=flame_path)
    r = run_demo(image, driver or samples.DRIVER, out, size=size, max_frames=max_frames, overwrite=overwrite, net=net,
                 fit=0 if avatar is not None else fit, avatar=avatar)
    fps = ", ".join(f"LOD {x['lod']} {x['fps']:.1f} fps ({x['total']:,} Gaussians)" for x in r["lods"])
    print(f"wrote {out}: {r['video']}, {len(r['ply'])} .ply, report.md; reconstruction {r['reconstruction_s_model']:.2f} s ({r['reconstruction_s_warm']:.2f} s warm); {fps}")
    for note in r["notes"]:
        print(f"note: {note}")


COMMANDS["demo"] = demo


def reenact(
    source: Path,
    driver: Path,
    out: Path,
    checkpoint: Path | None = None,
    lod: int | None = None,
    preset: str | None = None,
    size: int | None = None,
    max_frames: int = MAX_FRAMES,
    overwrite: bool = False,
    encoder_weights: str | None = None,
    flame_path: Path | None = None,
    fit: int = 0,
    avatar: Path | None = None,
) -> None:
    """Drive the avatar of one photo with a video or a params.npz and write the result as a video (for scripts).

    Args:
        source: The source photo.
        driver: A video, an image, a params.npz or a folder holding one (omg-lite track output).
        out: The video to write, .mp4 or .gif (written atomically; refused if it exists, unless --overwrite).
        checkpoint: A training run folder or a step_XXXXXX.safetensors file; default: data_samples/lite.
        lod: Level of detail 0..K; default: the finest.
        preset: Refuse a checkpoint trained with another preset.
        size: Side of the rendered frames; default: the model's training size.
        max_frames: Refuse longer drivers (frames are never dropped silently).
        overwrite: Replace an existing file at --out.
        encoder_weights: The DINOv2 weights file the checkpoint was trained on, when it was a local file.
        flame_path: The FLAME pickle the checkpoint was trained on, when it was trained on FLAME.
        fit: Personalisation steps on the source photo before driving it (0: the feed-forward avatar).
        avatar: A saved avatar (omg-lite personalize --out) to drive instead of reconstructing --source.
    """
    from omg_lite.network import AvatarModel
    from omg_lite.demo import check_video_out
    from omg_lite.demo import reenact as run_reenact

    check_args(size=(size, SIZE), max_frames=(max_frames, FRAMES), lod=(lod, LOD))
    check_video_out(out, overwrite)  # before loading anything
    net = AvatarModel.load(checkpoint, preset, encoder_weights=encoder_weights, flame_path=flame_path)
    path = run_reenact(checkpoint, source, driver, out, lod, preset, size, max_frames, net=net, overwrite=overwrite, fit=fit, avatar=avatar)
    print(f"wrote {path}")


COMMANDS["reenact"] = reenact


def personalize(
    image: Path,
    out: Path,
    video: Path | None = None,
    steps: int = 60,
    fit_frames: int = 24,
    max_frames: int = DEMO_MAX_FRAMES,
    checkpoint: Path | None = None,
    preset: str | None = None,
    overwrite: bool = False,
    encoder_weights: str | None = None,
    flame_path: Path | None = None,
) -> None:
    """Personalise the avatar of a photo: refine its Gaussians on the photo (and a short clip of the person), save it.

    Writes OUT/avatar.safetensors + OUT/avatar.json (reload with demo/reenact --avatar OUT), OUT/source.png and
    OUT/compare.png ([source | feed-forward | personalised] per level, source pose).

    Args:
        image: The source photo.
        out: Folder to write (atomically; refused if it exists and is not empty, unless --overwrite).
        video: A short clip of the same person (tracked; --fit-frames of its frames join the photo as targets).
        steps: Optimisation steps (levels of detail take turns).
        fit_frames: Clip frames used as targets, spread evenly over the clip.
        max_frames: Refuse longer clips.
        checkpoint: A training run folder or a step_XXXXXX.safetensors file; default: data_samples/lite.
        preset: Refuse a checkpoint trained with another preset.
        overwrite: Replace an earlier personalised avatar at --out.
        encoder_weights: The DINOv2 weights file the checkpoint was trained on, when it was a local file.
        flame_path: The FLAME pickle the checkpoint was trained on, when it was trained on FLAME.
    """
    from omg_lite.network import AvatarModel
    from omg_lite.demo import personalize as run_personalize
    from omg_lite.io import check_output_folder
    from omg_lite.avatar_file import AVATAR_JSON

    check_output_folder(out, overwrite, AVATAR_JSON, "an omg-lite personalised avatar")  # before loading anything
    net = AvatarModel.load(checkpoint, preset, encoder_weights=encoder_weights, flame_path=flame_path)
    r = run_personalize(image, out, video, steps, fit_frames, max_frames, overwrite, net=net)
    gains = ", ".join(f"LOD {x['lod']} {x['psnr_feed_forward']:.2f} -> {x['psnr_personalised']:.2f} dB" for x in r["source_psnr"])
    print(f"wrote {r['out']}: {r['steps']} steps on {r['frames']} frame(s) in {r['seconds']:.1f} s, loss {r['loss_first']:.4f} -> "
          f"{r['loss_last']:.4f}; PSNR on the source photo {gains}")
    if r["diverged"]:
        print(f"note: the fit stopped ({r['diverged']}); the feed-forward avatar was saved")


COMMANDS["personalize"] = personalize
