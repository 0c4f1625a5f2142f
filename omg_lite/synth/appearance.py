"""Procedural appearance of a synthetic identity: per-vertex albedo of the head mesh.

An identity's look is a handful of random numbers (an :class:`Appearance`, drawn by
:func:`sample_appearance`). :func:`head_albedo` paints them onto the head mesh with the head
model's regions, using the identity's neutral mesh (shape applied, zero expression and pose) for
positions, so the paint follows the skin when the face moves:

- skin everywhere, with low-frequency variation
  ``a(v) = skin * (1 + sum_k s_k sin(w_k . x_v + phi_k))`` and a blush around the cheeks;
- hair on the scalp region and on the forehead above a random hairline (no hair shell: the hair
  is albedo on the head mesh, so the head mask is exactly the head model's silhouette);
- brows, lips, a redder nose tip and a dark mouth interior blended over the skin;
- eyeballs: a white sclera, a coloured iris and a dark pupil, placed by the angle between a
  vertex's direction from its eyeball's centre and the gaze (+z in the neutral pose).

Colours are sRGB in [0, 1]; the renderer converts to linear light for shading.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

# Skin tones from light to deep (sRGB): an identity's tone is a random point along this ramp.
SKIN_RAMP = np.array(
    [
        [0.97, 0.82, 0.72],
        [0.90, 0.70, 0.57],
        [0.80, 0.58, 0.43],
        [0.66, 0.45, 0.31],
        [0.48, 0.32, 0.21],
        [0.33, 0.21, 0.14],
    ]
)
# Hair colours (sRGB) and how often each is drawn.
HAIR_COLOURS = {
    "black": ([0.05, 0.045, 0.04], 0.30),
    "dark_brown": ([0.15, 0.10, 0.07], 0.25),
    "brown": ([0.32, 0.21, 0.13], 0.18),
    "auburn": ([0.42, 0.19, 0.09], 0.08),
    "blonde": ([0.74, 0.59, 0.38], 0.11),
    "grey": ([0.58, 0.57, 0.55], 0.08),
}
BROWN_HAIR = ("dark_brown", "brown", "auburn")
IRIS_COLOURS = np.array([[0.30, 0.18, 0.09], [0.18, 0.11, 0.06], [0.30, 0.45, 0.62], [0.35, 0.45, 0.28], [0.45, 0.36, 0.20]])
SCLERA = (0.90, 0.88, 0.84)
PUPIL = (0.03, 0.03, 0.03)
MOUTH = (0.45, 0.2, 0.2)  # the mouth interior: the skin darkened towards red
# Angular radii of iris and pupil on the eyeball (a 12 mm eyeball carries a ~6 mm iris).
IRIS_ANGLE = np.radians(34.0)
PUPIL_ANGLE = np.radians(13.0)
N_WAVES = 4  # low-frequency variation terms
REGIONS = ("scalp", "face", "lips", "eyeballs", "brows", "nose")  # head-model regions painted (plus "mouth_interior" if any)


@dataclass
class Appearance:
    """The random numbers behind one identity's look (sRGB colours in [0, 1])."""

    skin: list[float]  # [3]
    hair: list[float]  # [3]
    brows: list[float]  # [3]
    lips: list[float]  # [3]
    iris: list[float]  # [3]
    hairline: float  # forehead hair starts this far above the brows, metres
    blush: float  # cheek redness, 0..1
    wave_freq: list[list[float]]  # [N_WAVES, 3] spatial frequencies w_k, radians per metre
    wave_phase: list[float]  # [N_WAVES] phases phi_k
    wave_amp: list[float]  # [N_WAVES] amplitudes s_k

    def to_dict(self) -> dict:
        return asdict(self)


def _jitter(rng: np.random.Generator, colour: np.ndarray, amount: float) -> np.ndarray:
    return np.clip(colour * (1.0 + rng.uniform(-amount, amount, 3)), 0.0, 1.0)


