"""Conventional desensitisation as SecureReID defines it: mosaic, Gaussian blur, Gaussian noise.

Defaults are the papers' (mosaic block 24 px, blur radius 12, noise sigma 0.5 on [0, 1] pixels).
They were set for 256x128 crops; at other sizes they protect more or less.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ppvi_cli.anonymize.methods import METHODS, Method
from ppvi_cli.data.transforms import gaussian_blur, gaussian_noise, mosaic
from ppvi_cli.validate import check_number


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
