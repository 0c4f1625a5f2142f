"""Atomic outputs: nothing a user made is ever left half-written under its final name.

Every writer in the package goes through one of these two:

- :func:`atomic_file` yields a temporary path beside the target; when the block succeeds the
  file is flushed to disk, given ordinary permissions and renamed onto the target (``os.replace``
  is atomic on POSIX); when it fails the temporary file is removed and the old target is intact.
- :func:`output_folder` does the same for a whole folder of results (``omg-lite synth``,
  ``track``, ``demo``): it refuses a non-empty target unless told to overwrite, and even then
  only a folder that holds ``marker`` (a file the same command writes), so that ``--overwrite``
  can never delete a folder of the user's; the new folder replaces the old one in two renames.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary file path beside ``path``; on success it replaces ``path``.

    ``suffix`` keeps an extension for writers that choose the format from it (``.npz``, ``.gif``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result is an ordinary file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def check_output_folder(out: Path, overwrite: bool, marker: str, what: str) -> None:
    """Refuse to write into ``out`` unless it is absent, empty, or (with ``overwrite``) one of ours."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty; pass --overwrite to replace it, or choose another --out")
        if not (out / marker).is_file():
            raise FileExistsError(
                f"{out} is not empty and holds no {marker}, so it is not {what}; "
                "refusing to replace it even with --overwrite: choose another --out"
            )


@contextmanager
def output_folder(out: str | os.PathLike, overwrite: bool, marker: str, what: str) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out`` as a whole."""
    out = Path(out)
    check_output_folder(out, overwrite, marker, what)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the result is an ordinary folder
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(trash / out.name)
            tmp.rename(out)
            shutil.rmtree(trash)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
