"""The FLAME layer (paper Sec. 3.1): parametric head, FLAME file loader, offline stand-in.

``load_head_model(None)`` gives the procedural stand-in that ships as code; pass a FLAME
pickle for the real model. Per-frame parameters travel as :class:`HeadParams`.
"""

from omg_lite.head.model import JOINT_NAMES, HeadModel, HeadOutput, head_from_config, load_head_model
from omg_lite.head.params import HeadParams, load_clip, save_clip

__all__ = ["JOINT_NAMES", "HeadModel", "HeadOutput", "HeadParams", "head_from_config", "load_clip", "load_head_model", "save_clip"]
