"""Reading the user's FLAME file (paper Sec. 3.1 uses FLAME; its files are licence-gated).

FLAME 2020 ``generic_model.pkl`` and the FLAME 2023 pickle hold, in FLAME's layout:

==============  ============  ==================================================
key             shape         meaning
==============  ============  ==================================================
v_template      [5023, 3]     template T (metres)
f               [9976, 3]     faces
shapedirs       [5023, 3, L]  first L - 100 identity components, last 100 expression
posedirs        [5023, 3, 36] pose correctives P (vec(R_k - I) of joints 1..4)
J_regressor     [5, 5023]     joint regressor R_J (scipy sparse or dense)
weights         [5023, 5]     skinning weights W
kintree_table   [2, 5]        row 0: parent of each joint (root: any invalid id)
==============  ============  ==================================================

Those pickles were written with Python 2 and may hold chumpy arrays. They are read without chumpy
and without running any code from the file, through :mod:`omg_lite.safe_load` (an exact
allow-list of numpy / scipy.sparse globals; every ``chumpy`` class becomes the inert
:class:`~omg_lite.safe_load.ChumpyArray`, whose pickled state's ``x`` is the array); anything else
is refused. Landmarks come from a separate file: DECA's ``landmark_embedding.npy`` (68 points,
``full_lmk_faces_idx`` / ``full_lmk_bary_coords``) or FLAME's ``flame_static_embedding.pkl``
(51 points, iBUG 17-67, ``lmk_face_idx`` / ``lmk_b_coords``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from omg_lite.head.regions import regions_from_geometry, to_standin_frame
from omg_lite.safe_load import ChumpyArray, read_npy, read_pickle

FLAME_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")
N_EXPRESSION_IN_FILE = 100
FLAME_HINT = "download it from the FLAME website (flame.is.tue.mpg.de) after registering"


def _plain(value: object, key: str) -> np.ndarray:
    """A dense float/int numpy array from numpy, scipy.sparse or chumpy values."""
    if isinstance(value, ChumpyArray):
        return value.array(key)
    if hasattr(value, "toarray"):
        return np.asarray(value.toarray())
    return np.asarray(value)


def load_flame(path: str | os.PathLike, n_shape: int, n_expr: int, landmark_path: str | os.PathLike | None = None) -> dict:
    """Read a FLAME pickle into the keyword arguments of :class:`omg_lite.head.model.HeadModel`."""
    path = Path(path)
    data = read_pickle(path, "FLAME model file", FLAME_HINT)
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, not FLAME's dict of arrays")
    missing = [k for k in FLAME_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path} is not in FLAME's layout: missing keys {missing} (expected {list(FLAME_KEYS)})")
    a = {k: _plain(data[k], k) for k in FLAME_KEYS}
    v = a["v_template"].astype(np.float64)
    V = len(v)
    expect = {"v_template": (V, 3), "posedirs": (V, 3, 36), "J_regressor": (5, V), "weights": (V, 5), "kintree_table": (2, 5)}
    for k, shape in expect.items():
        if a[k].shape != shape:
            raise ValueError(f"{path}: FLAME's {k} must be {list(shape)}, got {list(a[k].shape)}")
    if a["f"].ndim != 2 or a["f"].shape[1] != 3:
        raise ValueError(f"{path}: FLAME's f must be [F, 3], got {list(a['f'].shape)}")
    sd = a["shapedirs"]
    if sd.ndim != 3 or sd.shape[:2] != (V, 3) or sd.shape[2] <= N_EXPRESSION_IN_FILE:
        raise ValueError(f"{path}: FLAME's shapedirs must be [{V}, 3, L] with L > {N_EXPRESSION_IN_FILE}, got {list(sd.shape)}")
    n_id = sd.shape[2] - N_EXPRESSION_IN_FILE
    for arg, asked, have in (("n_shape", n_shape, n_id), ("n_expr", n_expr, N_EXPRESSION_IN_FILE)):
        if not isinstance(asked, (int, np.integer)) or asked < 0:
            raise ValueError(f"{arg} must be a non-negative integer, got {asked!r}")
        if asked > have:
            raise ValueError(f"{arg}={asked} but {path.name} has only {have} components; ask for at most {have}")
    parents = a["kintree_table"][0].astype(np.int64)
    parents[0] = -1
    if any(not (0 <= parents[k] < k) for k in range(1, 5)):
        raise ValueError(f"{path}: kintree_table must list each joint's parent before it, got {parents.tolist()}")

    faces = a["f"].astype(np.int64)
    out = dict(
        v_template=v,
        faces=faces,
        shapedirs=sd[..., :n_shape],
        exprdirs=sd[..., n_id : n_id + n_expr],
        posedirs=a["posedirs"],
        J_regressor=a["J_regressor"],
        weights=a["weights"],
        parents=parents,
        source=f"flame:{path.name}",
    )
    if landmark_path is not None:
        out["lmk_faces_idx"], out["lmk_bary_coords"], out["lmk_ids"] = load_landmark_embedding(landmark_path, len(faces))
    out["regions"] = _flame_regions(v, faces, a["weights"])
    return out


def load_landmark_embedding(path: str | os.PathLike, num_faces: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(face ids [K], barycentrics [K, 3], iBUG ids [K]) from DECA's .npy or FLAME's static .pkl."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no landmark embedding at {path}: provide landmark_embedding.npy (DECA) or flame_static_embedding.pkl (FLAME)")
    if path.suffix == ".npy":
        d = read_npy(path, "landmark embedding")
        d = d.item() if d.dtype == object and d.shape == () else d
    else:
        d = read_pickle(path, "landmark embedding")
    if not isinstance(d, dict):
        raise ValueError(f"{path} is not a landmark embedding (expected a dict, got {type(d).__name__})")
    for fkey, bkey in (("full_lmk_faces_idx", "full_lmk_bary_coords"), ("lmk_face_idx", "lmk_b_coords"), ("static_lmk_faces_idx", "static_lmk_bary_coords")):
        if fkey in d and bkey in d:
            fid = _plain(d[fkey], fkey).reshape(-1).astype(np.int64)
            bary = _plain(d[bkey], bkey).reshape(-1, 3).astype(np.float64)
            break
    else:
        raise ValueError(f"{path} has none of the landmark keys full_lmk_faces_idx / lmk_face_idx (found {sorted(d)})")
    if len(fid) not in (68, 51) or len(bary) != len(fid):
        raise ValueError(f"{path}: expected 68 or 51 landmarks, got {len(fid)} faces and {len(bary)} barycentrics")
    if fid.min() < 0 or fid.max() >= num_faces:
        raise ValueError(f"{path}: landmark faces out of range for a mesh of {num_faces} faces")
    ids = np.arange(68) if len(fid) == 68 else np.arange(17, 68)
    return fid, bary, ids


def _flame_regions(v: np.ndarray, faces: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Approximate regions: eyeballs from the eye joints' weights, the rest geometric."""
    eye_l = weights[:, 3] > 0.5
    eye_r = weights[:, 4] > 0.5
    if not eye_l.any() or not eye_r.any():
        return regions_from_geometry(v, eye_l | eye_r)
    p = to_standin_frame(v, v[eye_l].mean(0), v[eye_r].mean(0))
    return regions_from_geometry(p, eye_l | eye_r, eye_centres=np.stack([p[eye_l].mean(0), p[eye_r].mean(0)]))
