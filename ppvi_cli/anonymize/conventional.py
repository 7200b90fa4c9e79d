"""Conventional desensitisation as SecureReID defines it: mosaic, Gaussian blur, Gaussian noise.

Defaults are the papers' (mosaic block 24 px, blur radius 12, noise sigma 0.5 on [0, 1] pixels).
They were set for 256x128 crops; at other sizes they protect more or less.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageFilter

from ppvi_cli.anonymize.methods import METHODS, Method
from ppvi_cli.validate import check_number


def mosaic(pixels: np.ndarray, block: int = 24) -> np.ndarray:
    """Fill every `block` x `block` tile with its top-left pixel (SecureReID's mosaic)."""
    check_number("--block", block, low=1, integer=True)
    rows = (np.arange(pixels.shape[0]) // block) * block
    cols = (np.arange(pixels.shape[1]) // block) * block
    return pixels.take(rows, axis=0).take(cols, axis=1)  # take: half the time of fancy indexing


def gaussian_blur(pixels: np.ndarray, radius: float = 12.0) -> np.ndarray:
    """PIL's GaussianBlur(radius) (SecureReID's blur); radius is the Gaussian's standard deviation."""
    check_number("--radius", radius, low=0)
    return np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(radius)))


def gaussian_noise(pixels: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """x/255 + N(0, sigma), clipped to [0, 1], rounded back to uint8 (SecureReID's noise)."""
    check_number("--sigma", sigma, low=0)
    noisy = pixels.astype(np.float64) / 255.0 + rng.normal(0.0, sigma, size=pixels.shape)
    return np.round(np.clip(noisy, 0.0, 1.0) * 255.0).astype(np.uint8)


@METHODS.register("mosaic")
@dataclass
class Mosaic(Method):
    name = "mosaic"
    block: int = 24

    def __post_init__(self) -> None:
        check_number("--block", self.block, low=1, integer=True)

    def protect(self, images, records, seeds) -> list[np.ndarray]:
        return [mosaic(im, self.block) for im in images]


@METHODS.register("blur")
@dataclass
class Blur(Method):
    name = "blur"
    radius: float = 12.0

    def __post_init__(self) -> None:
        check_number("--radius", self.radius, low=0)

    def protect(self, images, records, seeds) -> list[np.ndarray]:
        return [gaussian_blur(im, self.radius) for im in images]


@METHODS.register("noise")
@dataclass
class Noise(Method):
    name = "noise"
    sigma: float = 0.5

    def __post_init__(self) -> None:
        check_number("--sigma", self.sigma, low=0)

    def protect(self, images, records, seeds: Sequence[int]) -> list[np.ndarray]:
        return [gaussian_noise(im, self.sigma, np.random.default_rng(s)) for im, s in zip(images, seeds)]
