"""``omg-lite tables``: the paper's quality-per-LOD and ablation tables in miniature (Tables 1 and 3).

One command trains what it needs and evaluates it on identities no run trained on:

1. one synthetic set, rendered once into OUT/data with the preset's ``train.synth_*`` settings;
   the last ``train.heldout`` identities are held out (as ``omg_lite.train.data`` splits them);
2. one training run per variant into OUT/runs/VARIANT (same data, seed, steps and feature cache):
   ``full`` and the paper's ablations ``no_global``, ``no_local``, ``no_refiner``, ``no_shoulder``.
   A run that already reached its steps is reused; an interrupted one resumes;
3. self-reenactment on the held-out identities (``omg_lite.evaluate``): the full model at every
   level of detail (the paper's Sub #0 / #1 / #2 rows, with Gaussian counts) and every variant at
   the finest level (I_r, or I_c for ``no_refiner``); the ablation table adds CSIM (dlib, ``omg_lite.identity``);
4. OUT/tables.md (the tables, which of the paper's orderings hold here, the command) and
   OUT/tables.json, each written atomically; with ``readme`` the same markdown also replaces the
   block between the two marker lines :data:`README_BEGIN` / :data:`README_END` of that file.

The orderings are checked as they come out; nothing is tuned to make them hold.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from omg_lite.config import Config, apply_overrides, from_preset
from omg_lite.metrics import FACE_REGION

VARIANTS: dict[str, tuple[str, ...]] = {
    "full": (),
    "no_global": ("model.use_global=false",),
    "no_local": ("model.use_local=false",),
    "no_refiner": ("model.use_refiner=false",),
    "no_shoulder": ("model.use_shoulder=false",),
}
LABELS = {"full": "Ours (Full)", "no_global": "w/o Global Feature", "no_local": "w/o Local Feature", "no_refiner": "w/o Refiner",
          "no_shoulder": "w/o Shoulder"}
# The paper's Table 3 (VFHQ): PSNR, SSIM, LPIPS per variant; Table 1: per level of detail.
PAPER_ABLATION = {"no_global": (20.85, 0.796, 0.121), "no_local": (21.21, 0.802, 0.128), "no_refiner": (21.42, 0.809, 0.115),
                  "no_shoulder": (22.42, 0.828, 0.099), "full": (22.72, 0.831, 0.091)}
PAPER_LOD = {0: (22.18, 0.817, 0.102), 1: (22.68, 0.830, 0.094), 2: (22.72, 0.831, 0.091)}
README_BEGIN, README_END = "<!-- omg-lite tables: begin -->", "<!-- omg-lite tables: end -->"
METRICS = (("psnr", "PSNR ↑", 1), ("ssim", "SSIM ↑", 1), ("lpips", "LPIPS ↓", -1))
FACE_HEAD = "face PSNR ↑ | face SSIM ↑ | face LPIPS ↓"


def _face(row: dict) -> str:
    """The face-region cells of a row (omg_lite.metrics; "–" where no frame had a head mask)."""
    return " | ".join("–" if row.get(k) is None else fmt.format(row[k])
                      for k, fmt in (("face_psnr", "{:.2f}"), ("face_ssim", "{:.3f}"), ("face_lpips", "{:.3f}")))


@dataclass
class Tables:
    lod_rows: list[dict]  # the full model per level: lod, gaussians, psnr, ssim, lpips
    ablation_rows: list[dict]  # per variant at the finest level
    orderings: list[tuple[str, bool]]  # (the paper's claim, whether it holds here)
    notes: list[str]
    command: str

    def markdown(self) -> str:
        out = ["### Quality per level of detail (held-out synthetic identities, self-reenactment)", "",
               f"| Sub # | Gaussians (head + shoulder) | PSNR ↑ | SSIM ↑ | LPIPS ↓ | {FACE_HEAD} | paper (VFHQ) PSNR / SSIM / LPIPS |",
               "|---|---|---|---|---|---|---|---|---|"]
        for r in self.lod_rows:
            p = PAPER_LOD.get(r["lod"])
            out.append(f"| Sub #{r['lod']} | {r['gaussians']:,} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['lpips']:.3f} | {_face(r)} | "
                       + (f"{p[0]:.2f} / {p[1]:.3f} / {p[2]:.3f} |" if p else "– |"))
        out += ["", "### Ablations (finest level)", "",
                f"| Configuration | PSNR ↑ | SSIM ↑ | LPIPS ↓ | {FACE_HEAD} | CSIM ↑ | paper (VFHQ) PSNR / SSIM / LPIPS |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in self.ablation_rows:
            p = PAPER_ABLATION[r["variant"]]
            csim = "–" if r.get("csim") is None else f"{r['csim']:.3f}"
            out.append(f"| {LABELS[r['variant']]} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['lpips']:.3f} | {_face(r)} | {csim} | "
                       f"{p[0]:.2f} / {p[1]:.3f} / {p[2]:.3f} |")
        out += ["", "### The paper's orderings here", ""]
        out += [f"- {'holds' if ok else 'does NOT hold'}: {claim}" for claim, ok in self.orderings]
        out += ["", *[f"- {n}" for n in self.notes], "", f"Produced by `{self.command}`."]
        return "\n".join(out) + "\n"

    def to_dict(self) -> dict:
        return {"lod_rows": self.lod_rows, "ablation_rows": self.ablation_rows, "notes": self.notes, "command": self.command,
                "orderings": [{"claim": c, "holds": ok} for c, ok in self.orderings]}


def orderings(lod_rows: list[dict], ablation_rows: list[dict]) -> list[tuple[str, bool]]:
    """The paper's orderings, checked on our numbers: finer levels score better, every ablation scores
    below the full model, and the paper's order of the ablations by PSNR."""
    checks: list[tuple[str, bool]] = []
    by_lod = {r["lod"]: r for r in lod_rows}
    for a, b in ((1, 0), (2, 1)):
        if a in by_lod and b in by_lod:
            for key, name, sign in METRICS:
                checks.append((f"Sub #{a} beats Sub #{b} on {name.split()[0]}", sign * (by_lod[a][key] - by_lod[b][key]) > 0))
    by_var = {r["variant"]: r for r in ablation_rows}
    if "full" in by_var:
        for v in (v for v in PAPER_ABLATION if v != "full" and v in by_var):
            for key, name, sign in METRICS:
                checks.append((f"{LABELS['full']} beats {LABELS[v]} on {name.split()[0]}", sign * (by_var["full"][key] - by_var[v][key]) > 0))
    paper_order = [v for v in sorted(PAPER_ABLATION, key=lambda v: PAPER_ABLATION[v][0]) if v in by_var]
    if len(paper_order) > 2:
        ours = sorted(paper_order, key=lambda v: by_var[v]["psnr"])
        checks.append((f"PSNR order {' < '.join(LABELS[v] for v in paper_order)}", ours == paper_order))
    return checks


