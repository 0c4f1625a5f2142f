"""``omg-lite bench system``: the machine every other figure was measured on."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import torch

from omg_lite.bench import Bench


@dataclass
class SystemBench(Bench):
    """Describe the machine (CPU threads, torch build, GPU) that figures are measured on."""

    name = "system"

    def run(self) -> list[dict]:
        row = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-",
        }
        return [row]
