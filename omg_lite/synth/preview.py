"""A contact sheet of a synth set: one row per clip, its frames, then the masks of its first frame.

The mask tile shows the head mask in red and the torso mask in green over a darkened portrait,
the split that the paper's shoulder branch relies on (M_s = portrait mask - head z-buffer mask).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from omg_lite.synth.dataset import SynthDataset


def contact_sheet(root: str | Path, clips: int | None = None, frames: int | None = None, tile: int | None = None) -> Image.Image:
    """Frames of the first ``clips`` clips side by side (``tile`` pixels each), plus a mask tile per row."""
    ds = SynthDataset(root)
    n_clips = min(clips or len(ds.clips), len(ds.clips))
    n_frames = min(frames or ds.frames, ds.frames)
    rows = []
    for c in range(n_clips):
        row = []
        for j in range(n_frames):
            item = ds[c * ds.frames + j]
            row.append((item["rgb"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
            if j == 0:
                first = item
        overlay = row[0].astype(np.float32) * 0.35
        overlay[first["head_mask"].numpy()] += np.array([160.0, 0.0, 0.0])
        overlay[first["torso_mask"].numpy()] += np.array([0.0, 160.0, 0.0])
        row.append(overlay.clip(0, 255).astype(np.uint8))
        rows.append(np.concatenate(row, 1))
    sheet = Image.fromarray(np.concatenate(rows, 0))
    if tile:
        size = ds.meta["size"]
        sheet = sheet.resize((sheet.width * tile // size, sheet.height * tile // size), Image.LANCZOS)
    return sheet
