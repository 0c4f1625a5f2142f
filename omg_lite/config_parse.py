"""Reading settings into a :class:`omg_lite.config.Config`: ``--set`` overrides, a run's or a
checkpoint's config record, the valid range of every numeric setting, and the files a data file
may never choose (:data:`PATH_KEYS`)."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

from omg_lite.config import Config


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


# Settings renamed since checkpoints were first written: old key -> new key. Read back (a run's config.json,
# a checkpoint's metadata, --set) under their new names, silently: the value means the same.
RENAMED_KEYS = {"model.heads": "model.attention_heads", "encoder.head": "encoder.dense_head"}


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.field=value`` strings to a copy of ``cfg``; unknown keys are an error."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.field=value")
        key, value = item.split("=", 1)
        key = RENAMED_KEYS.get(key.strip(), key)
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
    return validate(cfg)


# Settings that name a file or folder. They come from the user (command line, API) or the default,
# never from a data file (checkpoint metadata, meta.json, track.json): a file must not choose
# which other files omg_lite opens (see omg_lite.safe_load).
PATH_KEYS = ("head.flame_path", "encoder.weights", "train.data", "train.feature_cache")
ENCODER_WEIGHT_WORDS = ("auto", "hub", "random")


def strip_paths(cfg: Config) -> dict[str, str]:
    """Reset every :data:`PATH_KEYS` setting of ``cfg`` (in place) to its default -> {key: removed value}."""
    removed, fresh = {}, Config()
    for key in PATH_KEYS:
        section, name = key.split(".")
        value, default = getattr(getattr(cfg, section), name), getattr(getattr(fresh, section), name)
        if value != default and not (key == "encoder.weights" and value in ENCODER_WEIGHT_WORDS):
            removed[key] = value
            setattr(getattr(cfg, section), name, default)
    return removed


@dataclass(frozen=True)
class Range:
    """A closed or half-open interval of valid values (``None``: unbounded)."""

    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False  # lo itself is not valid

    def __contains__(self, v: float) -> bool:
        if v != v or v in (float("inf"), float("-inf")):
            return False
        return (self.lo is None or v > self.lo or (v == self.lo and not self.open_lo)) and (self.hi is None or v <= self.hi)

    def __str__(self) -> str:
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        return f"{'(' if self.open_lo or self.lo is None else '['}{lo}, {hi}{')' if self.hi is None else ']'}"


_POS, _NONNEG, _COUNT, _SHARE = Range(0, None, True), Range(0), Range(1), Range(0, 1)
# The valid range of every numeric setting, checked by validate() wherever settings are parsed.
RANGES: dict[str, Range] = {
    "head.n_shape": Range(0, 300), "head.n_expr": Range(0, 100),
    "camera.fov_deg": Range(0, 179, True), "camera.distance": Range(0, 100, True),
    "encoder.image_size": Range(14, 1036), "encoder.local_size": Range(1, 1024), "encoder.local_dim": Range(1, 4096),
    "encoder.n_layers": Range(1, 48),
    "synth.max_yaw_deg": Range(0, 90), "synth.max_pitch_deg": Range(0, 90), "synth.max_roll_deg": Range(0, 90),
    "synth.max_jaw_rad": Range(0, 1), "synth.max_gaze_deg": Range(0, 45), "synth.head_height": Range(-0.5, 0.5),
    "synth.shape_std": Range(0, 5), "synth.expression_std": Range(0, 5), "synth.supersample": Range(1, 8),
    "synth.batch_frames": Range(1, 1024),
    "train.synth_identities": _COUNT, "train.synth_frames": Range(2), "train.synth_seed": _NONNEG, "train.heldout": _NONNEG,
    "train.image_size": Range(16, 4096), "train.batch_size": _COUNT, "train.steps": _NONNEG, "train.epochs": _NONNEG,
    "train.lr": Range(0, 1, True), "train.w_l2": _NONNEG, "train.w_ssim": _NONNEG, "train.w_lpips": _NONNEG,
    "train.w_offset": _NONNEG, "train.lod_schedule": _SHARE, "train.coarser_share": _SHARE, "train.seed": _NONNEG,
    "train.num_workers": Range(0, 256), "train.log_every": _COUNT, "train.image_every": _COUNT, "train.ckpt_every": _COUNT,
    "train.keep": _NONNEG,
    "model.token_dim": _COUNT, "model.local_dim": _COUNT, "model.dim": _COUNT, "model.layers": _COUNT, "model.attention_heads": _COUNT,
    "model.mlp_ratio": _COUNT, "model.levels": Range(0, 3), "model.channels": Range(3, 256), "model.head_hidden": _COUNT,
    "model.max_offset": Range(0, 1), "model.shoulder_offset": Range(0, 1), "model.refiner_width": _COUNT,
    "model.refiner_depth": Range(0, 6), "model.background": _SHARE, "model.visibility_tol": _SHARE,
    "track.size": Range(32, 4096), "track.crop_ratio": Range(0, 20, True), "track.crop_shift": Range(-5, 5),
    "track.noise": Range(0, 1, True), "track.contour_weight": _NONNEG, "track.dense_weight": _NONNEG, "track.smooth": _NONNEG,
    "track.rigid_iters": _NONNEG, "track.full_iters": _NONNEG, "track.max_frames": _NONNEG, "track.face": Range(0, 7),
}  # fmt: skip
CHOICES: dict[str, tuple[str, ...]] = {"encoder.dense_head": ("dpt", "bilinear"), "train.lpips_net": ("alex", "vgg", "squeeze")}


def _fields(cfg: Config):
    for section in dataclasses.fields(cfg):
        node = getattr(cfg, section.name)
        for f in dataclasses.fields(node):
            yield f"{section.name}.{f.name}", getattr(node, f.name)


def validate(cfg: Config) -> Config:
    """Refuse a setting of the wrong type, outside its range, or one that makes the run meaningless, naming the key."""
    defaults = dict(_fields(Config()))
    for key, value in _fields(cfg):
        like = defaults[key]
        ok_type = {bool: lambda v: isinstance(v, bool), int: lambda v: isinstance(v, int) and not isinstance(v, bool),
                   float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), str: lambda v: isinstance(v, str),
                   type(None): lambda v: v is None or isinstance(v, str),
                   tuple: lambda v: isinstance(v, tuple) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)}  # fmt: skip
        if not ok_type[type(like)](value):
            raise ValueError(f"setting {key} must be {type(like).__name__ if like is not None else 'a path or none'}, got {value!r}")
        rng = RANGES.get(key)
        for v in value if isinstance(value, tuple) else [value]:
            if rng is not None and v not in rng:
                raise ValueError(f"setting {key}={v!r} is outside its valid range {rng}: choose a value in it (--set {key}=...)")
        if key in CHOICES and value not in CHOICES[key]:
            raise ValueError(f"setting {key}={value!r}: choose one of {', '.join(CHOICES[key])}")
    t = cfg.train
    if t.steps == 0 and t.epochs == 0:
        raise ValueError("train.steps=0 and train.epochs=0: the run would train nothing; set train.steps (or train.epochs) above 0")
    if not t.data and t.heldout >= t.synth_identities:
        raise ValueError(f"train.heldout={t.heldout} holds out all of the train.synth_identities={t.synth_identities} identities: "
                         "at least one must stay for training")  # fmt: skip
    if list(t.lod_schedule) != sorted(t.lod_schedule):
        raise ValueError(f"train.lod_schedule={t.lod_schedule} must be increasing (the fractions of the run where the level goes up)")
    if cfg.model.dim % cfg.model.attention_heads:
        raise ValueError(f"model.dim={cfg.model.dim} must be divisible by model.attention_heads={cfg.model.attention_heads}")
    if cfg.encoder.image_size % 14:
        raise ValueError(f"encoder.image_size={cfg.encoder.image_size} must be a multiple of 14 (the ViT's patch size: 224, 518, ...)")
    return cfg


def config_from_dict(data: dict, like: Config | None = None) -> Config:
    """Rebuild a :class:`Config` from its ``asdict`` form (a run's config.json, a checkpoint's metadata); unknown keys are an error."""

    def build(node, values: dict, where: str):
        if not isinstance(values, dict):
            raise ValueError(f"{where}: expected a section, got {values!r}")
        names = {f.name for f in dataclasses.fields(node)}
        for key, value in values.items():
            key = RENAMED_KEYS.get(f"{where}.{key}".removeprefix("config."), key).rpartition(".")[2]
            if key not in names:
                raise ValueError(f"{where} has no field {key!r}: the run's config.json was written by another omg_lite version")
            old = getattr(node, key)
            if dataclasses.is_dataclass(old):
                build(old, value, f"{where}.{key}")
            else:
                setattr(node, key, tuple(value) if isinstance(old, tuple) else value)
        return node

    return validate(build(like or Config(), data, "config"))
