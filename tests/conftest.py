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


@pytest.fixture(scope="session")
def lpips_reference():
    """LPIPS from the `lpips` package called directly, with the trunk and heads of a model under
    test copied in: ``ref(model, net, x, y)`` (net: its trunk name) for x, y [B, 3, H, W] in [0, 1] feeds the package its
    documented [-1, 1] inputs, 2x - 1 (lpips.LPIPS.forward with its default normalize=False)."""
    import lpips
    import torch

    def ref(model, net, x, y):  # -> [B]
        pkg = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
        pkg.load_state_dict(model.state_dict())
        with torch.no_grad():
            return pkg.eval()(2 * x - 1, 2 * y - 1).flatten()

    return ref