def _readme_parts(readme: str | Path) -> tuple[str, str]:
    """``readme``'s text before README_BEGIN and after README_END; one clear error when they are missing."""
    readme = Path(readme)
    if not readme.is_file():
        raise FileNotFoundError(f"--readme {readme}: no such file")
    text = readme.read_text()
    if text.count(README_BEGIN) != 1 or text.count(README_END) != 1 or text.index(README_BEGIN) > text.index(README_END):
        raise ValueError(f"--readme {readme}: it needs one line {README_BEGIN!r} and, after it, one line {README_END!r} "
                         "around the place where the tables go")
    head, rest = text.split(README_BEGIN)
    return head, rest.split(README_END)[1]


def into_readme(readme: str | Path, markdown: str) -> None:
    """Replace the lines between README_BEGIN and README_END of ``readme`` with ``markdown`` (atomically)."""
    from omg_lite.io import atomic_file

    head, tail = _readme_parts(readme)
    with atomic_file(Path(readme)) as tmp:
        Path(tmp).write_text(f"{head}{README_BEGIN}\n{markdown.rstrip()}\n{README_END}{tail}")


def variant_config(cfg: Config, variant: str) -> Config:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {sorted(VARIANTS)}")
    return apply_overrides(cfg, list(VARIANTS[variant]))


