"""``omg-lite prepare``: a collection of portrait videos (VFHQ, HDTF, your own) -> a training set.

The paper trains on VFHQ (766,263 frames of about 15K clips, Sec. 4.1). Each video goes through
the tracker of ``omg-lite track`` (``tracking.track.track_frames`` and ``write_track``: landmarks,
one portrait crop per clip, the 3DMM fit, portrait masks) and becomes one clip folder in the
layout training reads (``omg_lite.train.data``)::

    DATA/CLIP/               rgb/, mask/, params.npz, track.json  (as omg-lite track writes them)
    DATA/index.jsonl         one line per video: name, source, sha256, status (ok / skipped /
                             failed), reason, frames kept, valid frames, tracking error (% of the
                             inter-ocular distance), face size (source px), seconds (wall and
                             CPU of the worker), notes
    DATA/.prepare/           settings.json (a rerun or another shard must use the same) and
                             records/CLIP.json (one per finished video: the index's lines)

Parallel, resumable, shardable, with no coordinator:

- the videos are sorted by path; ``--shard I/N`` takes every N-th from the I-th, so the machines
  of a job array share nothing but the output folder;
- ``--workers W`` runs W single-threaded processes (one clip each at a time);
- a clip is written into a hidden temporary folder and renamed into place (``io.output_folder``),
  then its record is written (``io.atomic_file``): a video counts as done only when its record
  exists, so a rerun after Ctrl-C, a kill or a crash skips finished videos and redoes the rest
  (removing what a killed run left behind);
- bad input never stops the run: a missing, unreadable, empty, corrupt or truncated file, a video
  with no face, several faces, too small a face or too few tracked frames, and a duplicate
  (same sha256 as an earlier video in the sorted list; only files of equal size are hashed
  against each other, so every shard reaches the same verdict) each get a record with the reason.

Every run (and every shard) rewrites DATA/index.jsonl from all records present at its end.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from omg_lite.config import Config
from omg_lite.io import atomic_file, check_writable, remove_stale
from omg_lite.prepare_sources import Source, duplicate_of, find_videos, parse_shard, sha256

STATE = ".prepare"
INDEX = "index.jsonl"


@dataclass(frozen=True)
class PrepareSettings:
    """What ``prepare`` keeps of each video (the crop size and fitting are ``cfg.track``)."""

    # Keep every stride-th frame.
    stride: int = 1
    # Keep at most this many frames per video, after the stride (0: all).
    max_frames: int = 0
    # Skip videos whose face size s (tracking.crop: max(2 |e_l - e_r|, 1.8 |m - e|), source pixels) is below this (0: off).
    min_face: float = 0.0
    # Skip videos where tracking finds no face in more than this share of the kept frames.
    max_invalid: float = 0.5
    # Skip videos where more than this share of the kept frames show several faces.
    max_several: float = 0.1

    def __post_init__(self) -> None:
        if self.stride < 1 or self.max_frames < 0 or self.min_face < 0:
            raise ValueError(f"stride must be >= 1 and max_frames, min_face >= 0 (got {self.stride}, {self.max_frames}, {self.min_face})")
        for k in ("max_invalid", "max_several"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ValueError(f"{k.replace('_', '-')} is a share of the frames: choose a value in [0, 1], got {getattr(self, k)}")


# -- one video -> one clip (runs in a worker process) -----------------------------------------------
class _CountingDetector:
    """The tracker's landmark detector, recording how many faces each frame showed."""

    def __init__(self, detector):
        self.detector, self.faces = detector, []

    def detect(self, image):
        from omg_lite.tracking.landmarks import NoFaceError

        try:
            found = self.detector.detect(image)
        except NoFaceError:
            self.faces.append(0)
            raise
        self.faces.append(found.n_faces)
        return found


