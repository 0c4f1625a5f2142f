"""The subcommand functions of ``omg-lite`` (except ``bench``, which lives in ``cli.py``).

Each function's signature is its command line (tyro) and its docstring the help text. They only
parse, call the package and print: the work lives in the modules they import.
"""

from __future__ import annotations

from pathlib import Path

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