def sample_appearance(rng: np.random.Generator) -> Appearance:
    """Draw one identity's look."""
    t = rng.uniform(0.0, len(SKIN_RAMP) - 1)
    i = min(int(t), len(SKIN_RAMP) - 2)
    skin = _jitter(rng, SKIN_RAMP[i] + (t - i) * (SKIN_RAMP[i + 1] - SKIN_RAMP[i]), 0.05)
    names = list(HAIR_COLOURS)
    probs = np.array([HAIR_COLOURS[n][1] for n in names])
    name = names[rng.choice(len(names), p=probs / probs.sum())]
    hair = _jitter(rng, np.array(HAIR_COLOURS[name][0]) * rng.uniform(0.8, 1.2), 0.05)  # lighter or darker, hue kept
    lum = lambda c: float(c @ np.array([0.2126, 0.7152, 0.0722]))  # noqa: E731
    if name in BROWN_HAIR and lum(hair) > 0.45 * lum(skin):  # darken brown hair that would melt into the skin
        hair = hair * (0.45 * lum(skin) / lum(hair))
    brows = 0.55 * hair + 0.45 * np.minimum(hair, skin * 0.35)
    lips = np.clip(skin * np.array([0.86, 0.58, 0.58]) + rng.uniform(0.0, 0.06) * np.array([1.0, 0.2, 0.3]), 0.0, 1.0)
    iris = _jitter(rng, IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))], 0.15)
    direction = rng.normal(size=(N_WAVES, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    freq = direction * rng.uniform(12.0, 40.0, (N_WAVES, 1))  # wavelengths of ~15-50 cm
    return Appearance(
        skin=skin.tolist(),
        hair=hair.tolist(),
        brows=brows.tolist(),
        lips=lips.tolist(),
        iris=iris.tolist(),
        hairline=float(rng.uniform(0.012, 0.032)),
        blush=float(rng.uniform(0.0, 0.35)),
        wave_freq=freq.tolist(),
        wave_phase=rng.uniform(0.0, 2 * np.pi, N_WAVES).tolist(),
        wave_amp=rng.uniform(0.01, 0.04, N_WAVES).tolist(),
    )


def low_frequency(points: Tensor, freq: list, phase: list, amp: list) -> Tensor:  # points [V, 3] -> [V]
    """Multiplicative variation 1 + sum_k s_k sin(w_k . x + phi_k)."""
    w = torch.tensor(freq, dtype=points.dtype, device=points.device)  # [N_WAVES, 3]
    phi = torch.tensor(phase, dtype=points.dtype, device=points.device)
    s = torch.tensor(amp, dtype=points.dtype, device=points.device)
    return 1.0 + (torch.sin(points @ w.T + phi) * s).sum(-1)


def _smoothstep(x: Tensor) -> Tensor:
    x = x.clamp(0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _blend(albedo: Tensor, colour: Tensor, weight: Tensor) -> Tensor:  # albedo [V, 3], weight [V]
    return albedo + weight[:, None] * (colour - albedo)


def head_albedo(
    app: Appearance,
    neutral: Tensor,  # [V, 3] the identity's neutral head, world metres
    regions: dict[str, Tensor],  # name -> BoolTensor [V]
) -> Tensor:  # [V, 3] sRGB albedo
    """Paint an identity's look onto its head mesh (see the module docstring).

    Only regions and positions are used (no landmarks), so a FLAME file without a landmark
    embedding paints the same way.
    """
    V = neutral.shape[0]
    missing = [r for r in REGIONS if r not in regions or not regions[r].any()]
    if missing:
        raise ValueError(f"head model has no (or empty) region(s) {missing}; synth paints with {list(REGIONS)}")
    colour = lambda c: torch.tensor(c, dtype=neutral.dtype, device=neutral.device)  # noqa: E731
    f = lambda name: regions[name].to(device=neutral.device, dtype=neutral.dtype)  # noqa: E731
    x, y, z = neutral.unbind(-1)
    eyes = regions["eyeballs"].to(neutral.device)
    halves = [h for h in (eyes & (x > 0), eyes & (x <= 0)) if h.any()]
    centres = [(neutral[h].amax(0) + neutral[h].amin(0)) / 2 for h in halves]  # eyeball centres [3] each
    mouth = neutral[regions["lips"].to(neutral.device)].mean(0)  # [3]

    albedo = colour(app.skin).expand(V, 3).clone()
    albedo = albedo * low_frequency(neutral, app.wave_freq, app.wave_phase, app.wave_amp)[:, None]
    # Blush: a Gaussian (sigma 2 cm) on the front of each cheek, below the eye, level with the nose.
    front_face = _smoothstep((z - (centres[0][2] - 0.03)) / 0.02)
    blush = torch.zeros(V, dtype=neutral.dtype, device=neutral.device)
    for c in centres:
        cheek_xy = torch.stack([c[0] * 1.15, (c[1] + mouth[1]) / 2])
        blush = torch.maximum(blush, torch.exp(-((neutral[:, :2] - cheek_xy) ** 2).sum(-1) / (2 * 0.02**2)))
    albedo = _blend(albedo, albedo * colour([1.0, 0.72, 0.72]), app.blush * blush * front_face)
    tip_z = neutral[regions["nose"].to(neutral.device), 2].max()
    albedo = _blend(albedo, albedo * colour([1.0, 0.86, 0.84]), 0.6 * f("nose") * _smoothstep((z - tip_z + 0.02) / 0.02))
    albedo = _blend(albedo, colour(app.lips), f("lips"))
    albedo = _blend(albedo, colour(app.brows), 0.85 * f("brows"))
    if "mouth_interior" in regions:
        albedo = _blend(albedo, albedo * colour(MOUTH), f("mouth_interior"))

    # Hair: the scalp region at the back and sides; at the front, scalp or face above the
    # identity's hairline (soft over 6 mm), so foreheads range from a fringe to a receding line.
    brow_y = neutral[regions["brows"].to(neutral.device), 1].mean()
    above = _smoothstep((y - (brow_y + app.hairline)) / 0.006)
    front = _smoothstep(z / 0.02)
    scalp_or_face = torch.maximum(f("scalp"), f("face"))
    hair = (1 - front) * f("scalp") + front * above * scalp_or_face
    albedo = _blend(albedo, colour(app.hair) * low_frequency(neutral * 3.0, app.wave_freq, app.wave_phase, app.wave_amp)[:, None], hair)

    # Eyes: sclera, iris and pupil by the angle from the gaze direction (+z) at each eyeball centre.
    for half, c in zip(halves, centres):
        cos = torch.nn.functional.normalize(neutral[half] - c, dim=-1)[:, 2]
        eye = colour(SCLERA).expand(len(cos), 3).clone()
        eye[cos > np.cos(IRIS_ANGLE)] = colour(app.iris)
        eye[cos > np.cos(PUPIL_ANGLE)] = colour(PUPIL)
        albedo[half] = eye
    return albedo.clamp(0.0, 1.0)
