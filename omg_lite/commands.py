"""The subcommand functions of ``omg-lite`` (except ``bench``, which lives in ``cli.py``).

Each function's signature is its command line (tyro) and its docstring the help text. They only
parse, call the package and print: the work lives in the modules they import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import tyro

COMMANDS: dict = {}


def synth(
    out: Path,
    identities: int = 2,
    frames: int = 3,
    size: int = 128,
    seed: int = 0,
    overwrite: bool = False,
    flame_path: Path | None = None,
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
    """
    from omg_lite.config import Config
    from omg_lite.synth import write_synth

    cfg = Config()
    cfg.head.flame_path = None if flame_path is None else str(flame_path)
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
    from omg_lite.config import apply_overrides
    from omg_lite.config import preset as named_preset
    from omg_lite.train import Trainer, ddp, run_config

    if resume:
        name, cfg = run_config(out)
        if preset is not None and preset != name:
            raise ValueError(f"{out} is a {name!r} run; --resume continues it with its own config (drop --preset {preset}, change fields with --set)")
    else:
        name = preset or "smoke"
        cfg = named_preset(name)
    trainer = Trainer(apply_overrides(cfg, list(overrides)), out, resume=resume, preset_name=name)
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
