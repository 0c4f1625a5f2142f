"""The subcommand functions of ``omg-lite`` (except ``bench``, which lives in ``cli.py``).

Each function's signature is its command line (tyro) and its docstring the help text. They only
parse, call the package and print: the work lives in the modules they import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import tyro

COMMANDS: dict = {}
SIZE, FRAMES, LOD = (16, 2048), (1, 1_000_000), (0, 9)  # valid ranges of --size, --max-frames / --steps / --heldout, --lod


def check_args(**args: tuple[int | None, tuple[int, int]]) -> None:
    """Refuse a command-line number outside its range, naming the flag (before any work)."""
    for name, (value, (lo, hi)) in args.items():
        if value is not None and not lo <= value <= hi:
            raise ValueError(f"--{name.replace('_', '-')} {value}: choose a value in [{lo}, {hi}]")


def synth(
    out: Path,
    identities: int = 2,
    frames: int = 3,
    size: int = 128,
    seed: int = 0,
    overwrite: bool = False,
    flame_path: Path | None = None,
    hair: bool = False,
) -> None:
    """Render a synthetic portrait set: heads on shoulders with masks, depth and ground-truth head parameters.

    Args:
        out: Folder to write (refused if it exists and is not empty, unless --overwrite).
        identities: Number of identities (one clip each).
        frames: Frames per identity (new expression and head pose each).
        size: Image side in pixels (32 to 2048).
        seed: Random seed; the same seed writes the same bytes.
        overwrite: Replace an existing set at --out.
        flame_path: A FLAME pickle (generic_model.pkl / flame2023.pkl); default: the offline stand-in head.
        hair: Give each identity a hair volume outside the head mesh (moves with the head) and write hair_mask/ (synth.hair).
    """
    from omg_lite.config import Config
    from omg_lite.synth import write_synth

    cfg = Config()
    cfg.head.flame_path = None if flame_path is None else str(flame_path)
    cfg.synth.hair = hair
    path = write_synth(out, identities, frames, size, seed, overwrite=overwrite, cfg=cfg)
    print(f"wrote {identities} identities x {frames} frames at {size}x{size} to {path}")


COMMANDS["synth"] = synth


def track(
    out: Path,
    image: Path | None = None,
    video: Path | None = None,
    overwrite: bool = False,
    flame_path: Path | None = None,
    overrides: Annotated[tuple[str, ...], tyro.conf.arg(name="set")] = (),
) -> None:
    """Track a photo or a video: landmarks, portrait crop, portrait mask and per-frame head parameters.

    Writes OUT in the layout of one `omg-lite synth` clip (params.npz, rgb/, mask/) plus track.json.

    Args:
        out: Folder to write (refused if it exists and is not empty, unless --overwrite).
        image: A photo (png, jpg, ...) with a face.
        video: A video (anything FFmpeg reads); frames without a face are kept and marked invalid.
        overwrite: Replace an earlier track result at --out.
        flame_path: A FLAME pickle; default: the offline stand-in head.
        overrides: track.* / camera.* changes, e.g. --set track.size=256 track.smooth=0 track.max_frames=100.
    """
    from omg_lite.config import Config, apply_overrides
    from omg_lite.tracking.track import track as run_track

    cfg = apply_overrides(Config(), list(overrides))
    cfg.head.flame_path = None if flame_path is None else str(flame_path)
    r = run_track(None if image is None else str(image), None if video is None else str(video), str(out), cfg, overwrite)
    ok = r.valid
    err = r.errors[ok] / r.interocular[ok]
    print(
        f"tracked {len(ok)} frame(s), {int(ok.sum())} with a face, into {out}: crop {r.crop.side}px -> {r.crop.size}px, "
        f"landmark error {100 * err.mean():.2f}% of the inter-ocular distance (interior iBUG points), "
        f"{r.seconds['detect_per_frame'] * 1e3:.0f} ms detection + {r.seconds['fit_per_frame'] * 1e3:.0f} ms fitting per frame"
    )


COMMANDS["track"] = track


def train(
    out: Path,
    preset: str | None = None,
    overrides: Annotated[tuple[str, ...], tyro.conf.arg(name="set")] = (),
    resume: bool = False,
) -> None:
    """Train the OMG model on self-supervised source/driver pairs, coarse-to-fine (paper Sec. 4.1).

    Multi-process: torchrun --nproc_per_node N -m omg_lite.cli train ... (DDP; gloo on CPU, NCCL on CUDA).

    Args:
        out: Run folder: config.json, checkpoints/, tb/ (TensorBoard logs), data/ (the synthetic set when train.data is empty), feature_cache/.
        preset: smoke (CI, seconds), lite (this CPU, 128x128) or paper (512x512, one A100); default smoke; with --resume, the run's own.
        overrides: section.field=value changes to the preset, e.g. --set train.steps=100 train.data=DIR.
        resume: Continue the run in --out from its newest checkpoint, exactly as if it had not stopped.
    """
    from omg_lite.config import apply_overrides, from_preset
    from omg_lite.io import check_writable
    from omg_lite.train import Trainer, ddp, run_config

    check_writable(out / "config.json")  # before any work
    if resume:
        name, cfg = run_config(out)
        if preset is not None and preset != name:
            raise ValueError(f"{out} is a {name!r} run; --resume continues it with its own config (drop --preset {preset}, change fields with --set)")
        cfg = apply_overrides(cfg, list(overrides))
    else:
        name = preset or "smoke"
        cfg = from_preset(name, list(overrides))
    trainer = Trainer(cfg, out, resume=resume, preset_name=name)
    try:
        trainer.fit()
        held = trainer.evaluate() if trainer.cfg.train.heldout > 0 else {}
    finally:
        ddp.cleanup()
    if trainer.dist.main:
        print(f"trained {trainer.step} steps; newest checkpoint {trainer.checkpoint}; logs: tensorboard --logdir {out / 'tb'}")
        if held:
            print("held-out identities: " + ", ".join(f"{k.upper()} {v:.4g}" for k, v in held.items()) + f" (details: {out / 'heldout.json'})")


COMMANDS["train"] = train


def run_eval(
    data: Path,
    checkpoint: Path | None = None,
    lod: int | None = None,
    split: str = "all",
    heldout: int | None = None,
    max_frames: int | None = None,
    cross: bool = True,
    motion: bool = True,
    identity: bool = True,
    fit: int = 0,
    fit_frames: int = 0,
    preset: str | None = None,
    json: bool = False,
    encoder_weights: str | None = None,
    flame_path: Path | None = None,
) -> None:
    """Self- and cross-reenactment metrics (PSNR, SSIM, LPIPS, CSIM, same-person rate, AKD, AED, APD) with baselines.

    Args:
        data: Clips as omg-lite synth / omg-lite track write them (CLIP/params.npz, CLIP/rgb/, CLIP/mask/).
        checkpoint: A training run folder or a step_XXXXXX.safetensors file; default: data_samples/lite.
        lod: Evaluate one level of detail; default: every level.
        split: all clips, or heldout: the last --heldout clips by name (default: the checkpoint's train.heldout).
        heldout: Number of held-out clips for --split heldout.
        max_frames: Read at most this many frames per clip.
        cross: Also cross-reenactment (clip i's avatar driven by clip i+1).
        motion: AKD / AED / APD (landmark detection and fitting: the slow part).
        identity: CSIM and the same-person rate (dlib's face descriptor, about 0.2 s per image).
        fit: Also score the avatar personalised from the source photo with this many steps (rows coarse+fit, full+fit).
        fit_frames: The fit also sees the clip's frames 1..N, and every row scores only the frames after N (half-clip protocol).
        preset: Refuse a checkpoint trained with another preset.
        json: Print JSON instead of a markdown table.
        encoder_weights: The DINOv2 weights file the checkpoint was trained on, when it was a local file.
        flame_path: The FLAME pickle the checkpoint was trained on, when it was trained on FLAME.
    """
    from omg_lite.network import AvatarModel
    from omg_lite.evaluate import evaluate

    check_args(lod=(lod, LOD), heldout=(heldout, FRAMES), max_frames=(max_frames, FRAMES), fit=(fit, (0, FRAMES[1])),
               fit_frames=(fit_frames, (0, FRAMES[1])))
    net = AvatarModel.load(checkpoint, preset, encoder_weights=encoder_weights, flame_path=flame_path)
    r = evaluate(net, data, None if lod is None else [lod], split, heldout, max_frames, cross, motion, identity, fit, fit_frames,
                 progress=not json)
    print(r.to_json() if json else r.markdown())


COMMANDS["eval"] = run_eval


def tables(
    out: Path,
    preset: str = "lite",
    steps: int | None = None,
    variants: tuple[str, ...] = ("full", "no_global", "no_local", "no_refiner", "no_shoulder"),
    overrides: Annotated[tuple[str, ...], tyro.conf.arg(name="set")] = (),
    readme: Path | None = None,
) -> None:
    """The paper's tables in miniature: train the full model and its ablations, evaluate per LOD and per variant on held-out identities.

    Writes OUT/tables.md and OUT/tables.json (and, with --readme README.md, the tables into its results section); reuses finished runs, resumes interrupted ones.

    Args:
        out: Folder for the data, the runs (OUT/runs/VARIANT) and the tables.
        preset: smoke (seconds, a pipeline check), lite (CPU hours) or paper.
        steps: Training steps per variant; default: the preset's.
        variants: full (required), no_global, no_local, no_refiner, no_shoulder.
        overrides: section.field=value changes to the preset for every variant, e.g. --set train.synth_identities=32.
        readme: Also write the tables between the marker lines '<!-- omg-lite tables: begin -->' and '<!-- omg-lite tables: end -->' of this file.
    """
    from omg_lite.io import check_writable
    from omg_lite.tables import make_tables

    check_args(steps=(steps, FRAMES))
    check_writable(out / "tables.md")  # before any work
    t = make_tables(out, preset, steps, tuple(variants), tuple(overrides), readme=readme)
    print(t.markdown())
    print(f"wrote {out / 'tables.md'} and {out / 'tables.json'}" + (f", and the tables into {readme}" if readme else ""))


COMMANDS["tables"] = tables


def prepare(
    videos: Path,
    out: Path,
    workers: int = 1,
    shard: str = "0/1",
    stride: int = 1,
    max_frames: int = 0,
    size: int = 512,
    min_face: float = 0.0,
    max_invalid: float = 0.5,
    max_several: float = 0.1,
    retry: bool = False,
    flame_path: Path | None = None,
    overrides: Annotated[tuple[str, ...], tyro.conf.arg(name="set")] = (),
    json: bool = False,
) -> None:
    """Turn a collection of portrait videos (VFHQ, HDTF, your own) into a training set: one tracked clip per video, in parallel, resumable, shardable.

    Writes OUT/CLIP/ (rgb/, mask/, params.npz, track.json, as omg-lite track) and OUT/index.jsonl (one line per video: status, reason, frames, valid frames, tracking error, seconds). A rerun skips finished videos and redoes interrupted ones.

    Args:
        videos: A folder (searched recursively), a text file listing one video path a line, or one video.
        out: The training-set folder (train with --set train.data=OUT).
        workers: Single-threaded worker processes (the CPU cores).
        shard: I/N: prepare only every N-th video from the I-th (one job of a job array; no coordinator).
        stride: Keep every stride-th frame.
        max_frames: Keep at most this many frames per video, after the stride (0: all).
        size: Side of the square portrait crops (the model's training size).
        min_face: Skip videos whose face is smaller than this, in source pixels (0: off).
        max_invalid: Skip videos where no face is found in more than this share of the frames.
        max_several: Skip videos where more than this share of the frames show several faces.
        retry: Redo the videos that failed or were skipped before.
        flame_path: A FLAME pickle; default: the offline stand-in head.
        overrides: track.* / camera.* / head.* changes, e.g. --set track.full_iters=300 head.n_shape=100 head.n_expr=50.
        json: Print the summary as JSON.
    """
    import json as _json

    from omg_lite.config import Config, apply_overrides
    from omg_lite.prepare import PrepareSettings
    from omg_lite.prepare import prepare as run_prepare

    cfg = apply_overrides(Config(), list(overrides))
    cfg.head.flame_path = None if flame_path is None else str(flame_path)
    cfg.track.size = size
    s = PrepareSettings(stride=stride, max_frames=max_frames, min_face=min_face, max_invalid=max_invalid, max_several=max_several)
    r = run_prepare(videos, out, cfg, s, workers=workers, shard=shard, retry=retry, progress=not json)
    if json:
        print(_json.dumps(r, indent=2))
        return
    per = f", {r['s_per_frame']:.3f} s per frame with {r['workers']} worker(s) ({r['cpu_s_per_frame']:.3f} CPU s per frame)" if r["s_per_frame"] else ""
    print(f"shard {r['shard']}: {r['this_shard']} of {r['videos']} videos; {r['done_now']} prepared now, {r['done_before']} before; "
          f"{r['ok']} ok, {len(r['skipped'])} skipped, {len(r['failed'])} failed; {r['frames_now']} frames in {r['seconds']:.1f} s{per}")  # fmt: skip
    for kind in ("skipped", "failed"):
        for name, reason in r[kind]:
            print(f"{kind}: {name}: {reason}")
    if r["pending"]:
        print(f"{r['pending']} video(s) of the collection are not finished yet (other shards, or an interrupted run: rerun to finish)")
    print(f"index: {Path(r['out']) / 'index.jsonl'}; train with: omg-lite train --set train.data={r['out']}")


COMMANDS["prepare"] = prepare
