"""Pictures for notebook 10 (personalisation) and the hair split of notebook 05: what is fitted, the loss curve, feed-forward against
fitted per LOD, and a yaw sweep. Nothing here computes a result: each function draws what
``omg_lite.personalize`` and ``omg_lite.avatar`` return.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch

from omg_lite.head.params import HeadParams
from omg_lite.viz.splat import show_images


def fitted_groups(avatar, settings) -> list[dict]:
    """One row per parameter group of the fit: its size, and whether it is optimised (and at which rate) or kept."""
    from omg_lite.personalize import Parameters

    theta = Parameters(avatar.gaussians, avatar.net.cfg.model.max_offset, settings)
    return [{"group": k, "shape": tuple(v.shape), "fitted": k in theta.groups, "lr": theta.groups.get(k, 0.0)} for k, v in theta.leaves.items()]


def loss_curve(report) -> plt.Figure:
    """Total loss per step, one colour per level of detail (levels take turns)."""
    fig, ax = plt.subplots(figsize=(6, 3))
    for k in sorted(set(report.levels)):
        steps = [i for i, lv in enumerate(report.levels) if lv == k]
        ax.plot(steps, [report.losses[i] for i in steps], ".-", label=f"LOD {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (paper's L + prior)")
    ax.legend()
    fig.tight_layout()
    return fig


def _grid(rows: list[tuple[str, torch.Tensor]], titles: list[str]) -> plt.Figure:
    """Rows of images [M, 3, H, W], labelled on the left, columns titled."""
    M = len(titles)
    fig, axes = plt.subplots(len(rows), M, figsize=(2.0 * M, 2.0 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for m in range(M):
            ax = axes[r][m]
            ax.imshow(images[m].permute(1, 2, 0).cpu().numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_ylabel(label if m == 0 else "", fontsize=8)
            ax.set_title(titles[m] if r == 0 else "", fontsize=8)
    fig.tight_layout()
    return fig


def compare_grid(truth: torch.Tensor, avatars: dict, params: HeadParams, camera, levels: list[int], titles: list[str]) -> plt.Figure:
    """Rows: truth [M, 3, H, W], then each avatar at each level; columns: the frames of ``params``."""
    rows = [("truth", truth)] + [(f"{name} LOD {k}", av.render(params, camera, k).refined.clamp(0, 1)) for name, av in avatars.items() for k in levels]
    return _grid(rows, titles)


def yaw_params(source: HeadParams, yaw_deg: float) -> HeadParams:
    """The source's parameters with the head turned by ``yaw_deg`` about the neck (the root stays)."""
    from scipy.spatial.transform import Rotation

    pose = source.pose.clone()
    neck = Rotation.from_rotvec(pose[0, 3:6].cpu().numpy())
    pose[0, 3:6] = torch.as_tensor((Rotation.from_euler("Y", math.radians(yaw_deg)) * neck).as_rotvec(), dtype=pose.dtype)
    return HeadParams(source.shape, source.expression, pose, source.translation)


def yaw_strip(avatars: dict, yaws: list[float], lod: int | None = None) -> plt.Figure:
    """Each avatar (rows) turned to each yaw (columns): what one photo cannot show appears at the sides."""
    rows = [(name, torch.cat([av.render(yaw_params(av.source.params, y), lod=lod).refined.clamp(0, 1) for y in yaws])) for name, av in avatars.items()]
    return _grid(rows, [f"yaw {y:+.0f}°" for y in yaws])


def yaw_slider(avatars: dict, lod: int | None = None):
    """ipywidgets: a yaw slider turning every avatar side by side."""
    import ipywidgets as w
    from IPython.display import display

    out = w.Output()
    slider = w.FloatSlider(value=0.0, min=-80, max=80, step=5, description="yaw (deg)")

    def redraw(_=None) -> None:
        with out:
            out.clear_output(wait=True)
            images = [av.render(yaw_params(av.source.params, slider.value), lod=lod).refined[0].clamp(0, 1) for av in avatars.values()]
            show_images(images, list(avatars), size=2.5)
            plt.show()

    slider.observe(redraw, names="value")
    redraw()
    display(w.VBox([slider, out]))


def hair_split(avatar) -> plt.Figure:
    """The source crop with the shoulder-branch Gaussians projected on it: attached to the head (red) or torso (blue)."""
    s = avatar.gaussians.shoulders
    uv = avatar.camera().project_world(s.means)[0][0].cpu()  # [N_s, 2] pixels
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(avatar.source.image[0].permute(1, 2, 0).cpu().numpy())
    for on, colour, label in ((s.attached[0] & s.valid[0], "red", "moves with the head"), (~s.attached[0] & s.valid[0], "tab:blue", "torso, fixed")):
        ax.scatter(uv[on.cpu(), 0], uv[on.cpu(), 1], s=2, c=colour, label=f"{label} ({int(on.sum())})")
    ax.legend(loc="lower left", fontsize=7)
    ax.axis("off")
    fig.tight_layout()
    return fig


def hair_motion(avatar, clip, hair_masks: torch.Tensor, lod: int | None = None) -> plt.Figure:
    """Synthetic hair with its truth: columns the clip's frames (``omg_lite.clips.ClipFrames``); rows the truth,
    the avatar with its hair split (attached Gaussians follow the neck joint), the same avatar static (the paper's
    image-plane shoulders), and the split's hair footprint (green) over the true hair mask (red; both: yellow)."""
    from omg_lite.avatar import Avatar

    from omg_lite.metrics import composite

    truth = composite(clip.rgb, clip.mask, avatar.net.cfg.model.background)  # [M, 3, H, W] I_d, as eval scores
    static = Avatar(avatar.net, avatar.gaussians.shoulder_variant(static=True), avatar.source)
    alone = Avatar(avatar.net, avatar.gaussians.shoulder_variant(static=False, alone=True), avatar.source)
    render = lambda av: torch.cat([av.render(clip.params[j:j + 1], clip.camera[j:j + 1], lod).refined.clamp(0, 1).cpu() for j in range(len(truth))])  # noqa: E731
    foot = torch.cat([alone.render(clip.params[j:j + 1], clip.camera[j:j + 1], lod).alpha.cpu() > 0.5 for j in range(len(truth))])  # [M, 1, H, W]
    overlay = torch.cat([hair_masks[:, None].float(), foot.float(), torch.zeros_like(foot, dtype=torch.float32)], 1)
    rows = [("truth", truth), ("hair split", render(avatar)), ("static", render(static)), ("hair: truth / split", overlay)]
    return _grid(rows, ["source"] + [f"frame {j}" for j in range(1, len(truth))])
