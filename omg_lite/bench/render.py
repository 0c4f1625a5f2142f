"""``omg-lite bench render``: splatting speed and memory on a head-sized Gaussian cloud.

The cloud (``head_cloud``) stands in for an 80K-vertex head at LOD 2: N Gaussians on an
ellipsoid shell with semi-axes 7.5 x 10 x 9 cm (a head about 20 cm tall), directions uniform
on the sphere then stretched onto the ellipsoid, radii jittered by 3 %; scales uniform in
2-4 mm per axis, rotations uniform, opacities uniform in [0.2, 1], features uniform in [0, 1].
The camera (``head_camera``) is frontal, 1 m away, with a 15 degree field of view, so the head
fills about three quarters of the image height.

Figures per configuration:

- ``pairs``: Gaussian-pixel pairs blended, i.e. pairs with alpha >= 1/255 that were composited
  before the pixel's transmittance ran out (``RenderOutput.pairs``);
- ``ms``: median wall time of ``render()`` (with ``--backward``: plus the backward pass for a
  random upstream gradient on image, alpha and depth), after two warm-up calls; ``cpu_ms``: the
  mean CPU time per call, all threads together (steadier than wall time on a loaded machine);
- ``Mpairs_s``: pairs / time; ``ns_pair``: time / pairs. The cost is a N + b pairs (projection
  and binning per Gaussian, blending per pair); ``viz.splat.scaling_figure`` fits a and b;
  ``S`` is the image size (S x S), ``C`` the feature channels;
- ``peak_mb``: the peak resident memory of the process while rendering, and ``render_mb`` that
  peak minus the resident memory just before (inputs built, kernels loaded). Each configuration
  runs in a fresh Python process; the peak is reset after warm-up (``/proc/self/clear_refs``)
  so it holds the timed renders only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

from omg_lite.bench import Bench, peak_rss_mb, time_ms
from omg_lite.geometry.camera import Camera

TABLE_GAUSSIANS = (5_000, 20_000, 80_000)
TABLE_SIZES = (128, 256, 512)


def head_cloud(n: int, channels: int, seed: int = 0, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """A head-sized Gaussian cloud (see the module docstring) with batch 1: means [1, n, 3] etc."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(n, 3, generator=g)
    direction = direction / direction.norm(dim=1, keepdim=True)
    radius = 1.0 + 0.03 * torch.randn(n, 1, generator=g)
    means = direction * torch.tensor([0.075, 0.10, 0.09]) * radius
    cloud = dict(
        means=means,
        quats=torch.randn(n, 4, generator=g),
        scales=0.002 + 0.002 * torch.rand(n, 3, generator=g),
        opacities=0.2 + 0.8 * torch.rand(n, generator=g),
        features=torch.rand(n, channels, generator=g),
    )
    return {k: v[None].to(device) for k, v in cloud.items()}


def head_camera(size: int, device: torch.device | str | None = None) -> Camera:
    """The frontal camera of the benchmark: 1 m away, 15 degree field of view, size x size."""
    return Camera.frontal(batch=1, size=size, fov_deg=15.0, distance=1.0, device=device)


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_since_reset_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return peak_rss_mb()


