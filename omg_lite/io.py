"""Atomic outputs: nothing a user made is ever left half-written under its final name, or replaced unasked.

Every writer in the package goes through one of these two:

- :func:`atomic_file` yields a temporary path beside the target; when the block succeeds the
  file is flushed to disk, given ordinary permissions and renamed onto the target (``os.replace``
  is atomic on POSIX); when it fails the temporary file is removed and the old target is intact.
- :func:`output_folder` does the same for a whole folder of results (``omg-lite synth``,
  ``track``, ``demo``): it refuses a non-empty target unless told to overwrite, and even then
  only a folder that holds ``marker`` (a file the same command writes), so that ``--overwrite``
  can never delete a folder of the user's; the new folder replaces the old one in two renames.

One policy for every command that writes (checked before any work, by :func:`check_output_folder`
or :func:`check_output_file`): an existing output is replaced only with ``--overwrite``, and the
place must take a new file (:func:`check_writable`), so a read-only or mistyped ``--out`` fails
in the first second, not after the work. Temporary names carry the writer's process id
(``.NAME.tmp-PID-XXXX``); a run killed with SIGKILL cannot remove its own, so the next write of
the same output removes those whose process is gone, and says so in the log.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files / folders of ``path`` left by earlier runs whose process is gone."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    name = glob.escape(path.name)
    for p in [*path.parent.glob(f".{name}.tmp-*"), *path.parent.glob(f".{name}.old-*")]:
        pid = p.name[len(path.name) + 6 :].split("-", 1)[0]  # .NAME.tmp-PID-XXXX
        if pid.isdigit() and (int(pid) == os.getpid() or _alive(int(pid))):
            continue
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        removed.append(p)
    if removed:
        log.warning("removed %d temporary file(s) of an earlier interrupted run beside %s: %s", len(removed), path,
                    ", ".join(p.name for p in removed))  # fmt: skip
    return removed


def check_writable(path: str | os.PathLike, flag: str = "--out") -> None:
    """Refuse, before any work, an output whose folder cannot take a new file (read-only, a file, no permission)."""
    path = Path(path)
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {folder} is a file, not a folder; choose another {flag}")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".omg-lite-probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise PermissionError(f"cannot write {path}: {folder} does not take new files ({e.strerror}); choose another {flag}") from None


def check_output_file(path: str | os.PathLike, overwrite: bool, flag: str = "--out") -> None:
    """The policy for a single output file: absent, or replaced only with ``overwrite``; writable."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; {flag} names the file to write")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it, or choose another {flag}")
    check_writable(path, flag)


@contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary file path beside ``path``; on success it replaces ``path``.

    ``suffix`` keeps an extension for writers that choose the format from it (``.npz``, ``.gif``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_tmp_prefix(path), suffix=suffix)
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
    """Refuse to write into ``out`` unless it is absent, empty, or (with ``overwrite``) one of ours; writable."""
    out = Path(out)
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
    check_writable(out)


@contextmanager
def output_folder(out: str | os.PathLike, overwrite: bool, marker: str, what: str) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out`` as a whole."""
    out = Path(out)
    check_output_folder(out, overwrite, marker, what)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(out), dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the result is an ordinary folder
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
            out.rename(trash / out.name)
            tmp.rename(out)
            shutil.rmtree(trash)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
