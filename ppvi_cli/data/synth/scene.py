"""Scenes and sensors: camera backgrounds, per-image clutter, light, infrared response, blur and noise.

A visible camera sees colour (wall, floor line, doors and posters, a colour cast, a light gradient);
an infrared camera sees heat (a cool, smooth scene with a few warm objects, fixed-pattern column
noise, more blur). `render_image` puts a person in front and returns the pixels and keypoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from ppvi_cli.data.synth.draw import Canvas, draw_person
from ppvi_cli.data.synth.model import CLOTH_PALETTE, Camera, Identity, Shot, skeleton

MARGIN = 0.2  # the camera background is this much larger than the image, so each shot can shift it


@dataclass(frozen=True)
class Backdrop:
    """A camera's fixed scene: `pixels [Hb, Wb, 4]` RGB + heat, and `columns [W]` infrared column offsets."""

    pixels: np.ndarray
    columns: np.ndarray

    def margin(self, height: int, width: int) -> tuple[int, int]:
        return self.pixels.shape[0] - height, self.pixels.shape[1] - width


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int], channels: int = 1) -> np.ndarray:
    """Bilinearly upsampled Gaussian noise `[h, w, channels]`: low-frequency texture, unit scale."""
    grid = rng.normal(size=(cells[0] + 1, cells[1] + 1, channels))
    gy, gx = np.linspace(0, cells[0], h), np.linspace(0, cells[1], w)
    y0, x0 = np.minimum(gy.astype(int), cells[0] - 1), np.minimum(gx.astype(int), cells[1] - 1)
    ty, tx = (gy - y0)[:, None, None], (gx - x0)[None, :, None]
    top = grid[y0][:, x0] * (1 - tx) + grid[y0][:, x0 + 1] * tx
    bottom = grid[y0 + 1][:, x0] * (1 - tx) + grid[y0 + 1][:, x0 + 1] * tx
    return top * (1 - ty) + bottom * ty


