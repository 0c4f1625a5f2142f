"""Pictures and widgets for the avatar notebooks (00 overview, 08 enactment and LOD, 09 evaluation).

matplotlib for images and plots, plotly for the Gaussian point clouds, ipywidgets for the live
render. Nothing here computes a result: every function draws what ``omg_lite.avatar``,
``omg_lite.evaluate`` or ``omg_lite.bench.enact`` returns.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

from omg_lite.viz.pointcloud import density_patches, features_to_rgb
from omg_lite.viz.splat import show_images


def lod_strip(avatar, params, size: int | None = None, refined: bool = True) -> plt.Figure:
    """The same frame at every kept level of detail, side by side, titled with Gaussian counts."""
    cam = avatar.camera(size)
    images, titles = [], []
    for k in avatar.lods:
        out = avatar.render(params[0:1], cam, k)
        images.append((out.refined if refined else out.coarse)[0].clamp(0, 1))
        c = avatar.counts(k)
        titles.append(f"LOD {k}\n{c['head']:,} head + {c['shoulder']:,} shoulder")
    return show_images(images, titles)


def frame_strip(frames: Tensor, every: int = 1, titles: list[str] | None = None) -> plt.Figure:  # frames [M, 3, H, W]
    """Every ``every``-th frame of an animation in one row."""
    picked = list(range(0, frames.shape[0], every))
    return show_images([frames[m] for m in picked], titles or [f"frame {m}" for m in picked], size=2.2)


def fps_figure(rows: list[dict]) -> plt.Figure:
    """FPS per level against its Gaussian count (rows of ``omg-lite bench enact``), with the targets."""
    lods = [r for r in rows if str(r.get("stage", "")).startswith("LOD")]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    n = [r["gaussians"] for r in lods]
    ax.plot(n, [r["fps"] for r in lods], "o-", label="frames / total time (protocol)")
    ax.plot(n, [r["fps_median"] for r in lods], "s--", label="1 / median frame time")
    for r in lods:
        if r.get("target"):
            ax.plot(r["gaussians"], float(r["target"].split()[1]), "k_", markersize=18)
        ax.annotate(r["stage"], (r["gaussians"], r["fps"]), textcoords="offset points", xytext=(4, 6))
    ax.plot([], [], "k_", markersize=12, label="target on this CPU")
    ax.set_xscale("log")
    ax.set_xlabel("Gaussians (head + shoulder)")
    ax.set_ylabel("frames per second")
    ax.set_title(f"enactment at {rows[0].get('size', '?')} px on {rows[0].get('device', '?')}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def gaussian_density(avatar, params=None, half: float = 0.015) -> plt.Figure:
    """Every Gaussian mean of each level inside the same two patches of the source view (a cheek and
    a shoulder, 2 half x 2 half metres): the true density per level, head and shoulders apart."""
    params = avatar.source.params if params is None else params[0:1]
    cam = avatar.camera()
    s = avatar.gaussians.shoulders
    clouds, colours = {}, {}
    for k in avatar.lods:
        p, f = [avatar.positions(params, k)[0]], [avatar.gaussians.levels[k].features[0]]
        if s is not None:
            p.append(s.means[0][s.valid[0]])
            f.append(s.attributes.features[0][s.valid[0]])
        clouds[f"LOD {k}"] = torch.cat(p).cpu()
        colours[f"LOD {k}"] = features_to_rgb(torch.cat(f)[:, :3].cpu())
    head = avatar.positions(params, 0)[0].cpu()  # [V_0, 3]
    z = cam.world_to_camera(head[None])[0]  # camera space: the nearest point is the nose tip
    nose = z[z[:, 2].argmin()]
    cheek = head[(z - (nose + torch.tensor([0.02, 0.01, 0.0]))).norm(dim=1).argmin()]  # 2 cm beside the nose tip, 1 cm below
    centres = {"cheek": cheek}
    if s is not None and bool(s.valid.any()):
        torso = s.means[0][s.valid[0] & ~(s.attached[0] if s.attached is not None else torch.zeros_like(s.valid[0]))]
        if len(torso):
            centres["shoulder"] = torso[(torso - torso.median(0).values).norm(dim=1).argmin()].cpu()
    return density_patches(clouds, cam, centres, half, colours=colours)


@contextmanager
def call_counter(modules: dict[str, nn.Module]):
    """Count forward calls of named modules inside the block: ``with call_counter({...}) as calls``."""
    calls = {name: 0 for name in modules}
    hooks = [m.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1)) for name, m in modules.items()]
    try:
        yield calls
    finally:
        for h in hooks:
            h.remove()


def kept_tensors(avatar) -> list[dict]:
    """What reconstruction keeps per level: attribute, shape, and where its storage lives (to compare after enactment)."""
    rows = []
    for k, a in avatar.gaussians.levels.items():
        for name in ("features", "opacities", "scales", "quats"):
            t = getattr(a, name)
            rows.append({"level": k, "attribute": name, "shape": tuple(t.shape), "data_ptr": t.data_ptr(), "digest": _digest(t)})
    s = avatar.gaussians.shoulders
    if s is not None:
        rows.append({"level": "S", "attribute": "means", "shape": tuple(s.means.shape), "data_ptr": s.means.data_ptr(), "digest": _digest(s.means)})
    return rows


def _digest(t: Tensor) -> str:
    """SHA-256 of a tensor's values: exact, unlike a float sum, whose rounding depends on the threads and
    the memory layout it is reduced with (the same values summed twice may differ in the last bits)."""
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def live_avatar(avatar, expression_components: int = 4, size: int | None = None):
    """ipywidgets: LOD, jaw, yaw and a few expression sliders driving a live render of the avatar."""
    import io

    import ipywidgets as w
    from PIL import Image

    from omg_lite.avatar import retarget, to_uint8
    from omg_lite.head.lbs import rodrigues
    from omg_lite.head.params import HeadParams

    base = avatar.source.params
    E = min(expression_components, base.expression.shape[1])
    lod = w.IntSlider(value=avatar.lod, min=min(avatar.lods), max=max(avatar.lods), description="LOD")
    j0 = float(base.pose[0, 6])  # the tracked jaw: the range always holds it, so the first render is the tracked one
    jaw = w.FloatSlider(value=j0, min=min(0.0, j0), max=max(0.35, j0), step=0.01, description="jaw")
    yaw = w.FloatSlider(value=0.0, min=-30.0, max=30.0, step=1.0, description="yaw (deg)")
    expr = [w.FloatSlider(value=float(base.expression[0, e]), min=min(-2.0, float(base.expression[0, e])),
                          max=max(2.0, float(base.expression[0, e])), step=0.05, description=f"psi_{e}") for e in range(E)]
    view, caption = w.Image(format="png"), w.Label()

    def redraw(_=None) -> None:
        expression, pose = base.expression.clone(), base.pose.clone()
        for e, slider in enumerate(expr):
            expression[0, e] = slider.value
        pose[0, 6] = jaw.value
        turn = rodrigues(torch.tensor([[0.0, np.radians(yaw.value), 0.0]], dtype=pose.dtype, device=pose.device))
        pose[0, 0:3] = _axis_angle(turn[0] @ rodrigues(base.pose[:, 0:3])[0]).to(pose)  # an extra yaw of the root joint
        params = retarget(avatar.net.head_model, base, HeadParams(base.shape, expression, pose, base.translation), "neck")
        out = avatar.render(params, avatar.camera(size), lod.value)
        buf = io.BytesIO()
        Image.fromarray(to_uint8(out.refined)[0]).resize((256, 256), Image.BILINEAR).save(buf, format="png")
        view.value = buf.getvalue()
        caption.value = f"LOD {lod.value}: {avatar.counts(lod.value)['total']:,} Gaussians"

    for slider in (lod, jaw, yaw, *expr):
        slider.observe(redraw, names="value")
    redraw()
    return w.HBox([view, w.VBox([caption, lod, jaw, yaw, *expr])])


def _axis_angle(R: Tensor) -> Tensor:  # [3, 3] -> [3]
    from scipy.spatial.transform import Rotation

    return torch.as_tensor(Rotation.from_matrix(R.detach().double().cpu().numpy()).as_rotvec(), dtype=torch.float32)


def variant_gallery(images: dict[str, Tensor], truth: Tensor | None = None) -> plt.Figure:
    """One rendered frame per ablation variant (name -> [3, H, W]), the ground truth first."""
    items = ([("truth I_d", truth)] if truth is not None else []) + list(images.items())
    return show_images([x for _, x in items], [n for n, _ in items], size=2.4)


def metric_images(truth: Tensor, images: dict[str, Tensor], scores: dict[str, dict], face: Tensor) -> plt.Figure:
    """Top: the truth I_d and each image with its whole-image and face-region scores. Bottom: the face
    region A and each image's per-pixel error |I - I_d| (channel mean), one colour scale from 0 for all,
    with A's outline, so that where an image is wrong shows, not only how much."""
    truth, face = truth.detach().cpu(), face.detach().cpu()[0]  # [3, H, W], [H, W]
    fmt = lambda s: (f"whole: PSNR {s['psnr']:.1f} SSIM {s['ssim']:.2f} LPIPS {s['lpips']:.3f}\n"  # noqa: E731
                     f"face:  PSNR {s['face_psnr']:.1f} SSIM {s['face_ssim']:.2f} LPIPS {s['face_lpips']:.3f}")
    errors = {n: (x.detach().cpu().clamp(0, 1) - truth).abs().mean(0) for n, x in images.items()}  # [H, W]
    top = max(float(e.max()) for e in errors.values())
    n = len(images) + 1
    fig, axes = plt.subplots(2, n, figsize=(3.1 * n, 6.6))
    axes[0, 0].imshow(truth.permute(1, 2, 0).numpy())
    axes[0, 0].set_title("truth I_d", fontsize=8)
    axes[1, 0].imshow(face.numpy(), cmap="gray")
    axes[1, 0].set_title(f"face region A ({int(face.sum())} px)", fontsize=8)
    for j, (name, x) in enumerate(images.items(), start=1):
        axes[0, j].imshow(x.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy())
        axes[0, j].set_title(f"{name}\n{fmt(scores[name])}", fontsize=7, loc="left")
        im = axes[1, j].imshow(errors[name].numpy(), cmap="magma", vmin=0, vmax=top)
        axes[1, j].contour(face.numpy(), levels=[0.5], colors="cyan", linewidths=0.6)
        axes[1, j].set_title(f"|I - I_d|, mean in A {float(errors[name][face > 0.5].mean()):.3f}", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.colorbar(im, ax=axes[1, :].tolist(), fraction=0.02, label="|I - I_d| (0-1 per channel, mean of RGB)")
    return fig
