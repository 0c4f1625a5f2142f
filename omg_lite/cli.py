"""``omg-lite``: the one command line, with a subcommand per job.

Each subcommand is a typed function below (tyro turns its signature and docstring into options
and help). Library errors that mean "bad input" (ValueError, KeyError, and every OSError: a
missing, unreadable or unwritable file) are printed as one line, ``omg-lite: error: ...``, with
exit status 2: never a traceback from deep inside torch. Ctrl-C (or SIGTERM) prints one line
saying what became of ``--out`` and exits with 128 + the signal's number (130 for Ctrl-C); the
writers' ``finally`` blocks (``omg_lite.io``) have removed their temporary files by then.
"""

from __future__ import annotations

import json as _json
import re
import signal
import sys
import threading
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
    from omg_lite import commands, commands_avatar

    cmds = {**commands.COMMANDS, **commands_avatar.COMMANDS}
    benches = all_benches()
    subs = tuple(Annotated[b, tyro.conf.subcommand(b.name, description=_first_line(b.__doc__))] for b in benches)
    bench.__annotations__["which"] = Union[subs]  # type: ignore[valid-type]
    cmds["bench"] = bench
    return cmds


def _out_of(args: list[str]) -> str | None:
    """The --out value on a command line, for the interrupt message."""
    for i, a in enumerate(args):
        if a == "--out" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--out="):
            return a.split("=", 1)[1]
    return None


def interrupted_message(args: list[str]) -> str:
    out = _out_of(args)
    if not args or out is None:
        return "interrupted"
    if args[0] == "train":
        return f"interrupted; {out} keeps its newest complete checkpoint: continue with `omg-lite train --resume --out {out}`"
    if args[0] == "prepare":
        return f"interrupted; the videos finished in {out} are kept (see its index.jsonl): run the same command again to continue"
    if args[0] == "tables":
        return f"interrupted; finished runs in {out} are kept: run the same command again to continue"
    return f"interrupted; nothing was written to {out}"


def final_name(path: str) -> str:
    """The name a user asked for, in place of omg_lite.io's temporary ``.NAME.tmp-PID-XXXX[.ext]``."""
    return re.sub(r"\.([^/]+)\.tmp-\d+-[^/.]+(\.[^/]*)?", r"\1", path)


def error_message(e: BaseException) -> str:
    """One line for a bad-input error: the library's own message, or the file and the system's reason."""
    if isinstance(e, OSError) and e.errno is not None:  # raised by the system, not by omg_lite
        where = f" {final_name(str(e.filename))}" if e.filename else ""
        return f"cannot use{where}: {e.strerror} (check the path, its permissions and the free disk space)"
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return "; ".join(lines) or type(e).__name__


class _Terminated(KeyboardInterrupt):
    signum = signal.SIGTERM


def _raise_terminated(signum, frame) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None  # SIGTERM unwinds like Ctrl-C
    try:
        tyro.extras.subcommand_cli_from_dict(
            _commands(),
            prog="omg-lite",
            description="omg_lite: one-shot multi-LOD Gaussian head avatars (OMG-Avatar, CVPR 2026), runnable on a CPU.",
            args=args,
            config=(tyro.conf.OmitSubcommandPrefixes, tyro.conf.OmitArgPrefixes),
        )
    except (UsageError, ValueError, KeyError, OSError) as e:
        print(f"omg-lite: error: {error_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"omg-lite: {interrupted_message(args)}", file=sys.stderr)
        return 128 + int(getattr(e, "signum", signal.SIGINT))
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
