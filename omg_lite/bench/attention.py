"""``omg-lite bench attention``: the paper's central claim, cross-attention on the coarse mesh only.

OMG-Avatar runs its global cross-attention once, on the V_0 = 5,023 coarse FLAME vertices, and
carries the features to 79,936 vertices by subdivision; LAM runs the same kind of attention on
all 79,936 subdivided vertices. This bench times ``model.global_branch.GlobalBranch`` (learned
queries -> L decoder layers of cross-attention to T tokens + MLP) with both query counts and
every width equal, so the only difference is N. Every term of the cost is linear in N
(projections and MLP: N D^2, attention: N T D), so theory says both time and activation memory
grow by N_high / N_low = 15.9.

Method:
- Each (N, mode) runs in a fresh Python process (``python -m omg_lite.bench.attention``), so
  no configuration's memory hides another's peak.
- Modes: ``inference`` (forward under ``torch.no_grad``, what reconstruction does) and
  ``training`` (forward + backward of a mean-square loss, what a training step does).
- Peak memory: on CPU the growth of the process's peak resident set (``ru_maxrss``) during the
  first call, measured after the layers and inputs exist and after one call of a 16-query copy
  has loaded the kernels, i.e. the activations and temporaries of one call (the torch CPU allocator returns large blocks to the OS, so the next call starts
  low again); on CUDA ``torch.cuda.max_memory_allocated`` minus what was allocated before.
- Time: the median of ``repeat`` calls after that first one (with a device synchronize on CUDA).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import torch

from omg_lite.bench import Bench, sync
from omg_lite.model.global_branch import GlobalBranch

MODES = ("inference", "training")
# Queries of the small copy run once before measuring: it loads and initialises the kernels, so
# the first measured call's memory growth is its own.
WARMUP_QUERIES = 16


def measure(queries: int, dim: int, tokens: int, token_dim: int, layers: int, heads: int, mlp_ratio: int, mode: str, repeat: int, device: str) -> dict:
    """One configuration in this process: {'ms': median time, 'peak_mb': peak extra memory of one call}."""
    torch.manual_seed(0)
    tok = torch.randn(1, tokens, token_dim, device=device)
    ident = torch.randn(1, token_dim, device=device)

    def call(net: GlobalBranch) -> None:
        if mode == "training":
            net(tok, ident).square().mean().backward()
            net.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                net(tok, ident)

    call(GlobalBranch(WARMUP_QUERIES, token_dim, dim, layers, heads, mlp_ratio).to(device))  # loads kernels, not counted
    net = GlobalBranch(queries, token_dim, dim, layers, heads, mlp_ratio).to(device)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    call(net)
    sync(device)
    if cuda:
        peak_mb = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call(net)
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {"ms": times[len(times) // 2], "peak_mb": peak_mb}


@dataclass
class AttentionBench(Bench):
    """Time and peak memory of the global cross-attention with 5,023 vs 79,936 queries (theory: 15.9x)."""

    # Queries of OMG-Avatar's global branch: FLAME's coarse vertex count V_0.
    queries_low: int = 5023
    # Queries of attention on every level-2 vertex (LAM's way): FLAME's V_2.
    queries_high: int = 79936
    # Width D of the queries and of every layer.
    dim: int = 256
    # Encoder tokens T attended to (DINOv2 ViT-B/14 at 518: 37 x 37 = 1369; 256 at 224 with ViT-S/14).
    tokens: int = 256
    # Width C of the encoder tokens before the memory projection (ViT-B/14: 768).
    token_dim: int = 768
    # Decoder layers L.
    layers: int = 2
    # Attention heads.
    heads: int = 8
    # MLP hidden width as a multiple of D.
    mlp_ratio: int = 4
    # Modes to measure: inference, training, or both (comma-separated).
    modes: str = "inference,training"
    # Timed calls after the first one (the median is reported).
    repeat: int = 3
    # Torch device, e.g. cpu or cuda.
    device: str = "cpu"

    name = "attention"

    def run(self) -> list[dict]:
        modes = [m.strip() for m in self.modes.split(",") if m.strip()]
        bad = [m for m in modes if m not in MODES]
        if bad or not modes:
            raise ValueError(f"bench attention: --modes takes {', '.join(MODES)} (comma-separated), got {self.modes!r}")
        if min(self.queries_low, self.queries_high, self.dim, self.tokens, self.token_dim, self.layers, self.heads, self.mlp_ratio, self.repeat) <= 0:
            raise ValueError("bench attention: every size and --repeat must be positive")
        if self.dim % self.heads:
            raise ValueError(f"bench attention: --dim {self.dim} must be divisible by --heads {self.heads}")
        rows = []
        for mode in modes:
            low, high = (self._child(n, mode) for n in (self.queries_low, self.queries_high))
            for n, r in ((self.queries_low, low), (self.queries_high, high)):
                rows.append({"mode": mode, "queries": n, "ms": r["ms"], "peak_mb": r["peak_mb"]})
            rows.append({
                "mode": mode,
                "queries": f"{self.queries_high} / {self.queries_low}",
                "ms_ratio": high["ms"] / low["ms"],  # a ratio row: its figures are ratios, under their own keys
                "peak_mb_ratio": high["peak_mb"] / max(low["peak_mb"], 1e-9),
                "theory": self.queries_high / self.queries_low,
            })
        for row in rows:
            row.update(device=self.device, threads=torch.get_num_threads())
        return rows

    def _child(self, queries: int, mode: str) -> dict:
        """``measure`` in a fresh interpreter; returns its result."""
        args = {k: v for k, v in asdict(self).items() if k in ("dim", "tokens", "token_dim", "layers", "heads", "mlp_ratio", "repeat", "device")}
        args.update(queries=queries, mode=mode)
        proc = subprocess.run([sys.executable, "-m", "omg_lite.bench.attention", json.dumps(args)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"bench attention: the measurement for {queries} queries ({mode}) failed:\n{proc.stderr.strip()[-2000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(measure(**json.loads(sys.argv[1]))))
