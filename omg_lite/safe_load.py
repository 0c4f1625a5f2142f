"""Reading files a user hands us without ever running code from them: the one restricted reader.

A pickle is a program: unpickling calls whatever function the file names (``os.system``,
``builtins.eval``, numpy's ``runstring``...). omg_lite reads three kinds of pickled files, and
every one goes through this module:

- :func:`read_pickle`: FLAME-family pickles (``generic_model.pkl``, ``flame2023.pkl``,
  ``flame_static_embedding.pkl``). :class:`RestrictedUnpickler` resolves only the exact
  ``(module, name)`` pairs in :data:`ALLOWED_GLOBALS` (numpy array, dtype and scalar
  reconstruction, the scipy.sparse matrix classes, a few inert builtins) plus any ``chumpy``
  class, which becomes the inert stand-in :class:`ChumpyArray` (chumpy itself is never
  imported); every other global is refused with one clear error.
- :func:`read_npy`: ``.npy`` files. Plain arrays are read with ``allow_pickle=False``; an object
  array (DECA's ``landmark_embedding.npy`` is a pickled dict) has its pickled payload read by the
  same :class:`RestrictedUnpickler`.
- :func:`load_torch`: ``.pt`` files, with ``torch.load(weights_only=True)`` (torch's own restricted
  unpickler: tensors, containers, numbers, strings).

Names that a data file gives for other files (the clip folders of a ``meta.json``) pass
:func:`folder_names`: plain strings naming one folder inside the data folder, never a path.
Checkpoint weights are safetensors (no code at all), ``params.npz`` is read with
``allow_pickle=False``. Why hand-written: Python's standard library has no allow-list unpickler;
overriding ``find_class`` is the mechanism its documentation gives ("Restricting Globals"), and no
well-kept package offers one for numpy / scipy / chumpy files. A test walks the package source so
that no other ``pickle.load``, ``allow_pickle=True`` or ``torch.load`` without
``weights_only=True`` can appear.
"""

from __future__ import annotations

import io
import os
import pickle
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np

_SPARSE_MODULES = ("scipy.sparse", "scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr", "scipy.sparse._csr",
                   "scipy.sparse.coo", "scipy.sparse._coo")  # fmt: skip
_SPARSE_CLASSES = ("csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array")
_BUILTINS = ("object", "set", "frozenset", "complex", "slice", "bytearray", "list", "dict", "tuple")

