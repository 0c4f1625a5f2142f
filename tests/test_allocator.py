"""omg_lite.allocator: freed frame buffers are reused, not faulted in again.

Independent truth: the kernel's own count of minor page faults (getrusage), in a fresh Python
per case, for the same loop of 64 MB allocations that each render makes in miniature.
"""

import json
import os
import subprocess
import sys

import pytest

LOOP = """
import json, resource, sys
import numpy as np
import omg_lite
for _ in range(2):  # warm-up: the first block is faulted in either way
    np.ones(16 << 20, np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    np.ones(16 << 20, np.float32)  # 64 MB, freed at once
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"kept": omg_lite._allocator.KEPT, "faults": faults}))
"""


def _run(**env) -> dict:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env
    out = subprocess.run([sys.executable, "-c", LOOP], env=full, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_blocks_are_reused_without_page_faults():
    kept, plain = _run(OMG_LITE_KEEP_FREED="1"), _run(OMG_LITE_KEEP_FREED="0")
    assert kept["kept"] and not plain["kept"]
    # glibc unmaps each block, so every allocation faults fresh pages in (at least 64 faults per
    # 64 MB even where the kernel maps 1 MB per fault; 544 per block seen here) ...
    assert plain["faults"] >= 10 * 64
    # ... and kept in the heap, the ten allocations reuse the warm-up's pages (0 seen here).
    assert kept["faults"] * 20 < plain["faults"]


def test_glibc_own_setting_takes_precedence():
    assert not _run(OMG_LITE_KEEP_FREED="1", MALLOC_MMAP_THRESHOLD_="131072")["kept"]
