"""What the synthetic people and cameras are made of: identities, cameras, per-image pose and placement.

An identity is everything that stays with a person across cameras (body shape, clothes, hair,
accessories, how bright each surface looks in infrared); a camera is what stays with a view
(background, light, sensor, the views it tends to see); an image adds pose, viewpoint and crop.
Everything is drawn from a `numpy.random.Generator`, so one seed per item fixes it.

The infrared level of a surface ("heat" in the code) follows SYSU-MM01's near-infrared cameras:
it goes with the visible lightness of the dye (dark clothes look dark, light ones light, stripes
and logos keep their contrast) but not exactly, because fabrics differ (`ir_level`); skin is
bright whatever its tone. That leaves shape, garment boundaries, patterns, accessories and a
loose brightness order as the cues that cross modalities, as in the real data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
KP = {name: i for i, name in enumerate(COCO_KEYPOINTS)}
VISIBLE_CAMERAS = (1, 2, 4, 5)
INFRARED_CAMERAS = (3, 6)
VIEWS = ("front", "back", "left", "right")  # left/right: the side of the image the person faces

# A small shared palette (sRGB in [0, 1]) so that many ids wear the same colours and only the
# combination of colours, patterns, shape and accessories tells them apart.
CLOTH_PALETTE = np.array([
    (0.08, 0.08, 0.09), (0.92, 0.92, 0.90), (0.50, 0.50, 0.52), (0.12, 0.16, 0.38),
    (0.20, 0.40, 0.80), (0.55, 0.72, 0.90), (0.75, 0.12, 0.12), (0.45, 0.10, 0.15),
    (0.20, 0.55, 0.25), (0.45, 0.45, 0.20), (0.90, 0.80, 0.20), (0.90, 0.50, 0.15),
    (0.90, 0.55, 0.65), (0.45, 0.25, 0.60), (0.45, 0.30, 0.18), (0.80, 0.72, 0.55),
])
TOP_WEIGHTS = np.ones(len(CLOTH_PALETTE))
# Trousers and skirts are mostly dark, denim or beige, as in street scenes.
BOTTOM_WEIGHTS = np.array([5, 1, 3, 4, 3, 1, 0.5, 0.5, 0.5, 1, 0.3, 0.3, 0.3, 0.3, 2, 2.5])
SKIN_TONES = np.array([(0.96, 0.80, 0.69), (0.90, 0.70, 0.55), (0.78, 0.57, 0.42),
                       (0.60, 0.42, 0.30), (0.42, 0.28, 0.20)])
HAIR_COLOURS = np.array([(0.05, 0.04, 0.04), (0.20, 0.12, 0.08), (0.40, 0.26, 0.14),
                         (0.85, 0.72, 0.45), (0.70, 0.70, 0.70), (0.55, 0.22, 0.10)])
PATTERNS = ("plain", "stripes", "checks", "logo")
# Near-infrared sensors see past red, so reds and browns read lighter than their grey would.
NIR_WEIGHTS = np.array([0.45, 0.40, 0.15])
MATERIAL_SPREAD = 0.14  # how far (uniform +-) a fabric's IR level strays from what its dye's lightness predicts


def ir_level(colour, material: float) -> float:
    """Infrared level in [0, 1] of a surface of sRGB `colour`: its lightness, a little compressed, plus `material`."""
    return float(np.clip(0.1 + 0.85 * NIR_WEIGHTS @ np.asarray(colour) + material, 0.05, 0.95))


@dataclass(frozen=True)
class Garment:
    """A piece of clothing: base and secondary colour (RGB [0, 1]), pattern, and their IR levels in [0, 1]."""

    colour: tuple[float, float, float]
    second: tuple[float, float, float]
    pattern: str
    period: float  # pattern period, in units of the person's height
    heat: float
    second_heat: float  # the pattern is printed on the same fabric, so it keeps its contrast in IR


@dataclass(frozen=True)
class Item:
    """An accessory (backpack, bag, hat): colour, size factor, IR level, side (+1 person's left, -1 right)."""

    colour: tuple[float, float, float]
    size: float
    heat: float
    side: int = 1


@dataclass(frozen=True)
class Identity:
    """What a person keeps across cameras. Lengths are fractions of the person's height."""

    stature: float  # relative height in the crop, 0.9-1.0
    shoulder: float  # half-width at the shoulders
    hip: float  # half-width at the hips
    head: float  # vertical radius of the head
    hip_y: float  # height of the hip joints from the top of the head (leg length = 1 - hip_y)
    limb: float  # upper-arm radius; legs are thicker
    skin: tuple[float, float, float]
    skin_heat: float
    hair: tuple[float, float, float]
    hair_long: bool
    hair_heat: float
    top: Garment
    sleeves_long: bool
    coat: bool  # a top that reaches the thighs (thicker, so cooler in IR)
    bottom: Garment
    bottom_kind: str  # trousers, shorts or skirt
    shoes: tuple[float, float, float]
    shoes_heat: float
    backpack: Item | None
    bag: Item | None
    hat: Item | None


@dataclass(frozen=True)
class Camera:
    """What a camera keeps across images: sensor response, blur, noise, framing and preferred views."""

    cam: int
    infrared: bool
    background_seed: int
    gain: float
    cast: tuple[float, float, float]  # per-channel colour cast (all 1 for infrared)
    gamma: float
    offset: float  # infrared black level
    light_slope: float  # left-to-right illumination gradient, fraction of the gain
    blur: float  # Gaussian sigma in pixels for a 128-pixel-high image
    noise: float  # sensor noise sigma on [0, 1] intensities
    scale: float  # mean person height as a fraction of the image height
    view_p: tuple[float, float, float, float]  # probabilities of VIEWS


@dataclass(frozen=True)
class Shot:
    """One image of one identity: viewpoint, pose and placement (pixels), light jitter."""

    view: str
    arm_swing: float  # radians, forward positive
    leg_swing: float
    person_px: float  # person height in pixels
    centre_x: float  # pixels
    top_y: float  # pixels, top of the head
    gain: float  # multiplies the camera gain
    background_dx: int
    background_dy: int


def _jitter(rng: np.random.Generator, colour: np.ndarray, amount: float = 0.04) -> tuple[float, float, float]:
    return tuple(float(c) for c in np.clip(colour + rng.uniform(-amount, amount, 3), 0.0, 1.0))


def _material(rng: np.random.Generator) -> float:
    """A fabric's IR offset: one uniform draw where earlier versions drew a fixed heat, so the draws
    after it, and with them a seed's visible images, are unchanged."""
    return float(rng.uniform(-MATERIAL_SPREAD, MATERIAL_SPREAD))


def _garment(rng: np.random.Generator, weights: np.ndarray, patterns: tuple[str, ...], p: list[float]) -> Garment:
    first = rng.choice(len(CLOTH_PALETTE), p=weights / weights.sum())
    second = (first + rng.integers(3, len(CLOTH_PALETTE) - 2)) % len(CLOTH_PALETTE)
    colour, second_colour = _jitter(rng, CLOTH_PALETTE[first]), _jitter(rng, CLOTH_PALETTE[second])
    pattern, period, material = str(rng.choice(patterns, p=p)), float(rng.uniform(0.035, 0.06)), _material(rng)
    return Garment(colour, second_colour, pattern, period, ir_level(colour, material),
                   ir_level(second_colour, material))


def sample_identity(rng: np.random.Generator) -> Identity:
    build = rng.uniform(0.0, 1.0)  # slim (0) to broad (1): ties shoulders, hips and limbs together
    top = _garment(rng, TOP_WEIGHTS, PATTERNS, [0.45, 0.2, 0.15, 0.2])
    coat = bool(rng.random() < 0.2)
    if coat:  # thick matte cloth: a little darker in IR than a shirt of the same colour
        top = replace(top, heat=top.heat - 0.05, second_heat=top.second_heat - 0.05)
    bottom_kind = str(rng.choice(["trousers", "shorts", "skirt"], p=[0.7, 0.15, 0.15]))
    bottom = _garment(rng, BOTTOM_WEIGHTS, ("plain",), [1.0])

    def item(p: float) -> Item | None:
        if rng.random() >= p:
            return None
        colour = _jitter(rng, CLOTH_PALETTE[rng.integers(len(CLOTH_PALETTE))])
        return Item(colour, float(rng.uniform(0.85, 1.15)), ir_level(colour, _material(rng)), int(rng.choice([-1, 1])))

    shape = dict(stature=float(rng.uniform(0.9, 1.0)),
                 shoulder=float(0.095 + 0.04 * build + rng.uniform(-0.008, 0.008)),
                 hip=float(0.075 + 0.035 * build + rng.uniform(-0.008, 0.008)),
                 head=float(rng.uniform(0.058, 0.072)),
                 hip_y=float(rng.uniform(0.49, 0.56)),
                 limb=float(0.024 + 0.012 * build))
    skin = _jitter(rng, SKIN_TONES[rng.integers(len(SKIN_TONES))], 0.03)
    skin_heat = float(rng.uniform(0.86, 0.97))
    hair = _jitter(rng, HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))], 0.03)
    hair_long = bool(rng.random() < 0.35)
    hair_heat = ir_level(hair, 0.5 * _material(rng))  # hair is one material; only its colour varies much
    sleeves_long = bool(rng.random() < 0.6)
    shoes = _jitter(rng, CLOTH_PALETTE[rng.choice([0, 1, 2, 14, 15])], 0.03)
    return Identity(**shape, skin=skin, skin_heat=skin_heat, hair=hair, hair_long=hair_long, hair_heat=hair_heat,
                    top=top, sleeves_long=sleeves_long, coat=coat, bottom=bottom, bottom_kind=bottom_kind,
                    shoes=shoes, shoes_heat=ir_level(shoes, 0.0),
                    backpack=item(0.35), bag=item(0.25), hat=item(0.2))


