"""``omg-lite bench hair``: does the hair move with the head? Scored against the synthetic world's hair truth.

A set rendered with ``synth.hair`` (``omg-lite synth --hair``) has a hair volume outside the head
mesh and its ground-truth mask per frame (:mod:`omg_lite.synth.hair`). Each clip's frame 0 is the
source; every other frame drives the avatar with its true parameters and camera, twice:

- ``split``: the shoulder branch's head-attached Gaussians follow the neck joint
  (:func:`omg_lite.model.shoulder_branch.head_attached`, what the model does);
- ``static``: the same avatar with every shoulder Gaussian left where reconstruction put it, the
  paper's image-plane behaviour (``attached`` cleared).

Figures per row, means over the driving frames:

- ``hair_iou``: IoU of the avatar's hair (pixels where the attached Gaussians alone, splatted with
  their own opacities, reach alpha > 0.5) with the truth's hair mask of the driving frame;
- ``hair_psnr``: PSNR of the refined render against the truth over the hair region, where the
  truth shows hair in the driving frame or in the source (the same pixels for both rows);
- ``psnr``: whole-image PSNR, for scale (the truth composited on the renderer's background outside
  its portrait mask, as ``omg-lite eval`` scores);
- ``attached_share_of_hair`` / ``torso_attached``: the share of the source's true hair pixels in M_s that the
  rule attaches, and of its true torso pixels that it wrongly attaches.

``--fit STEPS`` personalises each source avatar first (the lite network never saw hair, so its
feed-forward hair colours are poor; the split moves what it has either way). Without ``--data`` it renders a hair set (``--identities`` x ``--frames``) at the model's size into a
temporary folder first.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from omg_lite.bench import Bench


def _mask(root: Path, clip: str, j: int, size: int, kind: str = "hair_mask"):  # -> [size, size] bool
    import numpy as np
    from PIL import Image

    from omg_lite.clips import resize_mask

    m = torch.from_numpy(np.asarray(Image.open(root / clip / kind / f"{j:04d}.png")) > 127)[None, None]
    return resize_mask(m, size)[0, 0] > 0


def _source_split(gs, camera, hair, torso) -> tuple[list[int], list[int]]:
    """Attached / all valid shoulder Gaussians whose source pixel is true hair, and the same for true torso."""
    s = gs.shoulders
    on, valid = s.attached[0].cpu(), s.valid[0].cpu()
    uv = camera.project_world(s.means[0:1].float())[0][0].cpu().long()  # [N_s, 2] pixel of each Gaussian
    H, W = hair.shape
    inside = valid & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    u, v = uv[:, 0].clamp(0, W - 1), uv[:, 1].clamp(0, H - 1)
    is_hair, is_torso = inside & hair[v, u], inside & torso[v, u]
    return [int((on & is_hair).sum()), int(is_hair.sum())], [int((on & is_torso).sum()), int(is_torso.sum())]


@dataclass
class HairBench(Bench):
    """Hair that moves with the head vs the paper's static image-plane shoulders, on synthetic hair with its truth."""

    name = "hair"
    # An `omg-lite synth --hair` set; empty: render one into a temporary folder.
    data: str = ""
    identities: int = 2
    frames: int = 8
    seed: int = 0
    # A training run folder or step_XXXXXX.safetensors; empty: data_samples/lite.
    checkpoint: str = ""
    lod: int = 2
    # Personalise each source avatar this many steps first (omg_lite.personalize; 0: feed-forward).
    fit: int = 0

    def run(self) -> list[dict]:
        from omg_lite.avatar import Avatar, AvatarModel
        from omg_lite.config import Config
        from omg_lite.evaluate import read_clip
        from omg_lite.metrics import composite, masked_psnr, psnr
        from omg_lite.synth import SynthDataset, write_synth

        net = AvatarModel.load(self.checkpoint or None)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(self.data) if self.data else Path(tmp) / "hair"
            if not self.data:
                cfg = Config()
                cfg.synth.hair = True
                write_synth(root, self.identities, self.frames, net.image_size, self.seed, cfg=cfg, progress=False)
            ds = SynthDataset(root)
            if not ds.meta.get("synth", {}).get("hair"):
                raise ValueError(f"{root} has no hair truth: make the set with `omg-lite synth --hair`")
            sums = {m: {"hair_iou": 0.0, "hair_psnr": 0.0, "psnr": 0.0} for m in ("split", "static")}
            n, recall, torso_on = 0, [0, 0], [0, 0]
            S, bg = net.image_size, net.cfg.model.background
            for name in ds.clips:
                clip = read_clip(root / name, S)
                hair = torch.stack([_mask(root, name, j, S) for j in range(clip.rgb.shape[0])])  # [M, S, S]
                av = Avatar.from_frame(clip.rgb[0], clip.params[0:1], clip.camera[0:1], clip.mask[0, 0], net=net, lod=self.lod)
                av = av.personalize(self.fit) if self.fit else av
                r, t = _source_split(av.gaussians, av.source.camera, hair[0], _mask(root, name, 0, S, "torso_mask"))
                recall = [a + b for a, b in zip(recall, r)]
                torso_on = [a + b for a, b in zip(torso_on, t)]
                for m in sums:
                    whole, alone = (Avatar(net, av.gaussians.shoulder_variant(m == "static", only), av.source) for only in (False, True))
                    for j in range(1, clip.rgb.shape[0]):
                        p, cam = clip.params[j:j + 1], clip.camera[j:j + 1]
                        truth = composite(clip.rgb[j:j + 1], clip.mask[j:j + 1], bg)  # I_d = M rgb + (1 - M) bg, as eval
                        img = whole.render(p, cam, self.lod).refined.clamp(0, 1).cpu()
                        foot = alone.render(p, cam, self.lod).alpha[0, 0].cpu() > 0.5  # [S, S] the avatar's hair
                        sums[m]["hair_iou"] += float((foot & hair[j]).sum() / (foot | hair[j]).sum().clamp_min(1))
                        sums[m]["hair_psnr"] += float(masked_psnr(img, truth, (hair[j] | hair[0])[None, None])[0])
                        sums[m]["psnr"] += float(psnr(img, truth)[0])
                n += clip.rgb.shape[0] - 1
        rows = []
        for m, s in sums.items():
            rows.append({"hair": m, "lod": self.lod, "fit": self.fit, "frames": n, **{k: round(v / max(n, 1), 4 if k == "hair_iou" else 2) for k, v in s.items()},
                         "torso_attached": round(torso_on[0] / max(torso_on[1], 1), 4),
                         "attached_share_of_hair": round(recall[0] / max(recall[1], 1), 3)})
        return rows
