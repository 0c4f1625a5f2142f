"""HeadModel: FLAME's layer as an ``nn.Module`` (paper Sec. 3.1, "FLAME-driven Gaussians").

The paper binds its Gaussians to FLAME's vertices and re-poses them with FLAME's parameters:
identity beta (S), expression psi (E), pose theta (5 joints x axis-angle: root, neck, jaw,
left eye, right eye) and a translation t. This module evaluates

    v = LBS(T + B_S(beta) + B_E(psi) + B_P(theta), J(beta, psi), theta, W) + t
    l_k = sum_m b_km v_{f_k,m}           (landmark k: face f_k, barycentric coordinates b_k)

(the equations are written out in :mod:`omg_lite.head.lbs`) for either the user's FLAME file
(:meth:`HeadModel.from_flame`) or the offline stand-in (:meth:`HeadModel.standin`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from omg_lite.head import lbs
from omg_lite.head.params import POSE_DIM, HeadParams

log = logging.getLogger("omg_lite")

JOINT_NAMES = ("root", "neck", "jaw", "eye_left", "eye_right")
NUM_JOINTS = len(JOINT_NAMES)
NUM_LANDMARKS = 68
LANDMARK_FILES = "landmark_embedding.npy (DECA) or flame_static_embedding.pkl (FLAME / RingNet)"


@dataclass
class HeadOutput:
    """What :class:`HeadModel` returns for a batch of parameters."""

    vertices: Tensor  # [B, V, 3] posed vertices, world (FLAME axes, metres)
    joints: Tensor  # [B, 5, 3] posed joints
    landmarks_or_none: Tensor | None  # [B, K, 3] or None when the model has no landmark embedding
    transforms: Tensor  # [B, 5, 3, 4] each joint's world rigid transform [G_j | t_j], x -> G_j x + t_j (translation included)

    @property
    def landmarks(self) -> Tensor:
        """[B, K, 3] landmarks on the posed mesh, iBUG order (K = 68; 51 = iBUG 17..67 with FLAME's static embedding, see ``HeadModel.lmk_ids``)."""
        if self.landmarks_or_none is None:
            raise ValueError(f"this head model has no landmark embedding: load it with landmark_path= pointing at {LANDMARK_FILES}")
        return self.landmarks_or_none


class HeadModel(nn.Module):
    """FLAME-style parametric head: blendshapes, joint regressor, LBS and landmark embedding."""

    def __init__(
        self,
        v_template: np.ndarray | Tensor,  # [V, 3]
        faces: np.ndarray | Tensor,  # [F, 3]
        shapedirs: np.ndarray | Tensor,  # [V, 3, S]
        exprdirs: np.ndarray | Tensor,  # [V, 3, E]
        J_regressor: np.ndarray | Tensor,  # [5, V]
        weights: np.ndarray | Tensor,  # [V, 5]
        parents: np.ndarray | Tensor,  # [5]
        posedirs: np.ndarray | Tensor | None = None,  # [V, 3, 36]
        lmk_faces_idx: np.ndarray | Tensor | None = None,  # [68]
        lmk_bary_coords: np.ndarray | Tensor | None = None,  # [68, 3]
        lmk_ids: np.ndarray | Tensor | None = None,  # [K] iBUG ids of the landmarks (default 0..67)
        regions: dict[str, np.ndarray] | None = None,  # name -> [V] bool
        source: str = "custom",
        shape_names: list[str] | None = None,
        expression_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        # Copies: the stand-in's arrays are cached per process and must stay untouched.
        f32 = lambda a: torch.tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
        i64 = lambda a: torch.tensor(np.asarray(a, dtype=np.int64))  # noqa: E731
        self.register_buffer("v_template", f32(v_template))
        self.register_buffer("faces", i64(faces))
        self.register_buffer("shapedirs", f32(shapedirs))
        self.register_buffer("exprdirs", f32(exprdirs))
        self.register_buffer("J_regressor", f32(J_regressor))
        self.register_buffer("weights", f32(weights))
        self.register_buffer("parents", i64(parents))
        self.register_buffer("posedirs", None if posedirs is None else f32(posedirs))
        self.register_buffer("lmk_faces_idx", None if lmk_faces_idx is None else i64(lmk_faces_idx))
        self.register_buffer("lmk_bary_coords", None if lmk_bary_coords is None else f32(lmk_bary_coords))
        if lmk_ids is None and lmk_faces_idx is not None:
            lmk_ids = np.arange(len(np.asarray(lmk_faces_idx)))
        self.register_buffer("lmk_ids", None if lmk_ids is None else i64(lmk_ids))
        self.region_names = sorted(regions or {})
        for name in self.region_names:
            self.register_buffer(f"region_{name}", torch.tensor(np.asarray(regions[name], dtype=bool)))
        self.source = source
        self.shape_names = list(shape_names) if shape_names else [f"shape_{i}" for i in range(self.n_shape)]
        self.expression_names = list(expression_names) if expression_names else [f"expression_{i}" for i in range(self.n_expr)]
        self.joint_names = JOINT_NAMES
        self._check_layout()

    def _check_layout(self) -> None:
        V = self.num_vertices
        expect = {
            "v_template": (V, 3),
            "shapedirs": (V, 3, self.n_shape),
            "exprdirs": (V, 3, self.n_expr),
            "J_regressor": (NUM_JOINTS, V),
            "weights": (V, NUM_JOINTS),
            "parents": (NUM_JOINTS,),
        }
        if self.posedirs is not None:
            expect["posedirs"] = (V, 3, 9 * (NUM_JOINTS - 1))
        for name, shape in expect.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"head model {name} must be {list(shape)}, got {list(getattr(self, name).shape)}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3 or int(self.faces.min()) < 0 or int(self.faces.max()) >= V:
            raise ValueError(f"head model faces must be [F, 3] indices into {V} vertices")
        if self.lmk_faces_idx is not None:
            K = self.lmk_faces_idx.shape[0]
            if self.lmk_faces_idx.ndim != 1 or self.lmk_bary_coords.shape != (K, 3) or self.lmk_ids.shape != (K,):
                raise ValueError(f"landmark embedding must be [K] faces, [K, 3] barycentrics and [K] iBUG ids, got {list(self.lmk_faces_idx.shape)}, {list(self.lmk_bary_coords.shape)} and {list(self.lmk_ids.shape)}")
            if int(self.lmk_faces_idx.max()) >= self.faces.shape[0]:
                raise ValueError("landmark embedding refers to faces the mesh does not have")

    # ---------------------------------------------------------------- constructors

    @classmethod
    def standin(cls, n_shape: int = 20, n_expr: int = 16) -> "HeadModel":
        """The offline procedural head (see :mod:`omg_lite.head.standin`)."""
        from omg_lite.head.standin import standin_arrays

        a = standin_arrays()
        S, E = a["shapedirs"].shape[-1], a["exprdirs"].shape[-1]
        _check_count("n_shape", n_shape, S, "the offline stand-in")
        _check_count("n_expr", n_expr, E, "the offline stand-in")
        return cls(
            a["v_template"],
            a["faces"],
            a["shapedirs"][..., :n_shape],
            a["exprdirs"][..., :n_expr],
            a["J_regressor"],
            a["weights"],
            a["parents"],
            lmk_faces_idx=a["lmk_faces_idx"],
            lmk_bary_coords=a["lmk_bary_coords"],
            regions=a["regions"],
            source="standin",
            shape_names=a["shape_names"][:n_shape],
            expression_names=a["expression_names"][:n_expr],
        )

    @classmethod
    def from_flame(cls, path: str | os.PathLike, n_shape: int = 100, n_expr: int = 50, landmark_path: str | os.PathLike | None = None) -> "HeadModel":
        """The user's FLAME 2020 ``generic_model.pkl`` or FLAME 2023 pickle (see :mod:`omg_lite.head.flame`)."""
        from omg_lite.head.flame import load_flame

        a = load_flame(path, n_shape, n_expr, landmark_path)
        return cls(**a)

    # ---------------------------------------------------------------- properties

    @property
    def n_shape(self) -> int:
        return self.shapedirs.shape[-1]

    @property
    def n_expr(self) -> int:
        return self.exprdirs.shape[-1]

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def num_faces(self) -> int:
        return self.faces.shape[0]

    @property
    def has_landmarks(self) -> bool:
        return self.lmk_faces_idx is not None

    @property
    def regions(self) -> dict[str, Tensor]:
        """Vertex regions, name -> [V] bool (approximate for a FLAME file)."""
        return {name: getattr(self, f"region_{name}") for name in self.region_names}

    def extra_repr(self) -> str:
        return f"source={self.source!r}, V={self.num_vertices}, F={self.num_faces}, n_shape={self.n_shape}, n_expr={self.n_expr}"

    # ---------------------------------------------------------------- evaluation

    def zeros(self, batch: int = 1) -> HeadParams:
        """Zero parameters of the right sizes on the model's device."""
        return HeadParams.zeros(batch, self.n_shape, self.n_expr, device=self.v_template.device, dtype=self.v_template.dtype)

    def forward(
        self,
        shape: Tensor | HeadParams,  # [B, S] identity beta (or a whole HeadParams)
        expression: Tensor | None = None,  # [B, E] expression psi (zeros if None)
        pose: Tensor | None = None,  # [B, 15] axis-angle: root, neck, jaw, eye L, eye R (zeros if None)
        translation: Tensor | None = None,  # [B, 3] metres (zeros if None)
    ) -> HeadOutput:
        if isinstance(shape, HeadParams):
            if expression is not None or pose is not None or translation is not None:
                raise ValueError("pass either a HeadParams or separate tensors, not both")
            shape, expression, pose, translation = shape.shape, shape.expression, shape.pose, shape.translation
        beta = self._checked("shape", shape, self.n_shape, None)
        B = beta.shape[0]
        psi = self._checked("expression", expression, self.n_expr, B)
        theta = self._checked("pose", pose, POSE_DIM, B)
        trans = self._checked("translation", translation, 3, B)

        v_shaped = self.v_template + lbs.blend_shapes(beta, self.shapedirs) + lbs.blend_shapes(psi, self.exprdirs)  # [B, V, 3]
        J = self.J_regressor @ v_shaped  # [B, 5, 3]
        R = lbs.rodrigues(theta.view(B, NUM_JOINTS, 3))  # [B, 5, 3, 3]
        if self.posedirs is not None:
            v_shaped = v_shaped + lbs.blend_shapes(lbs.pose_feature(R), self.posedirs)
        joints, A = lbs.kinematic_chain(R, J, self.parents)
        verts = lbs.skin(v_shaped, self.weights, A) + trans[:, None, :]
        landmarks = self.landmarks_from_vertices(verts) if self.has_landmarks else None
        transforms = torch.cat([A[..., :3], (A[..., 3] + trans[:, None, :])[..., None]], -1)  # [B, 5, 3, 4]
        return HeadOutput(vertices=verts, joints=joints + trans[:, None, :], landmarks_or_none=landmarks, transforms=transforms)

    def landmarks_from_vertices(self, vertices: Tensor) -> Tensor:  # vertices [B, V, 3] -> [B, K, 3]
        """l_k = sum_m b_km v_{f_k, m} on any mesh with this model's topology."""
        if not self.has_landmarks:
            raise ValueError(f"this head model has no landmark embedding: load it with landmark_path= pointing at {LANDMARK_FILES}")
        tri = vertices[:, self.faces[self.lmk_faces_idx]]  # [B, K, 3, 3]
        return (tri * self.lmk_bary_coords[None, :, :, None]).sum(2)

    def _checked(self, name: str, x: Tensor | None, dim: int, batch: int | None) -> Tensor:
        want = f"[B{'' if batch is None else '=' + str(batch)}, {dim}]"
        ref = self.v_template
        if x is None:
            if batch is None:
                raise ValueError(f"{name} is required: a tensor {want}")
            return ref.new_zeros(batch, dim)
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor {want}, got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != dim or (batch is not None and x.shape[0] != batch):
            raise ValueError(f"{name} must have shape {want}, got {list(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
        if x.device != ref.device:
            raise ValueError(f"{name} is on {x.device} but the head model is on {ref.device}: call head.to({str(x.device)!r}) or move the input")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or Inf values")
        return x.to(ref.dtype)


def _check_count(arg: str, asked: int, have: int, what: str) -> None:
    if not isinstance(asked, (int, np.integer)) or asked < 0:
        raise ValueError(f"{arg} must be a non-negative integer, got {asked!r}")
    if asked > have:
        raise ValueError(f"{arg}={asked} but {what} has only {have} components; ask for at most {have}")


def load_head_model(flame_path: str | os.PathLike | None = None, n_shape: int = 20, n_expr: int = 16, landmark_path: str | os.PathLike | None = None) -> HeadModel:
    """The FLAME file if one is given, otherwise the offline stand-in (says so once in the log)."""
    if flame_path is None:
        log.info("head model: the offline procedural stand-in, not FLAME (pass a FLAME pickle for the real model)")
        return HeadModel.standin(n_shape, n_expr)
    return HeadModel.from_flame(flame_path, n_shape, n_expr, landmark_path)


def head_from_config(cfg) -> HeadModel:
    """The head model a ``HeadConfig`` (``Config.head``) names: its FLAME file, else the stand-in."""
    return load_head_model(flame_path=cfg.flame_path, n_shape=cfg.n_shape, n_expr=cfg.n_expr)
