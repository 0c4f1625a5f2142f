"""``omg-lite bench refiner``: what cheaper refiners cost per frame, and in quality (issue 15, item 2).

The lite refiner R (``model.refiner``, I_r = I_c + R(F_r)) takes 54-62 ms per 256x256 frame on the
2-core development CPU, and float32 cannot reach 12 ms with it (its docstring). A cheaper one
changes the architecture, so its cost in quality has to be measured before anyone ships it. The
candidates (none of them is in the model; this bench builds them):

- ``trained``: the checkpoint's refiner as trained;
- ``trained+refit``: the same weights, refit as below (the control: refitting alone may help);
- ``width12``, ``width8``: fresh UNets of the same depth with 12 / 8 channels at full resolution;
- ``half``: the trained refiner on F_r averaged over 2x2 pixels, its correction upsampled
  bilinearly, I_r = I_c + up(R(down(F_r)) - down(I_c)) (a quarter of the pixels), refit;
- ``half-width8``: a fresh 8-channel UNet at half resolution the same way;
- ``none``: I_r = I_c (the coarse render).

**Time**: each candidate on a feature image of ``--size`` (channels last, as the CPU splatters write
it), without autograd, min and median of ``--repeat`` calls after two warm-up calls.

**Quality** (with ``--data``, the checkpoint's training set): everything but the refiner stays as
trained. The frozen model renders F_r for ``--epochs`` passes over the training pairs of ``--data``
(each batch at a level of detail drawn uniformly, seeded); each candidate is then fit for ``--steps``
Adam steps (batch 4) on those, with the training loss on I_r (``train.losses.OMGLoss``, the
checkpoint's weights and LPIPS trunk), from its weights at ``train.lr`` (trained weights) or from
a fresh start at ``--lr`` (default 10x ``train.lr``: a fresh UNet starts far from a fit). Then
``omg-lite eval``'s path (``evaluate``) scores I_r on the held-out identities (self-reenactment, the
first frame drives the others), per level of detail. Refitting on a frozen model is not joint
training: it measures the refiner's share with everything upstream fixed.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as Fn
from torch import Tensor, nn

from omg_lite.bench import Bench

CANDIDATES = ("trained", "trained+refit", "width12", "width8", "half", "half-width8", "none")
FROM_TRAINED = ("trained+refit", "half")  # refit from the checkpoint's weights, at train.lr
NOT_REFIT = ("trained", "none")


class HalfResolution(nn.Module):
    """A refiner run on F_r averaged over 2x2 pixels: I_r = I_c + up(R(down(F_r)) - down(I_c)) (a candidate only)."""

    def __init__(self, refiner: nn.Module):
        super().__init__()
        self.inner = refiner

    def forward(self, F_r: Tensor) -> Tensor:  # [B, C, H, W] -> [B, 3, H, W]
        x = Fn.avg_pool2d(F_r, 2, ceil_mode=True)  # [B, C, H/2, W/2]
        correction = self.inner(x) - x[:, :3]
        return F_r[:, :3] + Fn.interpolate(correction, size=F_r.shape[-2:], mode="bilinear", align_corners=False)


class Coarse(nn.Module):
    """No refiner: I_r = I_c."""

    def forward(self, F_r: Tensor) -> Tensor:
        return F_r[:, :3]


def candidate(name: str, trained: nn.Module, channels: int, depth: int, seed: int) -> nn.Module:
    """The refiner called ``name`` (module docstring); fresh ones are initialised from ``seed``."""
    from omg_lite.model.refiner import Refiner

    torch.manual_seed(seed)
    if name in ("trained", "trained+refit"):
        return copy.deepcopy(trained)
    if name.startswith("width"):
        return Refiner(channels, int(name[5:]), depth)
    if name == "half":
        return HalfResolution(copy.deepcopy(trained))
    if name.startswith("half-width"):
        return HalfResolution(Refiner(channels, int(name[10:]), depth))
    if name == "none":
        return Coarse()
    raise ValueError(f"bench refiner: unknown candidate {name!r}; choose from {', '.join(CANDIDATES)}")


def time_refiner(refiner: nn.Module, channels: int, size: int, repeat: int) -> tuple[float, float]:
    """(min, median) ms of one call on a [1, C, size, size] channels-last feature image, no autograd."""
    x = torch.rand(1, channels, size, size).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.no_grad():
        for i in range(repeat + 2):
            t0 = time.perf_counter()
            refiner(x)
            if i >= 2:
                times.append((time.perf_counter() - t0) * 1e3)
    return min(times), float(np.median(times))


def feature_images(net, data: str, epochs: int, seed: int) -> tuple[Tensor, Tensor]:
    """F_r [M, C, S, S] (float16) and the truth I_d [M, 3, S, S] of the training pairs, rendered by the frozen model."""
    from omg_lite.train.data import PairDataset, collate
    from omg_lite.train.loop import target_image

    t = net.cfg.train
    ds = PairDataset(data, t.image_size, "train", t.heldout, t.seed)
    rng = np.random.default_rng(seed)
    F, I = [], []
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        order = rng.permutation(len(ds))
        for i in range(0, len(order) - 3, 4):
            batch = collate([ds[int(j)] for j in order[i : i + 4]])
            with torch.no_grad():
                out = net(net.encoder.backbone_features(batch.source_rgb), batch, int(rng.integers(net.model.levels + 1)))
            F.append(out.feature_image.contiguous().half())
            I.append(target_image(batch, net.cfg.model.background))
    if not F:
        raise ValueError(f"bench refiner: {data} has fewer than 4 training pairs (the checkpoint holds out its last {t.heldout} clips)")
    return torch.cat(F), torch.cat(I)


def refit(refiner: nn.Module, F: Tensor, I: Tensor, criterion, steps: int, lr: float, seed: int) -> float:
    """``steps`` Adam steps of the training loss on I_r = refiner(F_r) (batches of 4); -> mean loss of the last 100."""
    refiner.train()
    opt = torch.optim.Adam(refiner.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        j = torch.randint(len(F), (4,), generator=g)
        x = F[j].float()
        loss = criterion(x[:, :3], refiner(x), I[j], x.new_zeros(1, 1, 3)).total  # the coarse term is a constant here
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    refiner.eval()
    return float(np.mean(losses[-100:]))


@dataclass
class RefinerBench(Bench):
    """Refiner candidates: time per frame, and with --data their held-out quality after a refit on the frozen model."""

    # Run folder or weights file; default data_samples/lite.
    checkpoint: str | None = None
    # Candidates, from: trained, trained+refit, width12, width8, half, half-width8, none.
    candidates: tuple[str, ...] = CANDIDATES
    # Timed feature images are size x size pixels.
    size: int = 256
    # Timed calls per candidate (after two warm-up calls).
    repeat: int = 15
    # The checkpoint's training data (a folder of clips); empty: time only.
    data: str = ""
    # Refit: Adam steps per candidate, passes over the training pairs rendered once, the learning rate of fresh ones (0: 10x train.lr), seed.
    steps: int = 1000
    epochs: int = 3
    lr: float = 0.0
    seed: int = 0
    # torch intra-op CPU threads (0: torch's default).
    threads: int = 0

    name = "refiner"

    def run(self) -> list[dict]:
        from omg_lite.clips import clip_folders
        from omg_lite.evaluate import evaluate
        from omg_lite.network import AvatarModel
        from omg_lite.train.losses import OMGLoss

        bad = [c for c in self.candidates if c not in CANDIDATES]
        if bad or not self.candidates:
            raise ValueError(f"bench refiner: unknown candidate(s) {bad}; choose from {', '.join(CANDIDATES)}")
        if self.size < 16 or self.repeat < 1 or self.steps < 0 or self.epochs < 1 or self.lr < 0 or self.threads < 0:
            raise ValueError("bench refiner: --size >= 16, --repeat >= 1, --epochs >= 1 and --steps, --lr, --threads >= 0")
        if self.data:
            clip_folders(Path(self.data), "training data")  # a missing or empty folder fails before the timing
        if self.threads:
            torch.set_num_threads(self.threads)
        net = AvatarModel.load(self.checkpoint, device="cpu")
        net.eval()
        m, t = net.cfg.model, net.cfg.train
        if not m.use_refiner:
            raise ValueError("bench refiner: this checkpoint was trained without a refiner (model.use_refiner=false)")
        trained = net.model.refiner
        built = {c: candidate(c, trained, m.channels, m.refiner_depth, self.seed) for c in self.candidates}
        rows = []
        for c, R in built.items():
            ms_min, ms_median = time_refiner(R, m.channels, self.size, self.repeat)
            rows.append({"refiner": c, "size": self.size, "ms_min": round(ms_min, 1), "ms_median": round(ms_median, 1)})
        if not self.data:
            return rows
        F, I = feature_images(net, self.data, self.epochs, self.seed)
        criterion = OMGLoss((t.w_l2, t.w_ssim, t.w_lpips, t.w_offset), t.lpips_net)
        scored = []
        try:
            for row in rows:
                c = row["refiner"]
                R = built[c]
                loss = None
                if c not in NOT_REFIT:
                    lr = t.lr if c in FROM_TRAINED else (self.lr or 10 * t.lr)
                    loss = refit(R, F, I, criterion, self.steps, lr, self.seed)
                net.model.refiner = R
                result = evaluate(net, self.data, split="heldout", cross=False, motion=False, identity=False, progress=False)
                for r in result.rows:
                    if r["method"] == "full":
                        scored.append({**row, "lod": r["lod"], "refit_steps": 0 if loss is None else self.steps,
                                       "refit_loss": None if loss is None else round(loss, 4),
                                       **{k: round(r[k], 4) for k in ("psnr", "ssim", "lpips", "face_psnr", "face_ssim", "face_lpips")}})
        finally:
            net.model.refiner = trained
        return scored
