"""Reading and writing portrait videos with PyAV (FFmpeg), for ``omg-lite track --video``.

Enactment (paper Sec. 3.4) drives an avatar with the tracked parameters of every frame of a
driving video. Frames are decoded one at a time (a long video never sits in memory); a file
that is missing, not a video, or has no decodable frame is one clear error, and a stream that
breaks part-way keeps the frames decoded so far and says so in the log.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from omg_lite.io import atomic_file

log = logging.getLogger(__name__)

# What the package treats as a video (a driver, a folder of sources for prepare); PyAV decodes each.
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts", ".gif")


def _open(path: Path):
    import av

    if not path.is_file():
        raise FileNotFoundError(f"no video at {path}")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a readable video ({e})") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path} has no video stream")
    return container


def video_info(path: str | os.PathLike) -> dict:
    """Frame rate, frame count (as the container states it, 0 if unknown) and size of a video."""
    path = Path(path)
    container = _open(path)
    try:
        s = container.streams.video[0]
        fps = float(s.average_rate) if s.average_rate else 0.0
        return {"fps": fps, "frames": int(s.frames or 0), "width": s.codec_context.width, "height": s.codec_context.height}
    finally:
        container.close()


def read_frames(path: str | os.PathLike, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decode a video's frames as RGB uint8 arrays [H, W, 3], one at a time."""
    import av

    path = Path(path)
    container = _open(path)
    n = 0
    try:
        try:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
                n += 1
                if max_frames is not None and n >= max_frames:
                    return
        except av.error.FFmpegError as e:
            if n == 0:
                raise ValueError(f"{path}: no frame could be decoded ({e})") from None
            log.warning("%s: the stream broke after %d frames (%s); keeping those", path, n, e)
        if n == 0:
            raise ValueError(f"{path}: the video has no frames")
    finally:
        container.close()


def h264_available() -> bool:
    """Whether this PyAV build can encode H.264 (libx264)."""
    import av

    try:
        av.codec.Codec("libx264", "w")
    except av.codec.codec.UnknownCodecError:
        return False
    return True


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 25.0, codec: str = "libx264", crf: int = 12) -> Path:
    """Encode RGB uint8 frames [H, W, 3] into ``path``, atomically; odd sides get one edge pixel (4:2:0 needs even)."""
    import av

    path = Path(path)
    with atomic_file(path, suffix=path.suffix) as tmp:
        with av.open(tmp, mode="w") as container:
            stream = None
            for frame in frames:
                frame = np.asarray(frame, dtype=np.uint8)
                frame = np.ascontiguousarray(np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge"))
                if stream is None:
                    stream = container.add_stream(codec, rate=round(fps))
                    stream.height, stream.width = frame.shape[:2]
                    stream.pix_fmt = "yuv420p"
                    if codec == "libx264":
                        stream.options = {"crf": str(crf)}
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            if stream is None:
                raise ValueError("write_video: no frames to write")
            for packet in stream.encode():
                container.mux(packet)
    return path
