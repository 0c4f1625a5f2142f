"""The training loop (paper Sec. 4.1): self-supervised re-enactment, coarse-to-fine.

One step: encode the source images with the frozen backbone (features cached on disk), run the
learned dense head and the OMG model at the current level of detail k, and minimise

    L = sum_{I in {I_c, I_r}} [10 L_2 + (1 - SSIM) + 0.1 LPIPS](I, I_d) + 0.1 ||offset||_2

with Adam. The target I_d is the driver frame composited on the renderer's background
(``model.background``) outside its portrait mask (the Gaussians model the head and shoulders, not
the backdrop): I_d = M_d * rgb_d + (1 - M_d) * background. Without the refiner (the "w/o
Refiner" ablation) only I_c is scored.

Coarse-to-fine: "subdivision levels increasing progressively". ``train.lod_schedule`` lists the
fractions of the run at which k goes up: (1/3, 2/3) trains k = 0 for the first third, 1 for the
second, 2 for the last. "The same weights serve different speeds", so once k > 0 a share
``train.coarser_share`` of the steps trains a coarser level drawn from 0..k-1 (:func:`step_lod`):
trained only in its own phase, a level's Gaussian head falls out of step with the shared layers
that keep learning afterwards, and its renders drift in colour.

Exact resume: the pairs of step s depend on (seed, s) only (see :mod:`.data`); a checkpoint stores
the weights, Adam's state and the torch / numpy / python RNG states, so ``--resume`` reproduces the
losses an uninterrupted run would have had, step for step (under DDP every rank restores rank 0's
RNG states: exact as long as the model draws no per-rank random numbers). A non-finite loss stops the run before
the optimizer step, naming the step and the last good checkpoint; nothing is saved after it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from omg_lite.config import Config, config_from_dict, validate
from omg_lite.features import BackboneFeatures, DinoEncoder, FeatureCache
from omg_lite.network import AvatarModel
from omg_lite.train import ddp
from omg_lite.train.checkpoint import atomic_write_text, check_fits, latest_checkpoint, load_state, load_weights, save_checkpoint
from omg_lite.train.data import PairBatch, PairDataset, collate
from omg_lite.train.losses import MIN_SIZE, OMGLoss
from omg_lite.train.memory import OutOfMemory, check_memory, oom_advice

CONFIG_FILE = "config.json"


class NonFiniteLoss(ValueError):
    """The loss became NaN or infinite: the run stopped without saving."""


class AmpIgnoredWarning(UserWarning):
    """train.amp=true on a device where bfloat16 autocast is not used (the CPU)."""


def lod_at(step: int, steps: int, schedule: tuple[float, ...]) -> int:
    """Level of detail k at ``step``: the number of schedule fractions already passed."""
    return sum(step >= f * steps for f in schedule)


def step_lod(step: int, steps: int, schedule: tuple[float, ...], coarser_share: float, seed: int) -> int:
    """Level of detail trained at ``step``: the phase's level k = :func:`lod_at`, or, with probability
    ``coarser_share`` when k > 0, a coarser level drawn uniformly from 0..k-1. The draw depends on
    (seed, step) only, so resumed runs and every DDP rank train the same level."""
    k = lod_at(step, steps, schedule)
    draw = random.Random(seed * 1_000_003 + step)
    return draw.randrange(k) if k and draw.random() < coarser_share else k


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state["numpy"] = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def target_image(batch: PairBatch, background: float) -> Tensor:  # -> [B, 3, H, W]
    """I_d = M_d * rgb_d + (1 - M_d) * background (``omg_lite.metrics.composite``)."""
    from omg_lite.metrics import composite

    return composite(batch.driver_rgb, batch.driver_mask, background)


class Trainer:
    """Builds everything from a config and trains into the run folder ``run``.

    ``model`` and ``encoder`` default to the ones the config describes (``AvatarModel.from_config``);
    tests pass small stand-ins. With ``resume`` the run continues from its newest
    checkpoint.
    """

    def __init__(self, cfg: Config, run: str | Path, resume: bool = False, preset_name: str = "", model: nn.Module | None = None,
                 encoder: DinoEncoder | None = None, progress: bool = True):
        self.cfg, self.run, self.progress, self.preset = cfg, Path(run), progress, preset_name
        t = cfg.train
        self.dist = ddp.setup(t.device)
        self._check_run(resume)
        self._check_config()
        torch.manual_seed(t.seed)
        np.random.seed(t.seed)
        random.seed(t.seed)
        self.data = self._dataset()
        self.net = AvatarModel.from_config(cfg, preset_name, f"training run {self.run}", encoder, model).to(self.dist.device)
        self.encoder = self.net.encoder
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("nothing to train: the model and the encoder's dense head have no trainable parameters")
        self.ddp_net = ddp.wrap(self.net, self.dist)
        self.optimizer = torch.optim.Adam(self.params, lr=t.lr)
        self.criterion = OMGLoss((t.w_l2, t.w_ssim, t.w_lpips, t.w_offset), t.lpips_net).to(self.dist.device)
        cache = t.feature_cache
        self.cache = None if cache == "off" else FeatureCache(Path(cache) if cache else self.run / "feature_cache")
        self.sampler = ddp.sampler(self.data, self.dist, t.seed)
        self.local_batch = t.batch_size // self.dist.world
        self.steps_per_epoch = len(self.sampler) // self.local_batch
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(self.data)} training pairs cannot fill one batch of {t.batch_size}: lower train.batch_size or add frames")
        self.steps = math.ceil(t.epochs * self.steps_per_epoch) if t.epochs > 0 else t.steps
        self.step = 0
        self.checkpoint: Path | None = None
        if resume:
            self._resume()
        if self.dist.main:
            atomic_write_text(self.run / CONFIG_FILE, json.dumps(self._config_record(), indent=2) + "\n")

    # -- setup ---------------------------------------------------------------------------------
    def _config_record(self) -> dict:
        """The run's preset, config and the backbone it trains on (which weights "auto" resolved to)."""
        return {"preset": self.preset, "encoder": self.encoder.identity_key, "config": dataclasses.asdict(self.cfg)}

    def _check_run(self, resume: bool) -> None:
        has_run = (self.run / CONFIG_FILE).is_file()
        if resume and not has_run:
            raise FileNotFoundError(f"nothing to resume: {self.run} holds no {CONFIG_FILE} (start a run there without --resume)")
        if not resume and has_run:
            raise FileExistsError(f"{self.run} already holds a training run; pass --resume to continue it, or choose another --out")
        if self.run.exists() and not self.run.is_dir():
            raise FileExistsError(f"{self.run} exists and is not a folder; choose another --out")

    def _check_config(self) -> None:
        """The settings that need no data, checked before a synthetic set is rendered (and memory, before the first step)."""
        t, levels, dev = validate(self.cfg).train, self.cfg.model.levels, self.dist.device
        if t.amp and dev.type != "cuda":
            warnings.warn(f"train.amp=true is ignored on {dev.type}: bfloat16 autocast is used on CUDA only, so this run trains in float32",
                          AmpIgnoredWarning, stacklevel=3)
        if t.batch_size % self.dist.world:
            raise ValueError(f"train.batch_size={t.batch_size} must be a multiple of the number of processes ({self.dist.world})")
        if len(t.lod_schedule) > levels:
            raise ValueError(f"train.lod_schedule {t.lod_schedule} raises the level of detail {len(t.lod_schedule)} times but model.levels={levels}")
        if t.image_size < MIN_SIZE:
            raise ValueError(f"train.image_size={t.image_size} is too small: the loss needs at least {MIN_SIZE} pixels (LPIPS, SSIM)")
        check_memory(self.preset, self.cfg, t.batch_size // self.dist.world, dev, self.dist.world)

    def _dataset(self) -> PairDataset:
        t = self.cfg.train
        root = Path(t.data) if t.data else self.run / "data"
        if not t.data and not (root / "meta.json").is_file():
            if self.dist.main:
                from omg_lite.synth import write_synth

                write_synth(root, t.synth_identities, t.synth_frames, t.image_size, t.synth_seed, cfg=self.cfg, progress=self.progress)
            ddp.barrier(self.dist)
        data = PairDataset(root, t.image_size, split="train", heldout=t.heldout, seed=t.seed)
        n_shape, n_expr = self.cfg.head.n_shape, self.cfg.head.n_expr
        if (data.n_shape, data.n_expr) != (n_shape, n_expr):
            raise ValueError(
                f"the clips in {root} have {data.n_shape} shape and {data.n_expr} expression coefficients but the head model "
                f"uses {n_shape} and {n_expr}: set head.n_shape={data.n_shape} head.n_expr={data.n_expr}"
            )
        return data

    def _resume(self) -> None:
        path = latest_checkpoint(self.run)
        if path is None:
            return  # the run stopped before its first checkpoint: start from step 0
        tensors, meta = load_weights(path)
        trained_on = json.loads(meta["config"]).get("encoder")
        if trained_on != self.encoder.identity_key:
            raise ValueError(f"checkpoint {path} was trained on the backbone {trained_on!r} but this run now has {self.encoder.identity_key!r} "
                             "(encoder.weights resolved differently on this machine): set encoder.weights to the run's weights to resume it")
        own = self.net.trainable_state()
        check_fits(path, tensors, own)
        self.net.load_state_dict(tensors, strict=False)
        state = load_state(path.with_name(path.name.replace(".safetensors", ".state.pt")))
        self.optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
        self.step, self.checkpoint = int(state["step"]), path

    # -- the loop --------------------------------------------------------------------------------
    def batches(self):
        """(step, batch) from the current step on: the order is a function of (seed, step)."""
        while True:
            epoch, offset = divmod(self.step, self.steps_per_epoch)
            self.sampler.set_epoch(epoch)
            self.data.set_epoch(epoch)
            order = list(self.sampler)[offset * self.local_batch : self.steps_per_epoch * self.local_batch]
            # its own generator: a new loader must not draw from the global RNG (that would shift a resumed run)
            seeds = torch.Generator().manual_seed(self.cfg.train.seed * 1_000_003 + epoch)
            loader = torch.utils.data.DataLoader(self.data, batch_size=self.local_batch, sampler=order, collate_fn=collate,
                                                 num_workers=self.cfg.train.num_workers, generator=seeds)
            for batch in loader:
                yield batch

    def _features(self, images: Tensor) -> BackboneFeatures:
        with torch.no_grad():
            return self.cache.features(self.encoder, images) if self.cache else self.encoder.backbone_features(images)

    def lod(self, step: int) -> int:
        """The level of detail trained at ``step`` (:func:`step_lod`)."""
        t = self.cfg.train
        return step_lod(step, self.steps, t.lod_schedule, t.coarser_share, t.seed)

    def train_step(self, batch: PairBatch, lod: int | None = None):
        """Forward + loss for one batch at level ``lod`` (default: the current step's) -> (loss terms, outputs)."""
        t, dev = self.cfg.train, self.dist.device
        batch = batch.to(dev)
        lod = self.lod(self.step) if lod is None else lod
        feats = self._features(batch.source_rgb)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=t.amp and dev.type == "cuda"):
            out = self.ddp_net(feats, batch, lod)
        refined = out.refined if self.cfg.model.use_refiner else None
        loss = self.criterion(out.coarse, refined, target_image(batch, self.cfg.model.background), out.offsets)
        return loss, out, batch

    def update(self, loss) -> None:
        """Backward of ``loss.total`` and one Adam step: step s -> s + 1."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        self.optimizer.step()
        self.step += 1

    def fit(self, max_steps: int | None = None) -> list[dict[str, float]]:
        """Train up to ``train.steps`` (or ``max_steps`` more steps, an interruption); returns each step's losses."""
        from tqdm.auto import tqdm

        d, t = self.dist, self.cfg.train
        self.net.train()
        history: list[dict[str, float]] = []
        end = self.steps if max_steps is None else min(self.steps, self.step + max_steps)
        writer = self._writer() if d.main else None
        bar = tqdm(total=self.steps, initial=self.step, unit="step", desc="train", disable=not (self.progress and d.main))
        rate, it = None, self.batches()
        try:
            while self.step < end:
                tic = time.perf_counter()
                try:
                    loss, out, batch = self.train_step(next(it))
                    if not ddp.all_true(bool(torch.isfinite(loss.total)), d):
                        where = f"the last good checkpoint is {self.checkpoint} (resume with --resume, perhaps with a lower train.lr)" if self.checkpoint else "no checkpoint was written yet"
                        raise NonFiniteLoss(f"the loss became {loss.total.item()} at step {self.step + 1}; training stopped without saving: {where}")
                    self.update(loss)
                except torch.cuda.OutOfMemoryError:
                    raise OutOfMemory(oom_advice(self.preset, self.cfg, self.local_batch, d.world, self.step + 1)) from None
                record = {"loss": loss.total.item(), **{k: v.item() for k, v in loss.terms.items()}}
                history.append(record)
                speed = t.batch_size / (time.perf_counter() - tic)
                rate = speed if rate is None else 0.9 * rate + 0.1 * speed
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{rate:.2f}", lod=self.lod(self.step - 1))
                if writer is not None:
                    self._log(writer, record, rate, out, batch)
                if self.step % t.ckpt_every == 0 or self.step == self.steps:
                    self.save()
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        return history

    @torch.no_grad()
    def evaluate(self, split: str = "heldout", lod: int | None = None) -> dict[str, float]:
        """Mean PSNR / SSIM / LPIPS of I_r against I_d over ``split``'s clips, whole image and face
        region (``omg_lite.metrics``; the face region needs the model's head model), at level ``lod``
        (default: the finest); written to RUN/heldout.json and TensorBoard.

        The protocol is ``omg-lite eval``'s self-reenactment: each clip's first valid frame is the
        source and drives to the others (``PairDataset(sources="first")``). LPIPS is the SqueezeNet
        trunk, as in the release's evaluation (random offline, labelled). Main process only; the other
        ranks return {}.
        """
        from omg_lite.metrics import ImageMetrics, face_region

        if not self.dist.main:
            return {}
        t, dev = self.cfg.train, self.dist.device
        data = PairDataset(self.data.root, t.image_size, split=split, heldout=t.heldout, seed=t.seed, sources="first")
        if len(data) == 0:
            raise ValueError(f"no {split} pairs to evaluate: set train.heldout > 0 (identities held out from training)")
        lod = self.cfg.model.levels if lod is None else lod
        metrics = ImageMetrics(dev)
        head = getattr(self.net.model, "head_model", None)  # a stand-in model without one: whole-image figures only
        scores: dict[str, list[Tensor]] = {}
        self.net.eval()
        try:
            for lo in range(0, len(data), self.local_batch):
                batch = collate([data[i] for i in range(lo, min(lo + self.local_batch, len(data)))]).to(dev)
                pred = self.net(self._features(batch.source_rgb), batch, lod).refined.float().clamp(0, 1)
                face = None if head is None else face_region(head, batch.driver, batch.camera_drv, batch.driver_mask)
                for k, v in metrics(pred, target_image(batch, self.cfg.model.background), face).items():
                    scores.setdefault(k, []).append(v)
        finally:
            self.net.train()
        per_image = {k: torch.cat(v) for k, v in scores.items()}  # face scores are NaN where the region is empty: left out
        metrics_out = {k: (v[~v.isnan()] if k.startswith("face_") else v).mean().item() for k, v in per_image.items()}
        record = {"split": split, "protocol": "first frame drives the others", "pairs": len(data), "clips": [c.name for c in data.clips],
                  "lod": lod, "step": self.step, "lpips_trunk": metrics.label, "encoder": self.encoder.weights_source, **metrics_out}
        atomic_write_text(self.run / f"{split}.json", json.dumps(record, indent=2) + "\n")
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(self.run / "tb")) as writer:
            for k, v in metrics_out.items():
                writer.add_scalar(f"{split}/{k.replace('lpips', metrics.label)}", v, self.step)
        return metrics_out

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (main process only); refuses non-finite weights."""
        if not self.dist.main:
            return None
        weights = self.net.trainable_state()
        bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise NonFiniteLoss(f"weights {bad[:3]} are not finite at step {self.step}; not saved: the last good checkpoint is {self.checkpoint}")
        state = {"optimizer": self.optimizer.state_dict(), "rng": _rng_state()}
        self.checkpoint = save_checkpoint(self.run, self.step, weights, state, self._config_record(), keep=self.cfg.train.keep)
        return self.checkpoint

    # -- logging -----------------------------------------------------------------------------------
    def _writer(self):
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(self.run / "tb"))
        writer.add_text("setup", f"encoder: {self.encoder.weights_source}; perceptual term: {self.criterion.lpips_label}; "
                        f"{len(self.data)} pairs from {len(self.data.clips)} clips; {self.steps} steps of {self.cfg.train.batch_size}", self.step)
        return writer

    def _log(self, writer, record: dict[str, float], rate: float, out, batch: PairBatch) -> None:
        t, s = self.cfg.train, self.step
        if s % t.log_every == 0 or s == self.steps:
            label = self.criterion.lpips_label
            for k, v in record.items():
                writer.add_scalar(f"loss/{k.replace('lpips', label)}", v, s)
            writer.add_scalar("train/images_per_s", rate, s)
            writer.add_scalar("train/lod", self.lod(s - 1), s)
        if s % t.image_every == 0 or s == self.steps:
            from torchvision.utils import make_grid

            n = min(4, batch.batch)
            refined = out.refined
            rows = [batch.source_rgb[:n], target_image(batch, self.cfg.model.background)[:n], out.coarse[:n], refined[:n]]
            grid = make_grid(torch.cat([r.detach().float().clamp(0, 1).cpu() for r in rows]), nrow=n)
            writer.add_image("samples (rows: source, driver, coarse, refined)", grid, s)


def run_config(run: str | Path) -> tuple[str, Config]:
    """A run folder's (preset name, config) from its config.json."""
    path = Path(run) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume: {run} holds no {CONFIG_FILE} (start a run there without --resume)")
    try:
        data = json.loads(path.read_text())
        return str(data.get("preset", "")), config_from_dict(data["config"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a readable omg_lite run config ({e}); it was edited or written by another program") from None
