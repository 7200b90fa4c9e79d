"""Drawing a synthetic person: anti-aliased capsules, ellipses and convex polygons with numpy.

Every shape paints four layers at once, RGB and heat, so the visible and the infrared image of a
pose have the same outline. Shapes are evaluated only inside their bounding box, as signed
distances (pixels, negative inside) turned into coverage, which keeps a 128x64 person at about a
millisecond.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ppvi_cli.data.synth.model import KP, Garment, Identity, Shot

Fill = np.ndarray | Callable[[np.ndarray, np.ndarray], np.ndarray]  # [4] or (ys [h,1], xs [1,w]) -> [h,w,4]
FAR_SIDE = np.array([0.78, 0.78, 0.78, 0.96])  # limbs on the far side of a side view are in shadow
_SHADE_EDGE = np.array([0.7, 0.7, 0.7, 0.92], np.float32)  # colour factor at a shape's outline ...
_SHADE_GAIN = 1.0 - _SHADE_EDGE  # ... rising to 1 at its core


def rgbh(colour, heat: float) -> np.ndarray:
    return np.array([*colour, heat], dtype=np.float32)


class Canvas:
    """RGB + heat layers `[H, W, 4]` float32 in [0, 1], painted back to front."""

    def __init__(self, base: np.ndarray):
        self.px = base
        self.h, self.w = base.shape[:2]

    def _box(self, x0: float, x1: float, y0: float, y1: float):
        i0, i1 = max(0, int(np.floor(y0)) - 1), min(self.h, int(np.ceil(y1)) + 1)
        j0, j1 = max(0, int(np.floor(x0)) - 1), min(self.w, int(np.ceil(x1)) + 1)
        if i0 >= i1 or j0 >= j1:
            return None
        ys = (np.arange(i0, i1, dtype=np.float32) + 0.5)[:, None]  # pixel centres
        xs = (np.arange(j0, j1, dtype=np.float32) + 0.5)[None, :]
        return (slice(i0, i1), slice(j0, j1)), ys, xs

    def _paint(self, box, dist: np.ndarray, fill: Fill, depth: float | None) -> None:
        (sl, ys, xs) = box
        cov = np.minimum(np.maximum(0.5 - dist, 0.0), 1.0)[..., None]
        colour = fill(ys, xs) if callable(fill) else np.asarray(fill, dtype=np.float32)
        if depth:  # rounded look: darker (and in IR slightly cooler) towards the outline
            inside = np.sqrt(np.minimum(np.maximum(dist * (-1.0 / depth), 0.0), 1.0))[..., None]
            colour = colour * (_SHADE_EDGE + _SHADE_GAIN * inside)
        region = self.px[sl]
        region += cov * (colour - region)

    def capsule(self, a, b, ra: float, rb: float, fill: Fill, shade: bool = True) -> None:
        """A limb from `a` to `b` (pixels) whose radius tapers from `ra` to `rb`."""
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        r = max(ra, rb)
        box = self._box(min(a[0], b[0]) - r, max(a[0], b[0]) + r, min(a[1], b[1]) - r, max(a[1], b[1]) + r)
        if box is None:
            return
        _, ys, xs = box
        d = b - a
        t = np.minimum(np.maximum(((xs - a[0]) * d[0] + (ys - a[1]) * d[1]) / max(float(d @ d), 1e-6), 0.0), 1.0)
        dist = np.hypot(xs - a[0] - t * d[0], ys - a[1] - t * d[1]) - (ra + t * (rb - ra))
        self._paint(box, dist, fill, r if shade else None)

    def ellipse(self, c, rx: float, ry: float, fill: Fill, shade: bool = True) -> None:
        box = self._box(c[0] - rx, c[0] + rx, c[1] - ry, c[1] + ry)
        if box is None:
            return
        _, ys, xs = box
        dist = (np.hypot((xs - c[0]) / rx, (ys - c[1]) / ry) - 1.0) * min(rx, ry)
        self._paint(box, dist, fill, min(rx, ry) if shade else None)

    def polygon(self, pts, fill: Fill, shade: bool = True) -> None:
        """A convex polygon `[[x, y], ...]` (pixels), in either winding order."""
        pts = np.asarray(pts, np.float32)
        if np.sum(pts[:, 0] * np.roll(pts[:, 1], -1) - np.roll(pts[:, 0], -1) * pts[:, 1]) < 0:
            pts = pts[::-1]
        box = self._box(pts[:, 0].min(), pts[:, 0].max(), pts[:, 1].min(), pts[:, 1].max())
        if box is None:
            return
        _, ys, xs = box
        dist = None
        for p, q in zip(pts, np.roll(pts, -1, axis=0)):
            e = q - p
            n = np.array([e[1], -e[0]]) / max(float(np.hypot(*e)), 1e-6)  # outward normal
            side = (xs - p[0]) * n[0] + (ys - p[1]) * n[1]
            dist = side if dist is None else np.maximum(dist, side)
        depth = 0.5 * min(np.ptp(pts[:, 0]), np.ptp(pts[:, 1]))
        self._paint(box, dist, fill, depth if shade else None)


def garment_fill(g: Garment, x0: float, y0: float, scale: float, tint: np.ndarray | None = None) -> Fill:
    """Colour and IR level of a garment at each pixel: its pattern (stripes, checks) anchored at `(x0, y0)` pixels.

    The pattern switches all four layers together, so stripes and checks show in both modalities.
    """
    base, second = rgbh(g.colour, g.heat), rgbh(g.second, g.second_heat)
    if tint is not None:
        base, second = base * tint, second * tint
    period = max(2.0, g.period * scale)
    if g.pattern not in ("stripes", "checks"):
        return base

    def fill(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        band = np.floor((ys - y0) / period)
        if g.pattern == "checks":
            band = band + np.floor((xs - x0) / period)
        odd = (np.broadcast_to(band, np.broadcast_shapes(ys.shape, xs.shape)) % 2 == 1)[..., None]
        return np.where(odd, second, base)

    return fill


def _rounded_rect(cx: float, cy: float, hw: float, hh: float) -> np.ndarray:
    k = 0.3 * min(hw, hh)
    return np.array([(cx - hw + k, cy - hh), (cx + hw - k, cy - hh), (cx + hw, cy - hh + k), (cx + hw, cy + hh - k),
                     (cx + hw - k, cy + hh), (cx - hw + k, cy + hh), (cx - hw, cy + hh - k), (cx - hw, cy - hh + k)])


def _arm(cv: Canvas, idn: Identity, kp: np.ndarray, side: str, r: float, tint: np.ndarray) -> None:
    sh, el, wr = kp[KP[f"{side}_shoulder"]], kp[KP[f"{side}_elbow"]], kp[KP[f"{side}_wrist"]]
    skin, cloth = rgbh(idn.skin, idn.skin_heat) * tint, rgbh(idn.top.colour, idn.top.heat) * tint
    cv.capsule(sh, el, r, 0.85 * r, skin)
    cv.capsule(el, wr, 0.85 * r, 0.65 * r, skin)
    if idn.sleeves_long:
        cv.capsule(sh, el, 1.08 * r, 0.98 * r, cloth)
        cv.capsule(el, el + 0.88 * (wr - el), 1.0 * r, 0.8 * r, cloth)
    else:
        cv.capsule(sh, sh + 0.45 * (el - sh), 1.2 * r, 1.1 * r, cloth)
    direction = (wr - el) / max(float(np.hypot(*(wr - el))), 1e-6)
    cv.ellipse(wr + 0.8 * r * direction, 0.75 * r, 0.75 * r, skin)


def _leg(cv: Canvas, idn: Identity, kp: np.ndarray, side: str, r: float, facing: int, tint: np.ndarray) -> None:
    hp, kn, an = kp[KP[f"{side}_hip"]], kp[KP[f"{side}_knee"]], kp[KP[f"{side}_ankle"]]
    skin, cloth = rgbh(idn.skin, idn.skin_heat) * tint, rgbh(idn.bottom.colour, idn.bottom.heat) * tint
    leg = cloth if idn.bottom_kind == "trousers" else skin
    cv.capsule(hp, kn, r, 0.8 * r, leg)
    cv.capsule(kn, an, 0.8 * r, 0.6 * r, leg)
    if idn.bottom_kind == "shorts":
        cv.capsule(hp, hp + 0.6 * (kn - hp), 1.1 * r, 1.0 * r, cloth)
    shoe = rgbh(idn.shoes, idn.shoes_heat) * tint
    if facing:
        cv.ellipse(an + (facing * 0.5 * r, 0.35 * r), 1.05 * r, 0.5 * r, shoe)
    else:
        cv.ellipse(an + (0, 0.35 * r), 0.7 * r, 0.55 * r, shoe)


def draw_person(cv: Canvas, idn: Identity, shot: Shot, kp: np.ndarray) -> None:
    """Paint `idn` in the pose of `kp` ([17, 2] pixels from `skeleton`) onto `cv`, back to front."""
    P, cx, top = shot.person_px, shot.centre_x, shot.top_y
    side_view = shot.view in ("left", "right")
    facing = 0 if not side_view else (1 if shot.view == "right" else -1)
    mirror = -1.0 if shot.view == "back" else 1.0  # person's left is image left from behind

    def at(x: float, y: float) -> np.ndarray:
        return np.array([cx + mirror * x * P, top + y * P])

    one = np.ones(4, np.float32)
    rv, rh = idn.head * P, 0.82 * idn.head * P
    head_c = at(0.0, idn.head)
    sy = 2 * idn.head + 0.05  # shoulder line, body units
    s, hw = idn.shoulder, idn.hip
    bottom_y = idn.hip_y + (0.14 if idn.coat else 0.03)
    knee_y = idn.hip_y + (0.955 - idn.hip_y) * 0.5
    arm_r, leg_r = idn.limb * P, idn.limb * P * 1.45
    skin, hair = rgbh(idn.skin, idn.skin_heat), rgbh(idn.hair, idn.hair_heat)
    top_fill = garment_fill(idn.top, cx, top + sy * P, P)
    bottom = rgbh(idn.bottom.colour, idn.bottom.heat)
    near, far = ("right", "left") if facing == 1 else ("left", "right")

    # Behind the body.
    if side_view:
        _arm(cv, idn, kp, far, arm_r, FAR_SIDE)
        _leg(cv, idn, kp, far, 0.95 * leg_r, facing, FAR_SIDE)
        if idn.backpack is not None:
            b = idn.backpack
            c = at(-facing * (0.6 * s + 0.05 * b.size), sy + 0.13)  # against the back of the torso
            cv.polygon(_rounded_rect(c[0], c[1], 0.055 * b.size * P, 0.12 * b.size * P), rgbh(b.colour, b.heat))
        if idn.bag is not None and (near == "left") != (idn.bag.side == 1):
            c = at(-facing * 0.05, idn.hip_y + 0.01)
            size = 0.05 * idn.bag.size * P
            cv.polygon(_rounded_rect(c[0], c[1], size, size), rgbh(idn.bag.colour, idn.bag.heat) * FAR_SIDE)
    elif shot.view == "front" and idn.hair_long:
        cv.capsule(head_c, at(0.0, sy + 0.05), 1.05 * rh, 0.95 * rh, hair)

    # Legs and pelvis.
    if side_view:
        _leg(cv, idn, kp, near, 0.95 * leg_r, facing, one)
    else:
        for side in ("left", "right"):
            _leg(cv, idn, kp, side, leg_r, 0, one)
    half = 0.75 * hw if side_view else hw
    if idn.bottom_kind == "skirt":
        cv.polygon([at(-half, idn.hip_y - 0.03), at(half, idn.hip_y - 0.03),
                    at(half + 0.05, knee_y - 0.03), at(-half - 0.05, knee_y - 0.03)], bottom)
    else:
        cv.polygon([at(-half, idn.hip_y - 0.04), at(half, idn.hip_y - 0.04),
                    at(0.85 * half, idn.hip_y + 0.07), at(-0.85 * half, idn.hip_y + 0.07)], bottom)

    # Neck and torso.
    cv.capsule(at(0.0, 2 * idn.head - 0.02), at(0.0, sy), 0.38 * rh, 0.42 * rh, skin)
    if side_view:
        d, hd, f = 0.6 * s, 0.75 * hw + (0.02 if idn.coat else 0.0), facing
        cv.polygon([at(-f * 0.3 * d, sy - 0.015), at(-f * d, sy + 0.03), at(-f * hd, bottom_y),
                    at(f * hd, bottom_y), at(f * d, sy + 0.09), at(f * 0.3 * d, sy - 0.015)], top_fill)
    else:
        flare = hw + (0.025 if idn.coat else 0.005)
        cv.capsule(at(-s + 0.01, sy + 0.015), at(s - 0.01, sy + 0.015), 1.1 * arm_r, 1.1 * arm_r, top_fill)
        cv.polygon([at(-0.35 * s, sy - 0.015), at(-s, sy + 0.01), at(-flare, bottom_y),
                    at(flare, bottom_y), at(s, sy + 0.01), at(0.35 * s, sy - 0.015)], top_fill)
        if shot.view == "front" and idn.top.pattern == "logo":
            c = at(0.0, sy + 0.1)
            cv.polygon(_rounded_rect(c[0], c[1], 0.45 * s * P, 0.045 * P), rgbh(idn.top.second, idn.top.second_heat))

    # Accessories on the body.
    if idn.backpack is not None and not side_view:
        b = idn.backpack
        if shot.view == "back":
            c = at(0.0, sy + 0.14)
            cv.polygon(_rounded_rect(c[0], c[1], 0.8 * s * b.size * P, 0.13 * b.size * P), rgbh(b.colour, b.heat))
            c = at(0.0, sy + 0.2 * b.size)
            cv.polygon(_rounded_rect(c[0], c[1], 0.5 * s * b.size * P, 0.05 * b.size * P),
                       rgbh(b.colour, b.heat) * np.array([0.8, 0.8, 0.8, 1.0], np.float32))
        else:
            for x in (-0.55 * s, 0.55 * s):
                cv.capsule(at(x, sy - 0.005), at(x * 1.05, sy + 0.2), 0.3 * arm_r, 0.3 * arm_r,
                           rgbh(b.colour, b.heat), shade=False)
    if idn.bag is not None:
        g = idn.bag
        colour = rgbh(g.colour, g.heat)
        if side_view:  # the strap crosses the chest; the bag hangs at the hip, on the near or far side
            bag_c = at(-facing * 0.02, idn.hip_y + 0.02)
            cv.capsule(at(facing * 0.3 * s, sy), bag_c, 0.25 * arm_r, 0.25 * arm_r, colour, shade=False)
            if (near == "left") == (g.side == 1):
                cv.polygon(_rounded_rect(bag_c[0], bag_c[1], 0.05 * g.size * P, 0.05 * g.size * P), colour)
        else:
            bag_c = at(g.side * (hw + 0.04), idn.hip_y + 0.02)
            cv.capsule(at(-g.side * 0.5 * s, sy), bag_c, 0.25 * arm_r, 0.25 * arm_r, colour, shade=False)
            cv.polygon(_rounded_rect(bag_c[0], bag_c[1], 0.045 * g.size * P, 0.05 * g.size * P), colour)

    # Arms in front of the torso.
    if side_view:
        _arm(cv, idn, kp, near, arm_r, one)
    else:
        for side in ("left", "right"):
            _arm(cv, idn, kp, side, arm_r, one)

    _head(cv, idn, shot, kp, head_c, rh, rv, facing, at(0.0, sy + 0.06))


def _head(cv: Canvas, idn: Identity, shot: Shot, kp: np.ndarray, head_c: np.ndarray, rh: float, rv: float,
          facing: int, hair_end: np.ndarray) -> None:
    skin, hair = rgbh(idn.skin, idn.skin_heat), rgbh(idn.hair, idn.hair_heat)
    eye = np.array([0.1, 0.08, 0.08, idn.skin_heat], np.float32)
    ear_r = (0.2 * rh, 0.3 * rv)
    if shot.view == "front":
        cv.ellipse(head_c + (0, -0.12 * rv), 1.05 * rh, 0.95 * rv, hair)
        if not idn.hair_long:
            for e in (kp[KP["left_ear"]], kp[KP["right_ear"]]):
                cv.ellipse(e, *ear_r, skin)
        cv.ellipse(head_c + (0, 0.12 * rv), 0.92 * rh, 0.88 * rv, skin)
        for e in (kp[KP["left_eye"]], kp[KP["right_eye"]]):
            cv.ellipse(e, max(0.6, 0.14 * rh), max(0.6, 0.1 * rv), eye, shade=False)
    elif shot.view == "back":
        cv.ellipse(head_c, rh, rv, skin)
        for e in (kp[KP["left_ear"]], kp[KP["right_ear"]]):
            cv.ellipse(e, *ear_r, skin)
        cv.ellipse(head_c + (0, -0.04 * rv), 1.04 * rh, 0.98 * rv, hair)
        if idn.hair_long:
            cv.capsule(head_c, hair_end, 1.0 * rh, 0.9 * rh, hair)
    else:
        f = facing
        if idn.hair_long:
            cv.capsule(head_c + (-f * 0.3 * rh, 0), hair_end + (-f * 0.5 * rh, 0), 0.75 * rh, 0.55 * rh, hair)
        cv.ellipse(head_c, 0.95 * rh, rv, skin)
        cv.ellipse(kp[KP["nose"]] + (-f * 0.15 * rh, 0), 0.25 * rh, 0.2 * rv, skin)
        cv.ellipse(head_c + (-f * 0.3 * rh, -0.12 * rv), 0.8 * rh, 0.92 * rv, hair)
        near_ear = kp[KP["right_ear"] if f == 1 else KP["left_ear"]]
        if not idn.hair_long:
            cv.ellipse(near_ear, *ear_r, skin)
        cv.ellipse(kp[KP["right_eye"] if f == 1 else KP["left_eye"]], max(0.6, 0.12 * rh), max(0.6, 0.1 * rv),
                   eye, shade=False)
    if idn.hat is not None:
        h = idn.hat
        colour = rgbh(h.colour, h.heat)
        cv.ellipse(head_c + (0, -0.45 * rv), 1.08 * rh, 0.62 * rv, colour)
        if facing:
            cv.capsule(head_c + (0, -0.3 * rv), head_c + (facing * 1.6 * rh, -0.25 * rv), 0.14 * rv, 0.12 * rv, colour)
        else:
            cv.capsule(head_c + (-1.1 * rh, -0.25 * rv), head_c + (1.1 * rh, -0.25 * rv), 0.13 * rv, 0.13 * rv, colour)
