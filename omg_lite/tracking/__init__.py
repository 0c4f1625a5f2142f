"""The 3DMM estimator of the paper (Sec. 3.1, 3.4): landmarks, crops, portrait masks, fitting.

Only this package and ``synth/`` produce head parameters; both write the one format of
``omg_lite.head.params``. ``track.track`` is ``omg-lite track``.
"""

from omg_lite.tracking.crop import CropTransform, face_frame, portrait_crop
from omg_lite.tracking.fitting import FitResult, FitSettings, FitTargets, LandmarkFitter, reprojection_error, rotation_error_deg
from omg_lite.tracking.landmarks import MP_TO_IBUG68, FaceLandmarks, LandmarkDetector, NoFaceError, detect_landmarks
from omg_lite.tracking.portrait_mask import PortraitSegmenter, portrait_mask
from omg_lite.tracking.track import TrackResult, track, track_frames

__all__ = [
    "CropTransform",
    "FaceLandmarks",
    "FitResult",
    "FitSettings",
    "FitTargets",
    "LandmarkDetector",
    "LandmarkFitter",
    "MP_TO_IBUG68",
    "NoFaceError",
    "PortraitSegmenter",
    "TrackResult",
    "detect_landmarks",
    "face_frame",
    "portrait_crop",
    "portrait_mask",
    "reprojection_error",
    "rotation_error_deg",
    "track",
    "track_frames",
]
