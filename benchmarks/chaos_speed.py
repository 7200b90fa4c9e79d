"""Speed of ppvi's Anderson-Darling chaos against a loop over scipy.stats.anderson, same images.

Images are 256x128x3 uint8, image-like: a smooth colour gradient plus Gaussian noise of a random
strength (seeded), so the statistics range from noise-like to gradient-like. The reference is the
definition ppvi adopts, ``scipy.stats.anderson(x.ravel().astype(float), 'norm').statistic`` per
image. The script checks both give the same numbers, then prints the speed-up on its last line.

    .venv/bin/python benchmarks/chaos_speed.py [--n 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
import scipy
from scipy import stats

from ppvi_cli.metrics.chaos import chaos_scores

HEIGHT, WIDTH = 256, 128


def image_like(n: int, seed: int) -> list[np.ndarray]:
    """``n`` uint8 ``[256, 128, 3]`` images: random-direction gradient per channel + noise."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.0, 1.0, HEIGHT)[:, None, None]
    cols = np.linspace(0.0, 1.0, WIDTH)[None, :, None]
    images = []
    for _ in range(n):
        slope_y, slope_x = rng.uniform(-120, 120, (2, 3))
        offset = rng.uniform(40, 215, 3)
        gradient = offset + slope_y * (rows - 0.5) + slope_x * (cols - 0.5)
        noise = rng.normal(0.0, rng.uniform(1, 60), (HEIGHT, WIDTH, 3))
        images.append(np.clip(gradient + noise, 0, 255).astype(np.uint8))
    return images


def scipy_loop(images: list[np.ndarray]) -> np.ndarray:
    with warnings.catch_warnings():
        # scipy >= 1.17 warns that the critical values it also returns are deprecated.
        warnings.simplefilter("ignore", FutureWarning)
        return np.array(
            [stats.anderson(im.ravel().astype(float), "norm").statistic for im in images]
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="number of images (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    images = image_like(args.n, args.seed)
    print(f"{args.n} images {HEIGHT}x{WIDTH}x3 uint8, seed {args.seed}; "
          f"numpy {np.__version__}, scipy {scipy.__version__}, {os.cpu_count()} CPUs")

    start = time.perf_counter()
    ours = chaos_scores(images)
    ppvi_s = time.perf_counter() - start

    start = time.perf_counter()
    reference = scipy_loop(images)
    scipy_s = time.perf_counter() - start

    abs_diff = np.abs(ours - reference)
    rel_diff = abs_diff / np.abs(reference)
    print(f"AD range {reference.min():.2f} .. {reference.max():.2f}, median {np.median(reference):.2f}")
    print(f"max abs diff {abs_diff.max():.3e}, max rel diff {rel_diff.max():.3e}")
    print(f"ppvi chaos_scores: {ppvi_s:.3f} s ({1e3 * ppvi_s / args.n:.3f} ms/image)")
    print(f"scipy.stats.anderson loop: {scipy_s:.3f} s ({1e3 * scipy_s / args.n:.3f} ms/image)")
    if not rel_diff.max() <= 1e-9:
        print("MISMATCH: ppvi differs from scipy by more than 1e-9 relative", file=sys.stderr)
        return 1
    print(f"speedup: {scipy_s / ppvi_s:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
