"""The synthetic portrait world: heads on shoulders with ground truth, for tests and training.

``omg-lite synth --out DIR --identities N --frames M --size S --seed K [--overwrite]`` renders N
identities x M frames. Each identity (a clip, like one portrait video) has a random shape (the
head model's identity coefficients), a procedural look (skin tone, hair, brows, lips, eyes,
low-frequency variation; :mod:`.appearance`), with ``synth.hair`` a hair volume outside the
head mesh that moves rigidly with the head (:mod:`.hair`; off by default), shoulders and torso that are NOT part of the head
model (:mod:`.torso`), a key light + ambient and a backdrop (flat, gradient or smooth noise;
:mod:`.scene`). Each frame draws an expression, a jaw opening, gaze, and a head pose split
between FLAME's neck and root joints (yaw up to +-40 deg, pitch up to +-20 deg), while the
torso stays put. The camera is ``Camera.frontal`` with the ``camera`` config (fov 18 deg at
1.6 m: head and shoulders). Same seed, same bytes.

File layout (paste into the README)::

    DIR/
      meta.json              generator version, seed, identities, frames, size, clip names,
                             head model (source "standin" or the FLAME file's name, n_shape,
                             n_expr, vertex/face counts), torso counts, camera + synth config
      id000/                 one folder per identity (a clip), id000, id001, ...
        params.npz           ground-truth head parameters + cameras (omg_lite.head.params
                             format: shape [S], expression [M, E], pose [M, 15], translation
                             [M, 3], K [M, 3, 3], R [M, 3, 3], t [M, 3], image_size, valid),
                             plus, if the head model has landmarks, landmarks2d [M, K, 2]
                             (pixels), landmarks3d [M, K, 3] and their iBUG ids landmark_ids [K]
                             (K = 68 for the stand-in)
        identity.json        the identity's look, torso, light, backdrop and framing
        rgb/0000.png         the portrait, S x S RGB (8-bit sRGB)
        mask/0000.png        portrait (foreground) mask = head_mask OR torso_mask (OR hair_mask) (0 / 255)
        head_mask/0000.png   pixels where the head mesh is the visible surface (0 / 255)
        torso_mask/0000.png  pixels where the torso is the visible surface (0 / 255)
        hair_mask/0000.png   only with synth.hair: pixels where the hair shell is the visible surface
        depth/0000.npy       camera-space z of the visible surface, float32 [S, S], 0 = none

Masks and depth are exactly the z-buffer (:mod:`omg_lite.geometry.zbuffer`) of the head model's
mesh (from ``params.npz``) and the torso at S x S; the colour image is rendered 2x larger and
box-filtered. Read a set with :class:`SynthDataset` (or :func:`load_frame`), which returns
tensors.
"""

from omg_lite.synth.dataset import GENERATOR_VERSION, SynthDataset, load_frame, write_synth

__all__ = ["GENERATOR_VERSION", "SynthDataset", "load_frame", "write_synth"]
