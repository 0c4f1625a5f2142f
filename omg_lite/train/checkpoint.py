"""Training checkpoints: written atomically, read without pickle, checked before use.

A run folder holds::

    RUN/config.json                      the full config (and preset name) of the run
    RUN/checkpoints/step_000500.safetensors   trainable weights (safetensors; frozen parts excluded)
    RUN/checkpoints/step_000500.state.pt      optimizer state, RNG states, step (torch.load(weights_only=True))
    RUN/checkpoints/latest               the name of the newest complete checkpoint ("step_000500")

Each file is written to a temporary name in the same folder, flushed to disk and renamed into
place (``os.replace`` is atomic on POSIX), weights first, then state, then ``latest``: a crash at
any moment leaves ``latest`` naming a complete checkpoint. The weights file's metadata carries a
format tag, the step, the config and a sha256 of every tensor's bytes, so a corrupt, truncated or
foreign file is refused with one clear error instead of being loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from omg_lite.io import atomic_file
from omg_lite.safe_load import load_torch

FORMAT = "omg_lite.train"
VERSION = "1"
LATEST = "latest"


def step_name(step: int) -> str:
    return f"step_{step:06d}"


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, fsync, then rename onto ``path``; nothing half-written survives."""
    with atomic_file(path) as tmp:
        write(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def tensors_digest(tensors: dict[str, Tensor]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, in name order."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(run: Path, step: int, weights: dict[str, Tensor], state: dict, config: dict, keep: int = 0) -> Path:
    """Write step ``step``'s weights and state, then point ``latest`` at them; keep the newest ``keep`` (0: all)."""
    folder = Path(run) / "checkpoints"
    name = step_name(step)
    weights = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    meta = {"format": FORMAT, "version": VERSION, "step": str(step), "config": json.dumps(config), "sha256": tensors_digest(weights)}
    atomic_write(folder / f"{name}.safetensors", lambda tmp: save_file(weights, tmp, metadata=meta))
    atomic_write(folder / f"{name}.state.pt", lambda tmp: torch.save({"format": FORMAT, "step": step, **state}, tmp))
    atomic_write_text(folder / LATEST, name + "\n")
    if keep > 0:
        for old in sorted(folder.glob("step_*.safetensors"))[:-keep]:
            old.unlink()
            (folder / old.name.replace(".safetensors", ".state.pt")).unlink(missing_ok=True)
    return folder / f"{name}.safetensors"


def latest_checkpoint(run: Path) -> Path | None:
    """The newest complete checkpoint's weights file, or None when the run has none."""
    folder = Path(run) / "checkpoints"
    pointer = folder / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    path = folder / f"{name}.safetensors"
    if not name.startswith("step_") or not path.is_file() or not (folder / f"{name}.state.pt").is_file():
        raise ValueError(f"{pointer} names {name!r} but its files are not in {folder}; the run folder was edited by hand: point 'latest' at an existing step_XXXXXX")
    return path


def read_tensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """A safetensors file's (tensors, metadata), nothing unpickled; damage raises SafetensorError or OSError."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    return load_file(str(path)), meta


def load_weights(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read and verify a weights file -> (tensors, metadata); any damage is a ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        tensors, meta = read_tensors(path)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"checkpoint {path} is corrupt or truncated (not a readable safetensors file: {e}); to resume from an earlier checkpoint write its name (e.g. step_000500) into checkpoints/latest, or retrain") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an omg_lite training checkpoint (its metadata has no format={FORMAT!r}); it was written by another program")
    if meta.get("version") != VERSION:
        raise ValueError(f"checkpoint {path} has format version {meta.get('version')!r}; this omg_lite reads version {VERSION}")
    if tensors_digest(tensors) != meta.get("sha256"):
        raise ValueError(f"checkpoint {path} is corrupt: its tensors do not match the checksum written with them; to resume from an earlier checkpoint write its name (e.g. step_000500) into checkpoints/latest, or retrain")
    return {_renamed(k): t for k, t in tensors.items()}, meta


# Modules renamed since checkpoints were first written: old state-dict prefix -> new one (the tensors are the same).
RENAMED_PREFIXES = {"model.heads.": "model.gaussian_heads.", "encoder.head.": "encoder.dense_head."}


def _renamed(key: str) -> str:
    old = next((p for p in RENAMED_PREFIXES if key.startswith(p)), None)
    return key if old is None else RENAMED_PREFIXES[old] + key[len(old):]


def load_state(path: str | os.PathLike) -> dict:
    """Read a ``.state.pt`` with :func:`omg_lite.safe_load.load_torch` (tensors, numbers, strings only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint state at {path} (each step_XXXXXX.safetensors has a step_XXXXXX.state.pt beside it)")
    try:
        state = load_torch(path)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"checkpoint state {path} is corrupt, truncated or not an omg_lite state file ({first})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not an omg_lite checkpoint state file; it was written by another program")
    return state


def check_fits(path: Path, tensors: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    """Refuse a checkpoint whose tensor names or shapes differ from the model's, naming the first few."""
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    shapes = [f"{k}: {tuple(tensors[k].shape)} vs {tuple(expected[k].shape)}" for k in sorted(set(tensors) & set(expected)) if tensors[k].shape != expected[k].shape]
    if missing or extra or shapes:
        parts = [f"missing {missing[:3]}" * bool(missing), f"unexpected {extra[:3]}" * bool(extra), f"shapes differ {shapes[:3]}" * bool(shapes)]
        raise ValueError(f"checkpoint {path} does not fit this model ({'; '.join(p for p in parts if p)}): it was trained with another configuration")
