"""A reconstructed (or personalised) avatar on disk: OUT/avatar.safetensors, OUT/avatar.json, OUT/source.png.

The safetensors file holds the Gaussian set G of every kept level and the source frame; its
metadata names the checkpoint (sha256) and preset the avatar belongs to, and a checksum of the
tensors: :func:`load_avatar` refuses an avatar of another model or a corrupt file. Nothing is
unpickled.
"""

from __future__ import annotations

from dataclasses import asdict

from torch import Tensor

from omg_lite.geometry.camera import Camera
from omg_lite.head.params import HeadParams
from omg_lite.model.gaussian_heads import GaussianAttributes
from omg_lite.model.omg import GaussianSet
from omg_lite.model.shoulder_branch import ShoulderGaussians

FORMAT = "omg_lite.avatar"
VERSION = "1"
AVATAR_FILE, AVATAR_JSON = "avatar.safetensors", "avatar.json"


def _tensors(avatar) -> dict[str, Tensor]:
    gs, src = avatar.gaussians, avatar.source
    out = {"offsets": gs.offsets, "shape": gs.shape}
    for k, a in gs.levels.items():
        out.update({f"level{k}.features": a.features, f"level{k}.opacities": a.opacities, f"level{k}.scales": a.scales,
                    f"level{k}.quats": a.quats, f"level{k}.source_means": gs.source_means[k]})
    if gs.shoulders is not None:
        s, a = gs.shoulders, gs.shoulders.attributes
        out.update({"shoulders.means": s.means, "shoulders.valid": s.valid, "shoulders.features": a.features,
                    "shoulders.opacities": a.opacities, "shoulders.scales": a.scales, "shoulders.quats": a.quats})
        if s.attached is not None:
            out.update({"shoulders.attached": s.attached, "shoulders.rest_means": s.rest_means, "shoulders.rest_quats": s.rest_quats})
        if s.footprint is not None:
            out["shoulders.footprint"] = s.footprint
    out.update({"source.image": src.image, "source.mask": src.mask, "source.K": src.camera.K, "source.R": src.camera.R,
                "source.t": src.camera.t, **{f"source.params.{f}": getattr(src.params, f) for f in ("shape", "expression", "pose", "translation")}})
    return {k: v.detach().cpu().clone() for k, v in out.items()}  # clones: safetensors refuses shared storage


def save_avatar(avatar, out, overwrite: bool = False) -> "Path":
    """Write OUT/avatar.safetensors (the Gaussian set and the source frame), OUT/avatar.json, OUT/source.png (atomically)."""
    import json
    from pathlib import Path

    from PIL import Image
    from safetensors.torch import save_file

    from omg_lite.avatar import to_uint8
    from omg_lite.io import output_folder
    from omg_lite.train.checkpoint import tensors_digest

    tensors = _tensors(avatar)
    net = avatar.net
    meta = {"format": FORMAT, "version": VERSION, "checkpoint": net.digest, "preset": net.preset, "lod": str(avatar.gaussians.lod),
            "size": str(avatar.size), "sha256": tensors_digest(tensors)}
    record = {"checkpoint": net.label, "checkpoint_sha256": net.digest, "preset": net.preset, "levels": avatar.lods,
              "counts": {k: avatar.counts(k) for k in avatar.lods}, "size": avatar.size,
              "fit": None if avatar.fit is None else {k: v for k, v in asdict(avatar.fit).items()}}
    with output_folder(Path(out), overwrite, AVATAR_JSON, "an omg-lite personalised avatar") as tmp:
        save_file(tensors, str(tmp / AVATAR_FILE), metadata=meta)
        (tmp / AVATAR_JSON).write_text(json.dumps(record, indent=1) + "\n")
        Image.fromarray(to_uint8(avatar.source.image)[0]).save(tmp / "source.png")
    return Path(out)


def load_avatar(path, net):
    """Read an avatar folder written by :func:`save_avatar` for ``net`` (an AvatarModel); refuse one of another model."""
    from pathlib import Path

    from safetensors import SafetensorError

    from omg_lite.avatar import Avatar, SourceFrame
    from omg_lite.train.checkpoint import read_tensors, tensors_digest

    path = Path(path)
    file = path / AVATAR_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no saved avatar at {path} (expected a folder written by `omg-lite personalize --out`)")
    try:
        t, meta = read_tensors(file)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{file} is corrupt or not a safetensors file ({e}): personalise the avatar again") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{file} is not an omg_lite avatar (format {meta.get('format')!r}, version {meta.get('version')!r})")
    if tensors_digest(t) != meta.get("sha256"):
        raise ValueError(f"{file} is corrupt: its tensors do not match their checksum; personalise the avatar again")
    if meta.get("checkpoint") != net.digest or meta.get("preset") != net.preset:
        raise ValueError(f"{path} was made with another model (checkpoint sha256 {str(meta.get('checkpoint'))[:12]}, preset "
                         f"{meta.get('preset')!r}) than {net.label} (sha256 {str(net.digest)[:12]}): pass the --checkpoint it was "
                         "made with, or personalise again with this one")
    dev = net.device
    t = {k: v.to(dev) for k, v in t.items()}
    lod, size = int(meta["lod"]), int(meta["size"])
    attrs = lambda p: GaussianAttributes(t[f"{p}.features"], t[f"{p}.opacities"], t[f"{p}.scales"], t[f"{p}.quats"])  # noqa: E731
    levels = sorted(int(k[5:].split(".")[0]) for k in t if k.startswith("level") and k.endswith(".features"))
    sh = None
    if "shoulders.means" in t:
        sh = ShoulderGaussians(t["shoulders.means"], attrs("shoulders"), t["shoulders.valid"],
                               *(t.get(f"shoulders.{k}") for k in ("attached", "rest_means", "rest_quats", "footprint")))
    gs = GaussianSet(lod, {k: attrs(f"level{k}") for k in levels}, {k: t[f"level{k}.source_means"] for k in levels}, t["offsets"], t["shape"], sh)
    params = HeadParams(*(t[f"source.params.{f}"] for f in ("shape", "expression", "pose", "translation")))
    source = SourceFrame(t["source.image"], t["source.mask"], params, Camera(t["source.K"], t["source.R"], t["source.t"], size, size))
    return Avatar(net, gs, source)