def sample_camera(rng: np.random.Generator, cam: int) -> Camera:
    infrared = cam in INFRARED_CAMERAS
    prefer = rng.dirichlet([1.5, 1.5, 1.0, 1.0])
    view_p = 0.5 * prefer + 0.5 * np.full(4, 0.25)
    if infrared:
        cast, gain, gamma = (1.0, 1.0, 1.0), rng.uniform(0.75, 1.1), rng.uniform(0.8, 1.25)
        offset = rng.uniform(-0.04, 0.1)
        blur, noise = rng.uniform(0.8, 1.3), rng.uniform(0.02, 0.04)
    else:
        cast = tuple(float(c) for c in 1.0 + rng.uniform(-0.1, 0.1, 3))
        gain, gamma, offset = rng.uniform(0.75, 1.2), rng.uniform(0.8, 1.25), 0.0
        blur, noise = rng.uniform(0.3, 0.8), rng.uniform(0.01, 0.03)
    return Camera(cam=cam, infrared=infrared, background_seed=int(rng.integers(2**63)), gain=float(gain),
                  cast=cast, gamma=float(gamma), offset=float(offset), light_slope=float(rng.uniform(-0.3, 0.3)),
                  blur=float(blur), noise=float(noise), scale=float(rng.uniform(0.8, 0.9)),
                  view_p=tuple(float(p) for p in view_p))