def _muted(rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    colour = rng.uniform(lo, hi, 3)
    return colour.mean() + (colour - colour.mean()) * rng.uniform(0.2, 0.8)


def make_backdrop(camera: Camera, height: int, width: int) -> Backdrop:
    """The fixed scene of `camera`, drawn from its own seed."""
    rng = np.random.default_rng(camera.background_seed)
    hb, wb = int(round(height * (1 + MARGIN))), int(round(width * (1 + MARGIN)))
    pixels = np.zeros((hb, wb, 4), np.float32)
    yy = np.linspace(0.0, 1.0, hb)[:, None, None]
    floor = int(hb * rng.uniform(0.62, 0.85))
    cv = Canvas(pixels)
    if camera.infrared:
        base = rng.uniform(0.12, 0.28)
        heat = base + rng.uniform(-0.08, 0.08) * yy[..., 0] + 0.03 * _smooth_noise(rng, hb, wb, (3, 2))[..., 0]
        heat[floor:] += rng.uniform(-0.06, 0.06)
        pixels[..., 3] = heat
        for _ in range(rng.integers(1, 4)):  # cool windows and doors: soft-edged rectangles
            x, y = rng.uniform(0, wb), rng.uniform(0, floor)
            cv.polygon([(x, y), (x + rng.uniform(5, 20), y), (x + rng.uniform(5, 20), y + rng.uniform(10, 40)),
                        (x, y + rng.uniform(10, 40))], np.array([0, 0, 0, base * rng.uniform(0.4, 0.8)]), shade=False)
        for _ in range(rng.integers(1, 4)):  # warm objects (lamps, radiators, machines) glow
            c = (rng.uniform(0, wb), rng.uniform(0, hb))
            cv.ellipse(c, rng.uniform(2, 8) * wb / 64, rng.uniform(2, 8) * hb / 128,
                       np.array([0, 0, 0, rng.uniform(0.4, 0.6)]), shade=True)
        pixels[..., 3] = gaussian_filter(pixels[..., 3], 1.5 * height / 128)
    else:
        wall, ground = _muted(rng, 0.25, 0.85), _muted(rng, 0.2, 0.7)
        pixels[..., :3] = wall * (0.8 + rng.uniform(-0.3, 0.3) * yy + 0.2)
        pixels[floor:, :, :3] = ground * (0.85 + 0.3 * (yy[floor:] - yy[floor]) / max(1e-6, 1 - yy[floor]))
        for _ in range(rng.integers(2, 7)):  # doors, windows, posters, shelves
            x, y = rng.uniform(-5, wb), rng.uniform(-5, floor)
            w, h = rng.uniform(4, 0.6 * wb), rng.uniform(6, 0.5 * hb)
            colour = wall + rng.uniform(0.3, 0.9) * (CLOTH_PALETTE[rng.integers(len(CLOTH_PALETTE))] - wall)
            cv.polygon([(x, y), (x + w, y), (x + w, y + h), (x, y + h)], np.array([*colour, 0]), shade=False)
        stripe = rng.integers(4, 12)  # floor tiles
        pixels[floor::stripe, :, :3] *= 0.85
        pixels[..., :3] *= 1 + 0.07 * _smooth_noise(rng, hb, wb, (4, 3), 3)
    columns = rng.normal(0.0, rng.uniform(0.004, 0.015), width) if camera.infrared else np.zeros(width)
    return Backdrop(np.clip(pixels, 0.0, 1.0), columns.astype(np.float32))


def _clutter(cv: Canvas, rng: np.random.Generator, infrared: bool) -> None:
    """0-2 objects that change from shot to shot (bins, passers-by's coats, parked bikes)."""
    for _ in range(rng.integers(0, 3)):
        x, y = rng.uniform(-10, cv.w), rng.uniform(0.2 * cv.h, cv.h)
        w, h = rng.uniform(5, 0.5 * cv.w), rng.uniform(5, 0.4 * cv.h)
        if infrared:
            value = np.array([0, 0, 0, rng.uniform(0.1, 0.5)])
        else:
            value = np.array([*CLOTH_PALETTE[rng.integers(len(CLOTH_PALETTE))] * rng.uniform(0.5, 1.0), 0])
        cv.polygon([(x, y), (x + w, y), (x + w, y + h), (x, y + h)], value, shade=False)


def _sensor(image: np.ndarray, camera: Camera, rng: np.random.Generator) -> np.ndarray:
    """Optics blur, then sensor noise; `image [H, W, C]` in [0, 1]."""
    sigma = camera.blur * image.shape[0] / 128
    image = gaussian_filter(image, (sigma, sigma, 0))
    return image + rng.normal(0.0, camera.noise, image.shape).astype(np.float32)


def render_image(identity: Identity, camera: Camera, backdrop: Backdrop, shot: Shot, rng: np.random.Generator,
                 height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One shot: `(pixels [H, W, 3] uint8, keypoints [17, 3] float)` with keypoints as COCO `x, y, v`.

    Infrared images come back as three equal channels, like SYSU-MM01's. A keypoint that falls
    outside the image is `0, 0, 0` (not labelled), as in COCO.
    """
    dy, dx = shot.background_dy, shot.background_dx
    cv = Canvas(backdrop.pixels[dy:dy + height, dx:dx + width].copy())
    _clutter(cv, rng, camera.infrared)
    xy, vis = skeleton(identity, shot)
    draw_person(cv, identity, shot, xy)
    ramp = 1.0 + camera.light_slope * np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :, None]
    if camera.infrared:
        heat = cv.px[..., 3:] + 0.025 * _smooth_noise(rng, height, width, (8, 4)).astype(np.float32)
        level = camera.offset + camera.gain * shot.gain * heat * (0.5 + 0.5 * ramp) + backdrop.columns[None, :, None]
        image = _sensor(np.clip(level, 0.0, 1.0) ** camera.gamma, camera, rng).repeat(3, axis=2)
    else:
        light = camera.gain * shot.gain * np.asarray(camera.cast, np.float32) * ramp
        image = _sensor(np.clip(cv.px[..., :3] * light, 0.0, 1.0) ** camera.gamma, camera, rng)
    pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
    keypoints = np.where(inside[:, None], np.column_stack([xy, vis]), 0.0)
    return pixels, keypoints
