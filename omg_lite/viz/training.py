"""Plot helpers for notebook 07 (refiner and training): the loss terms as a table, a live loss
plot, coarse vs refined images, and the presets side by side.

The loss they show is the paper's (Sec. 4.1, see ``omg_lite.train.losses``):

    L = sum_{I in {I_c, I_r}} [ lambda1 L_2 + lambda2 (1 - SSIM) + lambda3 LPIPS ](I, I_d) + lambda4 ||offset||_2

Tables come back as markdown strings (show them with ``IPython.display.Markdown``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor

from omg_lite.viz import finish
from omg_lite.viz.splat import to_rgb

# (key in OMGLoss's terms, row label, index of its weight lambda in (lambda1..lambda4))
IMAGE_TERMS = (("l2", "L_2 = mean (I - I_d)^2", 0), ("ssim", "1 - SSIM(I, I_d)", 1), ("lpips", "LPIPS(I, I_d)", 2))


def _image_term(terms: Mapping[str, Tensor | float], image: str, key: str) -> float | None:
    """The unweighted value of one image term; SSIM is turned into the loss 1 - SSIM."""
    v = terms.get(f"{image}/{key}")
    if v is None:
        return None
    v = float(v)
    return 1.0 - v if key == "ssim" else v


def loss_table(
    terms: Mapping[str, Tensor | float],  # OMGLoss(...).terms: "coarse/l2", "refined/ssim", ..., "offset"
    weights: Sequence[float],  # (lambda1, lambda2, lambda3, lambda4)
    lpips_label: str = "LPIPS",
) -> tuple[str, float]:
    """A markdown table of every loss term on I_c and I_r, its weight and its weighted share,
    and the total L recomputed from the rows (it must equal ``OMGLoss``'s total)."""
    fmt = lambda x: "-" if x is None else f"{x:.4f}"  # noqa: E731
    rows = ["| term | on I_c | on I_r | weight | weighted (I_c + I_r) |", "|---|---:|---:|---:|---:|"]
    total = 0.0
    for key, label, w in IMAGE_TERMS:
        c, r = _image_term(terms, "coarse", key), _image_term(terms, "refined", key)
        if c is None and r is None:
            continue
        if key == "lpips":
            label = f"{label} [{lpips_label}]"
        share = weights[w] * ((c or 0.0) + (r or 0.0))
        total += share
        rows.append(f"| {label} | {fmt(c)} | {fmt(r)} | lambda{w + 1} = {weights[w]:g} | {share:.4f} |")
    off = float(terms["offset"])
    total += weights[3] * off
    rows.append(f"| L_reg = mean_v \\|\\|offset_v\\|\\|_2 = {off:.4g} (counted once) | | | lambda4 = {weights[3]:g} | {weights[3] * off:.4g} |")
    rows.append(f"| **L** | | | | **{total:.4f}** |")
    return "\n".join(rows), total


def degradation_figure(
    target: Tensor,  # [3, H, W]
    versions: Mapping[str, Tensor],  # name -> [3, H, W] degraded copies of the target
    scores: Mapping[str, Mapping[str, float]],  # name -> {"L_2": ..., "1 - SSIM": ..., "LPIPS": ...}
    size: float = 3.0,
) -> Figure:
    """The target and its degraded copies, each titled with its loss scores, and a bar chart
    of every score relative to the largest of its kind (which term punishes what)."""
    names = list(versions)
    fig, axes = plt.subplots(1, len(names) + 2, figsize=(size * (len(names) + 2.6), size),
                             gridspec_kw={"width_ratios": [1] * (len(names) + 1) + [1.6]})
    axes[0].imshow(to_rgb(target))
    axes[0].set_title("target I_d")
    for ax, name in zip(axes[1:], names):
        ax.imshow(to_rgb(versions[name]))
        ax.set_title(name + "\n" + "  ".join(f"{k} {v:.3f}" for k, v in scores[name].items()), fontsize=8)
    for ax in axes[:-1]:
        ax.axis("off")
    kinds = list(next(iter(scores.values())))
    bar = axes[-1]
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        rel = [scores[name][k] / max(max(scores[n][k] for n in names), 1e-12) for k in kinds]
        bar.bar(np.arange(len(kinds)) + (i - (len(names) - 1) / 2) * width, rel, width, label=name)
    bar.set_xticks(range(len(kinds)), kinds)
    bar.set_ylabel("score / largest of its kind")
    bar.legend(fontsize=8)
    bar.set_title("which term sees what")
    fig.tight_layout()
    return fig


class LiveLossPlot:
    """A loss plot that redraws in place in a notebook as training goes on.

    ``update(history)`` takes the per-step records ``Trainer.fit`` returns (``loss`` and the
    unweighted terms); the left panel is the total L, the right one the image terms on I_c
    (dashed) and I_r (solid) and the offset norm. ``lod_steps`` marks where the level of detail
    went up (coarse-to-fine). Outside a notebook it just keeps the figure.
    """

    def __init__(self, total_steps: int, lpips_label: str = "LPIPS", lod_steps: Sequence[int] = (), size: float = 4.0):
        self.total_steps, self.lpips_label, self.lod_steps = total_steps, lpips_label, list(lod_steps)
        self.fig, self.axes = plt.subplots(1, 2, figsize=(3.1 * size, size))
        self.handle = None
        try:
            from IPython import get_ipython
            from IPython.display import display

            if get_ipython() is not None:
                self.handle = display(self.fig, display_id=True)
        except ImportError:
            pass
        plt.close(self.fig)  # shown through the display handle only, not again at the cell's end

    def update(self, history: Sequence[Mapping[str, float]]) -> Figure:
        """Redraw with all steps so far."""
        steps = np.arange(1, len(history) + 1)
        left, right = self.axes
        for ax in self.axes:
            ax.clear()
            for s in self.lod_steps:
                ax.axvline(s + 0.5, color="0.7", lw=1, ls=":")
            ax.set_xlim(0.5, max(self.total_steps, 1) + 0.5)
            ax.set_xlabel("step")
        left.plot(steps, [h["loss"] for h in history], color="k")
        left.set_title(f"total L (step {len(history)}/{self.total_steps})")
        for colour, (key, label, _) in enumerate(IMAGE_TERMS):
            for image, ls in (("coarse", "--"), ("refined", "-")):
                if history and f"{image}/{key}" in history[0]:
                    vals = [_image_term(h, image, key) for h in history]
                    name = label.split(" =")[0].split("(")[0].strip()
                    right.plot(steps, vals, ls=ls, color=f"C{colour}", label=f"{name} on {'I_c' if image == 'coarse' else 'I_r'}")
        if history and "offset" in history[0]:
            right.plot(steps, [h["offset"] for h in history], color="k", lw=1, label="||offset||_2")
        right.set_yscale("log")
        right.set_title("terms, unweighted (dashed I_c, solid I_r)")
        right.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        if self.lod_steps:
            left.set_title(left.get_title() + "; dotted: LOD up")
        if "random" in self.lpips_label:
            right.text(0.01, 0.01, self.lpips_label, transform=right.transAxes, fontsize=7, color="0.4")
        self.fig.tight_layout()
        if self.handle is not None:
            self.handle.update(self.fig)
        return self.fig


def refiner_figure(
    target: Tensor,  # [3, H, W] I_d
    coarse: Tensor,  # [3, H, W] I_c
    refined: Tensor,  # [3, H, W] I_r
    size: float = 3.0,
    title: str = "",
) -> Figure:
    """Target, I_c, I_r and what the refiner adds, |I_r - I_c| (summed over RGB), on a colour scale from 0
    so that a nearly constant offset shows as a flat colour (with its spread in the title), not as structure."""
    diff = (refined - coarse).detach().float().abs().sum(0).cpu().numpy()  # [H, W]
    fig, axes = plt.subplots(1, 4, figsize=(size * 4.3, size))
    for ax, img, name in zip(axes, (target, coarse, refined), ("target I_d", "coarse I_c = F_r[:3]", "refined I_r = I_c + R(F_r)")):
        ax.imshow(to_rgb(img))
        ax.set_title(name)
    im = axes[3].imshow(diff, cmap="magma", vmin=0, vmax=max(float(diff.max()), 1e-6))
    axes[3].set_title(f"|I_r - I_c|: {diff.min():.3g} to {diff.max():.3g}")
    fig.colorbar(im, ax=axes[3], fraction=0.046, pad=0.04)
    return finish(fig, axes, title)


def _flat(node, prefix: str = "") -> dict:
    """A dataclass tree as {"section.field": value}."""
    out = {}
    for f in dataclasses.fields(node):
        v = getattr(node, f.name)
        key = f"{prefix}{f.name}"
        out.update(_flat(v, key + ".") if dataclasses.is_dataclass(v) else {key: v})
    return out


def presets_table(presets: Mapping[str, object], only_differences: bool = True) -> str:
    """A markdown table of the presets (``omg_lite.config.PRESETS``) side by side, one row per
    ``section.field`` (by default only the fields where the presets differ)."""
    flat = {name: _flat(cfg) for name, cfg in presets.items()}
    names = list(flat)
    keys = list(flat[names[0]])
    fmt = lambda v: ", ".join(f"{x:.3g}" for x in v) if isinstance(v, tuple) else f"{v:g}" if isinstance(v, float) else str(v)  # noqa: E731
    rows = ["| field | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for k in keys:
        vals = [fmt(flat[n][k]) for n in names]
        if only_differences and len(set(vals)) == 1:
            continue
        rows.append(f"| `{k}` | " + " | ".join(vals) + " |")
    return "\n".join(rows)
