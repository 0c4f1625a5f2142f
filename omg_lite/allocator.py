"""Keep freed memory for reuse: glibc's malloc tuned so that a frame's large buffers are not
returned to the kernel and faulted in again on the next frame.

Each render and each training step allocates its activations and splatting buffers afresh
(torch's CPU allocator and numba's arrays both call malloc). glibc serves every block above its
mmap threshold (128 KB, growing only up to 32 MB) with a fresh ``mmap`` and unmaps it on free,
so the next frame touches new pages: the lite refiner at 256x256 took 1,500-2,500 page faults
per call, 20-40 % of its CPU time on this 2-core machine (``omg-lite bench enact``, README
results). Raising the mmap and trim thresholds keeps those blocks in the heap; the process's
peak memory is unchanged, only its resident size no longer shrinks between frames.

Applied once, when ``omg_lite`` is imported, on Linux with glibc only (elsewhere nothing
happens). ``OMG_LITE_KEEP_FREED=0`` leaves malloc as it is (so do glibc's own
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` when set, which take precedence).
Why hand-written: no installable library sets malloc tunables of the running process (jemalloc
or tcmalloc would need ``LD_PRELOAD`` before Python starts).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)
MMAP_THRESHOLD = 512 << 20  # blocks above 512 MB still get their own mapping
TRIM_THRESHOLD = 1 << 30  # give back the top of the heap only when over 1 GB is free there


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True when applied."""
    if os.environ.get("OMG_LITE_KEEP_FREED", "1").strip().lower() in ("0", "false", "no"):
        return False
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


KEPT = keep_freed_memory()
