"""Every ``omg-lite bench ...`` figure.

Each benchmark is a dataclass in a module of this package: its fields are the command's options,
its docstring the help text, ``name`` the subcommand and ``run()`` returns a list of rows (dicts
of figures). The CLI finds them all here and prints a table, or JSON with ``--json``.
Figures come from these commands, never from timed tests.
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from dataclasses import dataclass
from typing import Callable

import torch

from omg_lite.device import sync

@dataclass
class Bench:
    """Base class: subclasses set ``name`` and implement ``run``."""

    # Print the rows as JSON instead of a table.
    json: bool = False

    name = ""

    def run(self) -> list[dict]:
        raise NotImplementedError


def all_benches() -> list[type[Bench]]:
    """Every Bench subclass defined in this package's modules, sorted by name."""
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")
    found: dict[str, type[Bench]] = {}
    stack = list(Bench.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.name:
            found[cls.name] = cls
    return [found[k] for k in sorted(found)]


def time_ms(fn: Callable[[], object], device: torch.device | str = "cpu", warmup: int = 2, repeat: int = 5) -> float:
    """Median wall time of ``fn()`` in milliseconds, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB (ru_maxrss is in KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
