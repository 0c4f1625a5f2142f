"""The OMG model (paper, Method): global branch, hierarchy with OAFF, Gaussian heads per level,
shoulder branch, refiner, and :class:`OMGModel` that wires them."""

from omg_lite.model.gaussian_heads import GaussianAttributes
from omg_lite.model.omg import GaussianSet, ModelOutput, OMGModel, posed_offsets
from omg_lite.model.shoulder_branch import ShoulderGaussians

__all__ = ["GaussianAttributes", "GaussianSet", "ModelOutput", "OMGModel", "ShoulderGaussians", "posed_offsets"]
