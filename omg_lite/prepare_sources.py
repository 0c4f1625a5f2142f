"""The videos ``omg-lite prepare`` turns into clips: finding them, naming their clips, sharding, duplicates.

A collection is a folder (searched recursively by suffix), a text list of paths (one a line,
relative to the list's folder; '#' comments) or one video. Each video becomes a :class:`Source`
with a unique clip-folder name derived from its relative path; a video whose bytes equal an
earlier one's (sha256, hashed only among videos of equal size) is a duplicate.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from omg_lite.tracking.video import VIDEO_SUFFIXES


@dataclass(frozen=True)
class Source:
    name: str  # the clip folder's name
    path: Path


def _clip_name(rel: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", rel.with_suffix("").as_posix().replace("/", "__"))
    return "_" + name if name.startswith(".") or not name else name


def find_videos(videos: str | os.PathLike) -> list[Source]:
    """The videos under a folder (recursively, by suffix), in a list file (one path a line, relative
    to the list's folder; '#' comments) or one video file; sorted by path, with unique clip names."""
    videos = Path(videos)
    if videos.is_dir():
        paths, root = [p for p in videos.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and not p.is_dir()], videos
        if not paths:
            raise FileNotFoundError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) under {videos}")
    elif videos.is_file() and videos.suffix.lower() in VIDEO_SUFFIXES:
        paths, root = [videos], videos.parent
    elif videos.is_file():
        try:
            lines = videos.read_text().splitlines()
        except (UnicodeDecodeError, OSError) as e:
            raise ValueError(f"{videos} is neither a folder, a video nor a text list of videos ({e})") from None
        paths = [videos.parent / s for s in (ln.strip() for ln in lines) if s and not s.startswith("#")]
        if not paths:
            raise ValueError(f"the list {videos} names no videos (one path a line)")
        root = Path(os.path.commonpath([p.absolute().parent for p in paths]))
    else:
        raise FileNotFoundError(f"no folder, video or list of videos at {videos}")
    paths = sorted(set(paths), key=lambda p: p.absolute().relative_to(root.absolute()).as_posix())
    rels = [p.absolute().relative_to(root.absolute()) for p in paths]
    names = [_clip_name(r) for r in rels]
    clash = {n for n in names if names.count(n) > 1}
    names = [n + "_" + r.suffix.lstrip(".").lower() if n in clash else n for n, r in zip(names, rels)]
    if len(set(names)) < len(names):
        raise ValueError(f"videos under {videos} map to the same clip name ({sorted(n for n in names if names.count(n) > 1)[:3]}); rename them")
    return [Source(n, p) for n, p in zip(names, paths)]


def parse_shard(shard: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ValueError(f"--shard {shard!r}: expected I/N with 0 <= I < N, e.g. 0/4 (a SLURM array: $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
    return int(m.group(1)), int(m.group(2))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def duplicate_of(src: Source, sources: list[Source], sizes: dict[Path, int], digest: str) -> str | None:
    """The first earlier video with the same bytes, found by hashing only videos of equal size."""
    for other in sources:
        if other.path == src.path:
            return None
        if sizes.get(other.path) == sizes[src.path]:
            try:
                if sha256(other.path) == digest:
                    return other.name
            except OSError:
                continue
    return None