# (module, name) -> a short label of what it is; resolved lazily by _resolve.
ALLOWED_GLOBALS: dict[tuple[str, str], str] = {
    **{(m, n): "numpy array reconstruction" for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")},
    **{(m, "_frombuffer"): "numpy array reconstruction" for m in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): "numpy array",
    ("numpy", "dtype"): "numpy dtype",
    **{(m, n): "scipy.sparse matrix" for m in _SPARSE_MODULES for n in _SPARSE_CLASSES},
    **{(m, n): "builtin container" for m in ("__builtin__", "builtins") for n in _BUILTINS},
    ("collections", "OrderedDict"): "builtin container",
    ("copy_reg", "_reconstructor"): "object reconstruction",  # Python 2 pickles of new-style classes
    ("copyreg", "_reconstructor"): "object reconstruction",
    ("_codecs", "encode"): "bytes",  # Python 3 writes bytes this way at protocol 2
}


class ChumpyArray:
    """Stands in for any pickled chumpy object: keeps its state; ``array()`` is the value.

    chumpy's ``Ch.__getstate__`` pickles its ``__dict__`` without caches, whose ``x`` is the array.
    """

    def __setstate__(self, state) -> None:
        self.state = state

    def array(self, key: str) -> np.ndarray:
        state = getattr(self, "state", None)
        if isinstance(state, dict) and "x" in state:
            return np.asarray(state["x"])
        raise ValueError(f"FLAME key {key!r} is a chumpy expression that is not a plain array; re-save the file with plain numpy arrays")


class RefusedGlobal(pickle.UnpicklingError):
    """The file names a function or class outside :data:`ALLOWED_GLOBALS`."""


@lru_cache(maxsize=None)
def _resolve(module: str, name: str) -> object:
    import copyreg
    import codecs
    import builtins
    import collections

    if module.startswith("numpy"):
        try:
            from numpy._core import multiarray, numeric
        except ImportError:  # numpy < 2
            from numpy.core import multiarray, numeric  # type: ignore[no-redef]
        return {"_reconstruct": multiarray._reconstruct, "scalar": multiarray.scalar, "_frombuffer": numeric._frombuffer,
                "ndarray": np.ndarray, "dtype": np.dtype}[name]  # fmt: skip
    if module.startswith("scipy.sparse"):
        import scipy.sparse

        return getattr(scipy.sparse, name)
    if module in ("__builtin__", "builtins"):
        return getattr(builtins, name)
    if module == "collections":
        return collections.OrderedDict
    if module in ("copy_reg", "copyreg"):
        return copyreg._reconstructor
    return codecs.encode


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only :data:`ALLOWED_GLOBALS`, and chumpy classes to :class:`ChumpyArray`."""

    def find_class(self, module: str, name: str):
        if module == "chumpy" or module.startswith("chumpy."):
            return ChumpyArray
        if (module, name) not in ALLOWED_GLOBALS:
            raise RefusedGlobal(f"it names {module}.{name}, which is not numpy / scipy.sparse / chumpy data "
                                "(a pickle can run code; omg_lite reads only numpy arrays, scipy.sparse matrices and chumpy arrays from one)")  # fmt: skip
        return _resolve(module, name)


def _unpickle(fh: BinaryIO) -> object:
    return RestrictedUnpickler(fh, encoding="latin1").load()


def read_pickle(path: str | os.PathLike, what: str, hint: str = "") -> object:
    """Unpickle a (possibly Python 2, possibly chumpy) file with the allow-list; one clear ValueError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}" + (f": {hint}" if hint else ""))
    try:
        with open(path, "rb") as fh:
            return _unpickle(fh)
    except RefusedGlobal as e:
        raise ValueError(f"{path} is not a readable {what}: refused, {e}") from None
    except Exception as e:  # noqa: BLE001 - every unreadable file gets the same message
        raise ValueError(f"{path} is not a readable {what} ({type(e).__name__}: {e})") from None


def read_npy(path: str | os.PathLike, what: str) -> np.ndarray:
    """A ``.npy`` file; an object array's pickled payload goes through :class:`RestrictedUnpickler`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            _, _, dtype = read_header(fh)
            if not dtype.hasobject:
                fh.seek(0)
                return fmt.read_array(fh, allow_pickle=False)
            value = _unpickle(fh)  # np.save pickles the whole object array after the header
    except RefusedGlobal as e:
        raise ValueError(f"{path} is not a readable {what}: refused, {e}") from None
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path} is not a readable {what} ({type(e).__name__}: {e})") from None
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{path} is not a readable {what} (its object payload is a {type(value).__name__}, not an array)")
    return value


def load_torch(path: str | os.PathLike | io.BytesIO) -> object:
    """``torch.load`` on the CPU with ``weights_only=True``: tensors, containers, numbers and strings only."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def folder_names(names: object, source: str | os.PathLike, key: str = "clips") -> list[str]:
    """The folder names a data file lists under ``key``: strings, each one folder inside its own folder."""
    if not isinstance(names, list):
        raise ValueError(f"{source}: {key!r} must be a list of folder names, got {type(names).__name__}; fix or remove the file")
    for n in names:
        if not isinstance(n, str) or n in ("", ".", "..") or Path(n).name != n or "\\" in n:
            raise ValueError(f"{source}: {key!r} entry {n!r} is not the name of a folder beside it (a data file never points elsewhere); fix or remove the file")
    return names