def measure(gaussians: int, size: int, channels: int, backward: bool = False, backend: str = "numba",
            repeat: int = 5) -> dict:
    """One row of figures, measured in this process (``measure_fresh`` isolates the memory peak)."""
    from omg_lite.splat import render

    device = "cuda" if backend == "gsplat" else "cpu"
    cloud = head_cloud(gaussians, channels, device=device)
    camera = head_camera(size, device=device)
    if backward:
        for v in cloud.values():
            v.requires_grad_(True)
    upstream = None
    result = {}

    def step():
        nonlocal upstream
        out = render(**cloud, camera=camera, backend=backend)
        result["pairs"] = out.pairs
        if backward:
            outs = [out.image, out.alpha, out.depth]
            if upstream is None:
                g = torch.Generator(device=device).manual_seed(1)
                upstream = [torch.randn(x.shape, generator=g, device=device) for x in outs]
            torch.autograd.grad(outs, list(cloud.values()), upstream)  # gradients of every input

    step()  # loads (or compiles) the kernels before the memory baseline
    before = _current_rss_mb()
    have_reset = _reset_peak()
    cpu0 = time.process_time()
    ms = time_ms(step, device=device, warmup=1, repeat=repeat)
    cpu_ms = (time.process_time() - cpu0) * 1e3 / (1 + repeat)
    peak = _peak_since_reset_mb() if have_reset else peak_rss_mb()
    pairs = result["pairs"]
    return {
        "backend": backend,
        "N": gaussians,
        "S": size,
        "C": channels,
        "pass": "fwd+bwd" if backward else "fwd",
        "pairs": pairs if pairs is not None else "-",
        "ms": ms,
        "cpu_ms": cpu_ms,
        "Mpairs_s": pairs / ms / 1e3 if pairs else "-",
        "ns_pair": ms * 1e6 / pairs if pairs else "-",
        "peak_mb": peak,
        "render_mb": max(peak - before, 0.0),
    }


def measure_fresh(gaussians: int, size: int, channels: int, backward: bool = False, backend: str = "numba",
                  repeat: int = 5) -> dict:
    """``measure`` in a fresh Python process, so that its peak memory is this render's alone."""
    args = json.dumps(dict(gaussians=gaussians, size=size, channels=channels, backward=backward,
                           backend=backend, repeat=repeat))
    done = subprocess.run([sys.executable, "-m", "omg_lite.bench.render", args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"bench worker failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def scaling_table(gaussians=TABLE_GAUSSIANS, sizes=TABLE_SIZES, channels: int = 32, backward: bool = False,
                  backend: str = "numba", repeat: int = 3, fresh: bool = True) -> list[dict]:
    """Rows for every N x S (cost = a N + b pairs: see ``viz.splat.scaling_figure``)."""
    run = measure_fresh if fresh else measure
    return [run(n, s, channels, backward, backend, repeat) for n in gaussians for s in sizes]


@dataclass
class RenderBench(Bench):
    """Splatting speed and memory on a head-sized cloud: pairs, ms, pairs/s, peak memory."""

    # Number of Gaussians N in the head-sized cloud.
    gaussians: int = 80_000
    # Image size S (S x S pixels).
    size: int = 256
    # Feature channels C.
    channels: int = 32
    # Time forward + backward (random upstream gradients) instead of forward only.
    backward: bool = False
    # Print the table N in {5K, 20K, 80K} x S in {128, 256, 512} instead of one configuration.
    table: bool = False
    # render() backend: numba (the compiled CPU path; torch: its deprecated old name), gsplat (CUDA) or reference (the readable compositor).
    backend: str = "numba"
    # Timed repeats per configuration (the median is reported).
    repeat: int = 5

    name = "render"

    def run(self) -> list[dict]:
        if min(self.gaussians, self.size, self.channels, self.repeat) < 1:
            raise ValueError("bench render: --gaussians, --size, --channels and --repeat must be at least 1")
        if self.backend not in ("numba", "torch", "gsplat", "reference"):
            raise ValueError(f"bench render --backend {self.backend}: choose numba, gsplat or reference")
        if self.backend == "gsplat" and not torch.cuda.is_available():
            raise ValueError("bench render --backend gsplat needs CUDA (gsplat renders on CUDA only) and this machine has none: use --backend numba")
        if self.table:
            return scaling_table(channels=self.channels, backward=self.backward, backend=self.backend,
                                 repeat=self.repeat)
        return [measure_fresh(self.gaussians, self.size, self.channels, self.backward, self.backend, self.repeat)]


if __name__ == "__main__":
    print(json.dumps(measure(**json.loads(sys.argv[1]))))
