"""Where tensors run: the device a config or the inputs name, and the clock barrier for timing."""

from __future__ import annotations

import torch


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> CUDA when present, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def sync(device: torch.device | str) -> None:
    """Wait for queued kernels on ``device`` (a no-op on CPU) before reading a clock."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