def sample_shot(rng: np.random.Generator, camera: Camera, identity: Identity, height: int, width: int,
                margin: tuple[int, int]) -> Shot:
    """Pose and framing of one image; `margin` is how far the camera background can be shifted (dy, dx)."""
    person = height * min(0.98, camera.scale + rng.uniform(-0.07, 0.07)) * identity.stature
    return Shot(
        view=str(rng.choice(VIEWS, p=camera.view_p)),
        arm_swing=float(rng.uniform(-0.5, 0.5)), leg_swing=float(rng.uniform(-0.35, 0.35)),
        person_px=float(person),
        centre_x=float(width / 2 + rng.normal(0.0, 0.05 * width)),
        top_y=float((height - person) * rng.uniform(0.2, 0.8)),
        gain=float(rng.uniform(0.88, 1.12)),
        background_dx=int(rng.integers(margin[1] + 1)), background_dy=int(rng.integers(margin[0] + 1)),
    )


def skeleton(identity: Identity, shot: Shot) -> tuple[np.ndarray, np.ndarray]:
    """The 17 COCO keypoints of a shot, in image pixels, and their visibility before framing.

    Returns `(xy [17, 2] float64, v [17] int)`; v is 2 for seen, 1 for hidden behind the body
    (the face in a back view, the far side in a side view). Built in body units (head top at 0,
    feet at 1, person's left at +x) and mapped by the shot's scale and position.
    """
    idn, view = identity, shot.view
    rh = 0.82 * idn.head  # horizontal head radius
    shoulder_y = 2 * idn.head + 0.05
    knee_y = idn.hip_y + (0.955 - idn.hip_y) * 0.5
    upper_arm, forearm = 0.17, 0.15
    thigh, shin = knee_y - idn.hip_y, 0.955 - knee_y
    pts = np.zeros((17, 2))
    vis = np.full(17, 2)
    if view in ("front", "back"):
        pts[KP["nose"]] = (0, idn.head * 1.2)
        pts[KP["left_eye"]], pts[KP["right_eye"]] = (0.38 * rh, idn.head * 0.92), (-0.38 * rh, idn.head * 0.92)
        pts[KP["left_ear"]], pts[KP["right_ear"]] = (rh, idn.head), (-rh, idn.head)
        # Swing towards or away from the camera only shortens the limb in the image.
        arm_fore = np.cos(shot.arm_swing)
        for side, name in ((1, "left"), (-1, "right")):
            sh = np.array([side * idn.shoulder, shoulder_y])
            out = 0.12 + 0.04 * side * shot.arm_swing
            el = sh + upper_arm * np.array([side * np.sin(out), np.cos(out) * arm_fore])
            wr = el + forearm * np.array([side * np.sin(out - 0.08), np.cos(out - 0.08) * arm_fore])
            hp = np.array([side * idn.hip * 0.7, idn.hip_y])
            spread = 0.05 + 0.03 * side * shot.leg_swing
            kn = hp + thigh * np.array([side * np.sin(spread), np.cos(spread) * np.cos(shot.leg_swing * side * 0.5)])
            an = kn + np.array([side * shin * np.sin(spread * 0.5), 0.955 - kn[1]])
            for joint, xy in (("shoulder", sh), ("elbow", el), ("wrist", wr), ("hip", hp), ("knee", kn), ("ankle", an)):
                pts[KP[f"{name}_{joint}"]] = xy
        if view == "back":  # seen from behind: the person's left is on the image left, the face hidden
            pts[:, 0] *= -1
            vis[[KP["nose"], KP["left_eye"], KP["right_eye"]]] = 1
    else:
        f = 1 if view == "right" else -1  # facing +x: the person's right side is towards the camera
        near, far = ("right", "left") if f == 1 else ("left", "right")
        pts[KP["nose"]] = (f * rh * 1.05, idn.head * 1.15)
        pts[KP[f"{near}_eye"]] = (f * rh * 0.62, idn.head * 0.92)
        pts[KP[f"{far}_eye"]] = (f * rh * 0.55, idn.head * 0.9)
        pts[KP[f"{near}_ear"]], pts[KP[f"{far}_ear"]] = (-f * rh * 0.1, idn.head), (-f * rh * 0.15, idn.head * 0.98)
        for name, sign in ((near, 1), (far, -1)):
            a, b = sign * shot.arm_swing, sign * shot.leg_swing
            sh = np.array([f * 0.01 * sign, shoulder_y])
            el = sh + upper_arm * np.array([f * np.sin(a), np.cos(a)])
            wr = el + forearm * np.array([f * np.sin(a + 0.35), np.cos(a + 0.35)])
            hp = np.array([f * 0.005 * sign, idn.hip_y])
            kn = hp + thigh * np.array([f * np.sin(b), np.cos(b)])
            bend = max(0.0, -b) * 0.8  # the trailing leg bends at the knee
            an = kn + shin * np.array([f * np.sin(b - bend), np.cos(b - bend)])
            for joint, xy in (("shoulder", sh), ("elbow", el), ("wrist", wr), ("hip", hp), ("knee", kn), ("ankle", an)):
                pts[KP[f"{name}_{joint}"]] = xy
        vis[[KP[f"{far}_{j}"] for j in ("eye", "ear", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")]] = 1
    xy = np.stack([shot.centre_x + pts[:, 0] * shot.person_px, shot.top_y + pts[:, 1] * shot.person_px], axis=1)
    return xy, vis
