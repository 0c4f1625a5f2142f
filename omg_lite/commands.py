"""The subcommand functions of ``omg-lite`` (except ``bench``, which lives in ``cli.py``).

Each function's signature is its command line (tyro) and its docstring the help text. They only
parse, call the package and print: the work lives in the modules they import.
"""

from __future__ import annotations

COMMANDS: dict = {}
