"""Face identity: dlib's ResNet face descriptor, CSIM and the same-person rate (``omg-lite eval``).

The peers score identity preservation with CSIM, the cosine similarity of face-identity
embeddings of a render I and its truth I_d:

    CSIM(I, I_d) = <e(I), e(I_d)> / (|e(I)| |e(I_d)|)         e: the 128-d dlib descriptor
    same person  <=>  |e(I) - e(I_d)|_2 < 0.6                   dlib's convention (99.38% on LFW)

The pipeline per image: dlib's HOG frontal face detector (it ships inside dlib), the 5-point
landmark aligner, then the ResNet descriptor on the aligned 150x150 chip. The model files come
from the ``face-recognition-models`` package, used only for its CC0 / public-domain files
(``dlib_face_recognition_resnet_model_v1.dat``, ``shape_predictor_5_face_landmarks.dat``); its
68-point predictor is trained on iBUG 300-W and not licensed for commercial use, so it is never
loaded. The peers use ArcFace (insightface), whose weights no installable package ships: dlib's
CSIM values are not comparable with theirs, only orderings are.

An image where the detector finds no face (a render that no longer looks like one) has no
embedding: it is counted, never scored as a crash. :func:`identity_scores` reports the share of
renders with a face, averages CSIM over the pairs where both faces are found, and counts a render
without a face as *not* the same person (the rate is over the truths with a face).

dlib's package ``face_recognition_models`` imports ``pkg_resources`` at import time (gone from
recent setuptools), so its files are located without importing it.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAME_PERSON_DISTANCE = 0.6  # dlib's threshold on the Euclidean distance of descriptors
MODEL_FILES = {"descriptor": "dlib_face_recognition_resnet_model_v1.dat", "aligner": "shape_predictor_5_face_landmarks.dat"}
LABEL = "dlib ResNet descriptor (128-d; the peers use ArcFace: compare orderings, not values)"


class IdentityModelMissing(FileNotFoundError):
    """dlib or its model files are not installed (the CLI turns it into one error line)."""


def model_file(name: str) -> Path:
    """Path of one of the two CC0 model files inside the installed ``face-recognition-models`` package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise IdentityModelMissing("the identity metric needs the face-recognition-models package: "
                                   "pip install dlib-bin face-recognition-models")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / MODEL_FILES[name]
    if not path.is_file():
        raise IdentityModelMissing(f"{path} is missing; reinstall face-recognition-models")
    return path


@dataclass
class Embeddings:
    vectors: np.ndarray  # [M, 128] float64, NaN rows where no face was found
    found: np.ndarray  # [M] bool

    def __len__(self) -> int:
        return len(self.found)


class IdentityModel:
    """Detect, align (5 points) and embed faces with dlib; embeddings of identical images are cached.

    ``upsample``: dlib pyramid up-samplings tried in turn until a face is found (the HOG detector
    needs faces of about 80 px; one up-sampling finds the 40-60 px faces of 128x128 portrait crops).
    """

    def __init__(self, upsample: tuple[int, ...] = (1, 2)):
        try:
            import dlib
        except ImportError as e:
            raise IdentityModelMissing("the identity metric needs dlib: pip install dlib-bin face-recognition-models") from e
        self.detector = dlib.get_frontal_face_detector()
        self.aligner = dlib.shape_predictor(str(model_file("aligner")))
        self.descriptor = dlib.face_recognition_model_v1(str(model_file("descriptor")))
        self.upsample = upsample
        self._cache: dict[bytes, np.ndarray | None] = {}

    def embed_one(self, image: np.ndarray) -> np.ndarray | None:  # [H, W, 3] uint8 -> [128] or None
        """The descriptor of the largest face found in ``image`` (None: no face)."""
        image = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
        key = hashlib.sha1(image.tobytes()).digest() + bytes(str(image.shape), "ascii")
        if key not in self._cache:
            self._cache[key] = self._embed(image)
        return self._cache[key]

    def _embed(self, image: np.ndarray) -> np.ndarray | None:
        for up in self.upsample:
            boxes = list(self.detector(image, up))
            if boxes:
                box = max(boxes, key=lambda b: b.area())
                shape = self.aligner(image, box)
                return np.asarray(self.descriptor.compute_face_descriptor(image, shape), dtype=np.float64)
        return None

    def embed(self, images: np.ndarray) -> Embeddings:  # [M, H, W, 3] uint8 -> [M, 128] + [M]
        out = [self.embed_one(im) for im in images]
        found = np.array([e is not None for e in out], dtype=bool)
        vectors = np.stack([np.full(128, np.nan) if e is None else e for e in out]) if out else np.zeros((0, 128))
        return Embeddings(vectors, found)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # [M, D] x2 -> [M]
    """CSIM per pair: <a, b> / (|a| |b|)."""
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # [M, D] x2 -> [M]
    return np.linalg.norm(a - b, axis=-1)


def identity_scores(pred: Embeddings, truth: Embeddings) -> dict:
    """CSIM and same-person rate of renders against their truths (module docstring for the counting).

    Returns ``face_frames`` (truths with a face), ``face_found`` (renders with a face among them),
    ``csim`` (the mean over the pairs where both faces are found, when any is) and ``same_person``
    (the share of ``face_frames`` whose render is within dlib's 0.6, when any truth has a face).
    """
    if len(pred) != len(truth):
        raise ValueError(f"{len(pred)} renders against {len(truth)} truths")
    have = truth.found
    both = have & pred.found
    out: dict = {"face_frames": int(have.sum()), "face_found": int(both.sum())}
    if both.any():
        out["csim"] = float(cosine(pred.vectors[both], truth.vectors[both]).mean())
    if have.any():
        out["same_person"] = float((distance(pred.vectors[both], truth.vectors[both]) < SAME_PERSON_DISTANCE).sum() / have.sum())
    return out


class IdentityMetric:
    """CSIM and the same-person rate of image batches for ``omg-lite eval``, counting images without a face."""

    def __init__(self):
        self.model = IdentityModel()
        self.stats = {"renders": 0, "found": 0, "references": 0, "reference_found": 0}

    def _embed(self, images) -> Embeddings:  # [M, 3, S, S] tensor in [0, 1]
        from omg_lite.avatar import to_uint8

        return self.model.embed(to_uint8(images))

    def reference(self, images) -> Embeddings:  # [M, 3, S, S]: the images that renders are compared with
        e = self._embed(images)
        self.stats["references"] += len(e)
        self.stats["reference_found"] += int(e.found.sum())
        return e

    def scores(self, renders, reference: Embeddings) -> dict:  # renders [M, 3, S, S] against reference [M]
        e = self._embed(renders)
        self.stats["renders"] += len(e)
        self.stats["found"] += int(e.found.sum())
        return identity_scores(e, reference)

    def note(self) -> str:
        s = self.stats
        return (f"CSIM / same person: {LABEL}; dlib found a face in {s['found']} of {s['renders']} scored images (baselines and "
                f"renders; per row: face_found of face_frames in the JSON) and in {s['reference_found']} of {s['references']} "
                "reference images (truth, or the source image across identities); same person counts a render without a face as not")
