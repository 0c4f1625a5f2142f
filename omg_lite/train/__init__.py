"""Training (paper Sec. 4.1): source/driver pairs, the loss, the loop, checkpoints and DDP.

``omg-lite train --preset NAME [--set section.field=value ...] --out RUN [--resume]`` runs
:class:`Trainer`; ``torchrun --nproc_per_node N -m omg_lite.cli train ...`` runs it on N processes.
"""

from omg_lite.train.data import PairBatch, PairDataset, collate
from omg_lite.train.loop import NonFiniteLoss, Trainer, lod_at, run_config, step_lod
from omg_lite.train.losses import OMGLoss, build_lpips

__all__ = ["NonFiniteLoss", "OMGLoss", "PairBatch", "PairDataset", "Trainer", "build_lpips", "collate", "lod_at", "run_config", "step_lod"]