class _Notes(logging.Handler):
    """Warnings the tracker logs while one clip runs (a stream that broke part-way, lost faces)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


_WORKER: dict = {}


def _init_worker() -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def _tools(cfg: Config):
    """The head model and landmark detector of this process, built once."""
    if not _WORKER:
        from omg_lite.head import head_from_config
        from omg_lite.tracking.landmarks import LandmarkDetector

        _WORKER["head"] = head_from_config(cfg.head)
        _WORKER["detector"] = LandmarkDetector(face=cfg.track.face)
    return _WORKER["head"], _WORKER["detector"]


def _frames(path: Path, s: PrepareSettings) -> Iterator[np.ndarray]:
    from omg_lite.tracking.video import read_frames

    return itertools.islice(read_frames(path, s.max_frames * s.stride or None), 0, None, s.stride)


def _judge(result, faces: list[int], cfg: Config, s: PrepareSettings) -> str | None:
    """Why a tracked video is skipped, or None."""
    M = len(result.valid)
    lost, several = int((~result.valid).sum()), sum(n > 1 for n in faces)
    face = result.crop.side / cfg.track.crop_ratio
    if lost > s.max_invalid * M:
        return f"no face in {lost} of {M} frames (more than --max-invalid {s.max_invalid:g})"
    if several > s.max_several * M:
        return f"several faces in {several} of {M} frames (more than --max-several {s.max_several:g})"
    if face < s.min_face:
        return f"face size {face:.0f} px is below --min-face {s.min_face:g}"
    if M - lost < 2:
        return f"{M - lost} frame(s) with a face; training pairs need at least 2"
    return None


def prepare_clip(src: Source, out: Path, cfg: Config, s: PrepareSettings, digest: str, duplicate: str | None) -> dict:
    """Track one video into ``out / src.name`` and write its record; never raises for bad input."""
    from omg_lite.tracking.track import track_frames, write_track

    head, detector = _tools(cfg)  # once per process, outside the clip's time; a broken install stops the run here
    t0, c0 = time.perf_counter(), time.process_time()
    rec = _record(src, digest)
    notes = _Notes()
    logging.getLogger("omg_lite").addHandler(notes)
    try:
        if duplicate is not None:
            rec.update(status="skipped", reason=f"duplicate of {duplicate} (same sha256)")
        else:
            counter = _CountingDetector(detector)
            result = track_frames(lambda: _frames(src.path, s), head, cfg, video=True, detector=counter)
            ok = result.valid
            rec.update(frames=int(len(ok)), valid=int(ok.sum()), face_px=round(result.crop.side / cfg.track.crop_ratio, 1),
                       error_pct_iod=round(float(100 * np.mean(result.errors[ok] / result.interocular[ok])), 3))  # fmt: skip
            reason = _judge(result, counter.faces, cfg, s)
            if reason:
                rec.update(status="skipped", reason=reason)
            else:
                info = {"source": str(src.path), "kind": "video", "sha256": digest, "head_model": _head_name(head), "n_shape": int(head.n_shape),
                        "n_expr": int(head.n_expr), "prepare": asdict(s), "track": asdict(cfg.track), "camera": asdict(cfg.camera)}  # fmt: skip
                write_track(out / src.name, result, _frames(src.path, s), True, info)
    except Exception as e:  # noqa: BLE001 - a bad video is recorded, never fatal
        rec.update(status="failed", reason=str(e) if isinstance(e, (ValueError, OSError)) else f"{type(e).__name__}: {e}")
    finally:
        logging.getLogger("omg_lite").removeHandler(notes)
    rec["notes"] = notes.lines
    rec["seconds"], rec["cpu_seconds"] = round(time.perf_counter() - t0, 3), round(time.process_time() - c0, 3)
    _write_json(out / STATE / "records" / f"{src.name}.json", rec)
    return rec


def _record(src: Source, digest: str, status: str = "ok", reason: str = "") -> dict:
    """One line of the index (the fields the tracker fills start empty)."""
    return {"name": src.name, "source": str(src.path), "sha256": digest, "status": status, "reason": reason, "frames": 0, "valid": 0,
            "error_pct_iod": None, "face_px": None, "seconds": 0.0, "cpu_seconds": 0.0, "notes": []}  # fmt: skip


def _head_name(head) -> str:
    return str(head.source) if head.source == "standin" else Path(str(head.source)).name


def _write_json(path: Path, obj: dict) -> None:
    with atomic_file(path, suffix=".tmp") as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=1) + "\n")


def _clear_leftovers(out: Path, name: str) -> None:
    """What a killed run left for this clip: temporary folders (io.remove_stale), and a clip without a record."""
    remove_stale(out / name)
    if (out / name / "track.json").is_file():  # ours (write_track's marker), renamed into place before the kill
        shutil.rmtree(out / name)


# -- the run ---------------------------------------------------------------------------------------
def _settings_file(out: Path, cfg: Config, s: PrepareSettings) -> None:
    """Record the settings; a rerun or another shard with other settings is refused."""
    want = {"prepare": asdict(s), "track": asdict(cfg.track), "camera": asdict(cfg.camera),
            "head": {"flame_path": cfg.head.flame_path, "n_shape": cfg.head.n_shape, "n_expr": cfg.head.n_expr}}  # fmt: skip
    path = out / STATE / "settings.json"
    check_writable(out / INDEX)
    if path.is_file():
        have = json.loads(path.read_text())
        if have != want:
            diff = [f"{sec}.{k}: {have.get(sec, {}).get(k)!r} -> {v!r}" for sec in want for k, v in want[sec].items() if have.get(sec, {}).get(k) != v]
            raise ValueError(f"{out} was prepared with other settings ({'; '.join(diff[:4])}): use the same ones, or another --out")
        return
    if out.is_dir() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty and holds no {STATE}/settings.json, so it is not an omg-lite prepare output: choose another --out")
    _write_json(path, want)


def read_records(out: Path) -> dict[str, dict]:
    """The records of the finished videos under ``out`` (name -> index line)."""
    recs = {}
    for p in sorted((out / STATE / "records").glob("*.json")):
        try:
            recs[p.stem] = json.loads(p.read_text())
        except ValueError:
            continue  # never happens through atomic_file; a hand-edited file is redone
    return recs


def write_index(out: Path, sources: list[Source]) -> list[dict]:
    """DATA/index.jsonl: the records of ``sources`` (in their order) and any others found (by name)."""
    recs = read_records(out)
    order = [s.name for s in sources if s.name in recs] + sorted(set(recs) - {s.name for s in sources})
    lines = [recs[n] for n in order]
    with atomic_file(out / INDEX, suffix=".tmp") as tmp:
        Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in lines))
    return lines


def _todo(mine: list[Source], out: Path, retry: bool) -> list[Source]:
    """The videos without a record (or, with ``retry``, a failed / skipped one; or an ok one whose clip is gone)."""
    recs = read_records(out)
    done = lambda r: (out / r["name"] / "track.json").is_file() if r["status"] == "ok" else not retry  # noqa: E731
    return [x for x in mine if x.name not in recs or not done(recs[x.name])]


def _plan(src: Source, sources: list[Source], sizes: dict[Path, int]) -> tuple[str, str | None, str | None]:
    """-> (sha256, duplicate of, reason the file cannot be read)."""
    if src.path not in sizes:
        return "", None, f"{src.path}: no such file" if not os.path.lexists(src.path) else f"{src.path}: cannot be read"
    if sizes[src.path] == 0:
        return "", None, f"{src.path} is empty (0 bytes)"
    try:
        digest = sha256(src.path)
    except OSError as e:
        return "", None, f"{src.path} cannot be read ({e.strerror or e})"
    return digest, duplicate_of(src, sources, sizes, digest), None


def prepare(videos: str | os.PathLike, out: str | os.PathLike, cfg: Config | None = None, settings: PrepareSettings | None = None,
            workers: int = 1, shard: str = "0/1", retry: bool = False, progress: bool = True) -> dict:  # fmt: skip
    """Prepare the videos of ``videos`` (this shard's share) into ``out``; -> the run's summary."""
    from tqdm.auto import tqdm

    cfg, s = cfg or Config(), settings or PrepareSettings()
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    index, count = parse_shard(shard)
    sources, out = find_videos(videos), Path(out)
    _settings_file(out, cfg, s)
    sizes = {x.path: x.path.stat().st_size for x in sources if x.path.is_file() and os.access(x.path, os.R_OK)}  # readable files
    mine = sources[index::count]
    todo = _todo(mine, out, retry)
    t0, frames, recs = time.perf_counter(), 0, []
    bar = tqdm(total=len(todo), unit="video", desc=f"prepare {index}/{count}" if count > 1 else "prepare", disable=not progress)
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker) if workers > 1 else None
    try:
        pending: set = set()

        def submit(src: Source) -> None:
            _clear_leftovers(out, src.name)
            digest, dup, unreadable = _plan(src, sources, sizes)
            if unreadable:
                rec = _record(src, "", "failed", unreadable)
                _write_json(out / STATE / "records" / f"{src.name}.json", rec)
                finish(rec)
            elif pool is None:
                finish(_in_process(src, out, cfg, s, digest, dup))
            else:
                pending.add(pool.submit(prepare_clip, src, out, cfg, s, digest, dup))

        def finish(rec: dict) -> None:
            nonlocal frames
            recs.append(rec)
            frames += rec["frames"] if rec["status"] == "ok" else 0
            bar.update(1)
            bar.set_postfix(ok=sum(r["status"] == "ok" for r in recs), skipped=sum(r["status"] == "skipped" for r in recs),
                            failed=sum(r["status"] == "failed" for r in recs), frames=frames)  # fmt: skip

        for src in todo:
            submit(src)
            while len(pending) >= workers:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    pending.discard(f)
                    finish(f.result())
        for f in list(pending):
            finish(f.result())
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        lines = write_index(out, sources)
        if _WORKER and pool is None:
            _WORKER.pop("detector").close()
            _WORKER.clear()
    wall = time.perf_counter() - t0
    names = {x.name for x in mine}
    return {"out": str(out), "shard": f"{index}/{count}", "workers": workers, "videos": len(sources), "this_shard": len(mine),
            "done_now": len(recs), "done_before": len(mine) - len(todo), "indexed": len(lines),
            "pending": len({x.name for x in sources} - {r["name"] for r in lines}), "ok": sum(r["status"] == "ok" for r in lines if r["name"] in names),
            "skipped": [(r["name"], r["reason"]) for r in lines if r["status"] == "skipped" and r["name"] in names],
            "failed": [(r["name"], r["reason"]) for r in lines if r["status"] == "failed" and r["name"] in names],
            "frames_now": frames, "seconds": round(wall, 2), "s_per_frame": round(wall / frames, 4) if frames else None,
            "cpu_s_per_frame": round(sum(r["cpu_seconds"] for r in recs if r["status"] == "ok") / frames, 4) if frames else None}  # fmt: skip


def _in_process(src: Source, out: Path, cfg: Config, s: PrepareSettings, digest: str, dup: str | None) -> dict:
    """One worker: this process, single-threaded while it tracks."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return prepare_clip(src, out, cfg, s, digest, dup)
    finally:
        torch.set_num_threads(threads)