def _train(cfg: Config, run: Path, preset: str, progress: bool) -> Path:
    """Train a variant into ``run``, reusing a finished run and resuming an interrupted one; -> its newest weights."""
    from omg_lite.train import Trainer, run_config
    from omg_lite.train.checkpoint import latest_checkpoint

    resume = (run / "config.json").is_file()
    if resume:
        _, old = run_config(run)
        if old.model != cfg.model or old.train.steps != cfg.train.steps or old.train.data != cfg.train.data:
            raise ValueError(f"{run} holds a run with another configuration; remove it or choose another --out")
    trainer = Trainer(cfg, run, resume=resume, preset_name=preset, progress=progress)
    if trainer.step < trainer.steps:
        trainer.fit()
    return latest_checkpoint(run)


def make_tables(out: str | Path, preset: str = "lite", steps: int | None = None, variants: tuple[str, ...] = tuple(VARIANTS),
                overrides: tuple[str, ...] = (), progress: bool = True, readme: str | Path | None = None) -> Tables:
    """Train (or reuse) every variant, evaluate on the held-out identities, write OUT/tables.md + .json
    (and into ``readme``'s marked block)."""
    from omg_lite.network import AvatarModel
    from omg_lite.evaluate import evaluate
    from omg_lite.synth import write_synth
    from omg_lite.io import atomic_file

    if "full" not in variants:
        raise ValueError("the tables compare against the full model: include 'full' in the variants")
    if readme is not None:
        _readme_parts(readme)  # a missing file or marker fails now, not after hours of training
    out = Path(out)
    cfg = from_preset(preset, list(overrides))
    if steps is not None:
        cfg.train.steps, cfg.train.epochs = steps, 0.0
    t = cfg.train
    if t.heldout < 1:
        raise ValueError("train.heldout must be at least 1: the tables are measured on held-out identities")
    data = out / "data"
    if not (data / "meta.json").is_file():
        write_synth(data, t.synth_identities, t.synth_frames, t.image_size, t.synth_seed, cfg=cfg, progress=progress)
    cfg.train.data = str(data)
    cfg.train.feature_cache = str(out / "feature_cache")
    ablation_rows, lod_rows, labels = [], [], []
    for v in variants:
        weights = _train(variant_config(cfg, v), out / "runs" / v, preset, progress)
        net = AvatarModel.load(weights)
        finest = net.model.levels
        lods = list(range(finest + 1)) if v == "full" else [finest]
        r = evaluate(net, data, lods, split="heldout", cross=False, motion=False, progress=progress)
        method = "full" if net.cfg.model.use_refiner else "coarse"
        rows = {row["lod"]: row for row in r.rows if row["method"] == method}
        pick = lambda row: {k: row.get(k) for k in ("gaussians", "psnr", "ssim", "lpips", "face_psnr", "face_ssim", "face_lpips", "csim",  # noqa: E731
                                                    "same_person", "face_found", "frames")}
        ablation_rows.append({"variant": v, "lod": finest, **pick(rows[finest])})
        if v == "full":
            lod_rows = [{"lod": k, **pick(rows[k])} for k in lods]
            labels = [r.notes[0], r.notes[1], f"encoder weights: {net.encoder.weights_source}"]  # LPIPS trunk, identity model, backbone
    command = "omg-lite tables " + " ".join(shlex.quote(a) for a in ["--out", str(out), "--preset", preset]
                                            + ([] if steps is None else ["--steps", str(steps)])
                                            + (["--set", *overrides] if overrides else []))
    notes = [f"{len(variants)} runs of the {preset!r} preset, {cfg.train.steps} training step(s) each (seed {t.seed}), on {t.synth_identities} "
             f"synthetic identities x {t.synth_frames} frames at {t.image_size}x{t.image_size}; metrics on the last {t.heldout} identities "
             "(never trained on): self-reenactment, first frame -> the others, truth composited on the background",
             *labels,
             "CSIM: mean over the frames where dlib finds a face in both render and truth ('–': in none); face_found per row in tables.json",
             f"face PSNR / SSIM / LPIPS: {FACE_REGION} (omg_lite.metrics)",
             "the paper's figures are VFHQ at 512x512 with a trained DINOv2: compare orderings, not values"]
    tables = Tables(lod_rows, ablation_rows, orderings(lod_rows, ablation_rows), notes, command)
    for name, text in (("tables.md", tables.markdown()), ("tables.json", json.dumps(tables.to_dict(), indent=2) + "\n")):
        with atomic_file(out / name) as tmp:
            Path(tmp).write_text(text)
    if readme is not None:
        into_readme(readme, tables.markdown())
    return tables
