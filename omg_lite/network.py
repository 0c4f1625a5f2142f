"""The network: encoder (frozen backbone + learned dense head) and OMG model in one ``nn.Module``.

:class:`AvatarModel` is what training steps, what reconstruction and enactment run, and what a
checkpoint holds. It is built one way (:meth:`AvatarModel.from_config`) and loaded one way
(:meth:`AvatarModel.load`, the way nanoGPT keeps ``from_pretrained`` on ``GPT``):

- ``AvatarModel.from_config(cfg)``: the encoder ``cfg.encoder`` describes, the head model
  ``cfg.head`` names (``omg_lite.head.head_from_config``) and an ``OMGModel(cfg.model, head)``
  whose input widths ``model.token_dim`` / ``model.local_dim`` are set from the encoder built;
- ``AvatarModel.load(path)``: a run folder (``omg-lite train --out RUN``) or one weights file,
  read through ``omg_lite.train.checkpoint``; the config travels in the weights' metadata, so a
  lone ``step_XXXXXX.safetensors`` is enough. The default is ``data_samples/lite``;
- ``AvatarModel.untrained(preset)``: a fresh model of a preset, for speed and pipeline checks.

A checkpoint stores :meth:`AvatarModel.trainable_state`: everything but the frozen backbone and
the head model (the FLAME layer), under the keys ``encoder.*`` and ``model.*``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from omg_lite.config import Config, config_from_dict, from_preset, strip_paths
from omg_lite.config import preset as named_preset
from omg_lite.device import pick_device
from omg_lite.features.encoder import DinoEncoder, EncoderOutput

DATA_SAMPLES = Path(__file__).resolve().parents[1] / "data_samples"
DEFAULT_CHECKPOINT = DATA_SAMPLES / "lite"
LITE_COMMAND = "omg-lite train --preset lite --out data_samples/lite"


def resolve_checkpoint(checkpoint: str | Path | None) -> Path:
    """A run folder, a weights file or None (the default) -> the weights file to load."""
    from omg_lite.train.checkpoint import latest_checkpoint

    default = checkpoint is None
    path = DEFAULT_CHECKPOINT if default else Path(checkpoint)
    hint = f"train one with `{LITE_COMMAND}` (CPU hours) or pass --checkpoint RUN_OR_FILE"
    if not path.exists():
        what = "the default lite checkpoint is not" if default else "no checkpoint"
        raise FileNotFoundError(f"{what} at {path}: {hint}")
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(f"{path} is not an omg_lite checkpoint (expected a run folder or a step_XXXXXX.safetensors file)")
        return path
    if (path / "checkpoints" / "latest").is_file():
        return latest_checkpoint(path)
    found = sorted(path.glob("step_*.safetensors")) or sorted(path.glob("checkpoints/step_*.safetensors"))
    if not found:
        raise FileNotFoundError(f"{path} holds no checkpoint (no checkpoints/latest, no step_*.safetensors): {hint}")
    return found[-1]


def _encoder_weights(trained_on: str | None, override: str | None) -> str | None:
    """The encoder.weights that rebuild the backbone a checkpoint was trained on (its identity key)."""
    if override is not None:
        return override
    if trained_on is None:
        return None
    source = trained_on.split("|")[1] if trained_on.count("|") >= 2 else ""
    if source.startswith("random:"):
        return "random"
    if source.startswith("hub:"):
        return "hub"
    raise ValueError(f"the checkpoint was trained on the backbone {trained_on!r} (a local weights file): "
                     "pass that file with --encoder-weights PATH")


class AvatarModel(nn.Module):
    """Config, encoder (frozen backbone + dense head) and OMG model; ``label`` says where the weights come from."""

    def __init__(self, cfg: Config, preset: str, encoder: DinoEncoder, model: nn.Module, label: str = "",
                 checkpoint: Path | None = None, step: int | None = None, digest: str | None = None):
        super().__init__()
        self.encoder, self.model = encoder, model
        self.cfg, self.preset, self.label = cfg, preset, label  # label: "UNTRAINED ..." for a fresh model
        self.checkpoint, self.step = checkpoint, step
        self.digest = digest  # sha256 of the weights (a saved avatar names the model it belongs to)

    @classmethod
    def from_config(cls, cfg: Config, preset: str = "", label: str = "", encoder: DinoEncoder | None = None,
                    model: nn.Module | None = None) -> "AvatarModel":
        """Build what ``cfg`` describes; ``encoder`` / ``model`` replace the parts they stand for (tests' stand-ins)."""
        from omg_lite.features import build_encoder
        from omg_lite.head import head_from_config
        from omg_lite.model import OMGModel

        encoder = encoder if encoder is not None else build_encoder(cfg.encoder)
        if model is None:
            # the model's input widths are the encoder's, derived here (cfg records them for the checkpoint)
            cfg.model.token_dim, cfg.model.local_dim = encoder.backbone.embed_dim, encoder.local_dim
            model = OMGModel(cfg.model, head_from_config(cfg.head))
        return cls(cfg, preset, encoder, model, label)

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, preset: str | None = None, device: str | torch.device = "auto",
             encoder_weights: str | None = None, flame_path: str | Path | None = None) -> "AvatarModel":
        """Load a run folder or weights file (default ``data_samples/lite``); ``preset`` insists on one.

        The checkpoint's config never names files (:func:`omg_lite.config.strip_paths`): a model
        trained on FLAME needs its FLAME file again as ``flame_path``.
        """
        from omg_lite.train.checkpoint import check_fits, load_weights

        if preset is not None:
            named_preset(preset)  # an unknown name is refused as such, before any file is read
        path = resolve_checkpoint(checkpoint)
        tensors, meta = load_weights(path)
        try:
            record = json.loads(meta["config"])
            cfg = config_from_dict(record["config"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"checkpoint {path} carries no readable config in its metadata ({e})") from None
        name = str(record.get("preset", ""))
        trained_flame = strip_paths(cfg).get("head.flame_path")
        if trained_flame is not None and flame_path is None:
            raise ValueError(f"checkpoint {path} was trained on the FLAME head {Path(str(trained_flame)).name!r}; a checkpoint never "
                             "chooses which files are opened: pass that FLAME file with --flame-path PATH")
        if trained_flame is None and flame_path is not None:
            raise ValueError(f"checkpoint {path} was trained on the offline stand-in head, not FLAME: drop --flame-path")
        cfg.head.flame_path = None if flame_path is None else str(flame_path)
        if preset is not None and name != preset:
            raise ValueError(f"checkpoint {path} was trained with the {name or 'unnamed'!r} preset, not {preset!r}: "
                             f"pass a {preset} checkpoint (`omg-lite train --preset {preset} --out RUN`) or drop --preset")
        trained_on = record.get("encoder")
        weights = _encoder_weights(trained_on, encoder_weights)
        if weights is not None:
            cfg.encoder.weights = weights
        step = int(meta.get("step", 0))
        net = cls.from_config(cfg, name, f"{path.name} (preset {name or '?'}, step {step})")
        if trained_on is not None and net.encoder.identity_key != trained_on:
            raise ValueError(f"checkpoint {path} was trained on the backbone {trained_on!r} but this machine built "
                             f"{net.encoder.identity_key!r}: pass the right file with --encoder-weights")
        check_fits(path, tensors, net.trainable_state())
        net.load_state_dict(tensors, strict=False)
        net.checkpoint, net.step, net.digest = path, step, meta.get("sha256")
        return net.to(pick_device(device)).eval()

    @classmethod
    def untrained(cls, preset: str = "smoke", device: str | torch.device = "auto", seed: int = 0) -> "AvatarModel":
        """A freshly initialised model of a preset (random encoder): for speed and pipeline checks only."""
        cfg = from_preset(preset)
        cfg.encoder.weights = "random"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = cls.from_config(cfg, preset, f"UNTRAINED {preset} model (random initialisation, seed {seed}; not a result)")
        net.digest = f"untrained:{preset}:seed{seed}"
        return net.to(pick_device(device)).eval()

    # -- what it is -------------------------------------------------------------------------------
    @property
    def trained(self) -> bool:
        return self.checkpoint is not None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def head_model(self):
        """The head model (the FLAME layer) the OMG model poses."""
        return self.model.head_model

    @property
    def head(self):
        """Deprecated: the old name of :attr:`head_model`."""
        warnings.warn("AvatarModel.head is deprecated: use AvatarModel.head_model (the FLAME layer)", DeprecationWarning, stacklevel=2)
        return self.head_model

    @property
    def image_size(self) -> int:
        """The side of the images the model was trained on (the tracker crops to it)."""
        return self.cfg.train.image_size

    def frozen(self) -> list[nn.Module]:
        """The parts no step trains and no checkpoint stores: the backbone and the head model."""
        head = getattr(self.model, "head_model", None)
        return [self.encoder.backbone] + ([head] if isinstance(head, nn.Module) else [])

    def trainable_state(self) -> dict[str, Tensor]:
        """The state dict without the :meth:`frozen` modules: what a checkpoint holds."""
        frozen = self.frozen()
        skip = {name + "." for name, m in self.named_modules() if name and any(m is f for f in frozen)}
        return {k: v for k, v in self.state_dict().items() if not any(k.startswith(s) for s in skip)}

    # -- what it runs ------------------------------------------------------------------------------
    def forward(self, feats, batch, lod: int):
        """One training / held-out step: backbone features + a ``PairBatch`` -> the model's output at level ``lod``."""
        enc = self.encoder.decode(feats)
        return self.model(enc, batch.source, batch.driver, batch.camera_src, batch.camera_drv, batch.source_mask, lod)

    @torch.no_grad()
    def encode(self, image: Tensor) -> EncoderOutput:  # image [B, 3, H, W] in [0, 1]
        return self.encoder(image.to(self.device))
