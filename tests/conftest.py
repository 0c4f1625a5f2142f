"""Fixtures shared by the tests."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_samples() -> Path:
    return ROOT / "data_samples"


@pytest.fixture(scope="session")
def run(tmp_path_factory) -> Path:
    """A smoke-preset run folder with one checkpoint, written by the Trainer (untrained weights,
    step 0); read-only for the tests that share it."""
    from omg_lite.config import preset
    from omg_lite.train import Trainer

    cfg = preset("smoke")
    cfg.train.data, cfg.encoder.weights, cfg.train.w_lpips = str(ROOT / "data_samples" / "synth_128"), "random", 0.0  # no LPIPS trunk to build
    folder = tmp_path_factory.mktemp("smoke") / "run"
    Trainer(cfg, folder, preset_name="smoke", progress=False).save()
    return folder
