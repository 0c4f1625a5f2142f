"""One configuration tree for omg_lite, with named presets.

``OMG_LITE_SMOKE`` is read here and nowhere else: with ``OMG_LITE_SMOKE=1`` (CI sets it) the
notebooks and demos shrink their sizes and steps through :func:`pick` so that each runs in under
two minutes on a 2-core CPU; without it they run the real sizes.

Presets (``PRESETS``) name whole configurations: ``smoke`` (CI, seconds), ``lite`` (a laptop
CPU, 128x128) and ``paper`` (the paper's settings on one GPU). Any field can be changed from the
command line with ``--set section.field=value``; :func:`apply_overrides` refuses unknown keys.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, TypeVar

SMOKE: bool = os.environ.get("OMG_LITE_SMOKE", "0").strip().lower() not in ("", "0", "false", "no")

T = TypeVar("T")


def pick(real: T, smoke: T) -> T:
    """The real value, or the small one when ``OMG_LITE_SMOKE=1``."""
    return smoke if SMOKE else real


@dataclass
class HeadConfig:
    # Path to a FLAME pickle (generic_model.pkl / flame2023.pkl); None uses the offline stand-in.
    flame_path: str | None = None
    # Number of identity (shape) components S taken from the head model.
    n_shape: int = 20
    # Number of expression components E taken from the head model.
    n_expr: int = 16


@dataclass
class CameraConfig:
    # Vertical field of view of the portrait camera, degrees.
    fov_deg: float = 14.0
    # Distance from the camera to the head origin, metres.
    distance: float = 1.6


@dataclass
class Config:
    head: HeadConfig = field(default_factory=HeadConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)


PRESETS: dict[str, Config] = {
    "smoke": Config(),
    "lite": Config(),
    "paper": Config(head=HeadConfig(n_shape=100, n_expr=50)),
}


def preset(name: str) -> Config:
    """A fresh copy of a named preset."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def _parse(value: str, like: Any) -> Any:
    if isinstance(like, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    if like is None:
        return None if value.lower() in ("none", "null", "") else value
    if isinstance(like, (list, tuple)):
        items = [v for v in value.strip("[]()").split(",") if v.strip()]
        parsed = [_parse(v.strip(), like[0]) if like else v.strip() for v in items]
        return type(like)(parsed)
    return type(like)(value)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.field=value`` strings to a copy of ``cfg``; unknown keys are an error."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.field=value")
        key, value = item.split("=", 1)
        node: Any = cfg
        parts = key.strip().split(".")
        for i, part in enumerate(parts):
            names = [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []
            if part not in names:
                where = ".".join(parts[:i]) or "the config"
                raise KeyError(f"unknown config key {key!r}: {where} has no field {part!r} (fields: {names})")
            if i == len(parts) - 1:
                old = getattr(node, part)
                if dataclasses.is_dataclass(old):
                    raise KeyError(f"config key {key!r} is a section, not a field")
                try:
                    setattr(node, part, _parse(value, old))
                except ValueError as e:
                    raise ValueError(f"bad value for {key!r}: {e}") from None
            else:
                node = getattr(node, part)
    return cfg
