"""``omg-lite``: the one command line, with a subcommand per job.

Each subcommand is a typed function below (tyro turns its signature and docstring into options
and help). Library errors that mean "bad input" (ValueError, FileNotFoundError, KeyError,
FileExistsError) are printed as one line, ``omg-lite: error: ...``, with exit status 2: never a
traceback from deep inside torch.
"""

from __future__ import annotations

import json as _json
import sys
from typing import Annotated, Union

import tyro

from omg_lite.bench import Bench, all_benches


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def bench(which: Bench) -> None:
    """Print benchmark figures (the source of every speed and memory figure in the README)."""
    rows = which.run()
    if which.json:
        print(_json.dumps({"bench": which.name, "rows": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"omg-lite bench {which.name}")
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    for k in keys:
        table.add_column(k, justify="right")
    for row in rows:
        table.add_row(*(_fmt(row.get(k, "")) for k in keys))
    Console().print(table)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc else ""


def _commands() -> dict:
    from omg_lite import commands

    cmds = dict(commands.COMMANDS)
    benches = all_benches()
    subs = tuple(Annotated[b, tyro.conf.subcommand(b.name, description=_first_line(b.__doc__))] for b in benches)
    bench.__annotations__["which"] = Union[subs]  # type: ignore[valid-type]
    cmds["bench"] = bench
    return cmds


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        tyro.extras.subcommand_cli_from_dict(
            _commands(),
            prog="omg-lite",
            description="omg_lite: one-shot multi-LOD Gaussian head avatars (OMG-Avatar, CVPR 2026), runnable on a CPU.",
            args=args,
            config=(tyro.conf.OmitSubcommandPrefixes, tyro.conf.OmitArgPrefixes),
        )
    except (UsageError, ValueError, FileNotFoundError, FileExistsError, KeyError, NotADirectoryError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"omg-lite: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
