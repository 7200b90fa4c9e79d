"""Mosaic, blur and noise against their definitions (SecureReID's desensitisation)."""

import numpy as np
import pytest
from PIL import Image, ImageFilter

from ppvi_cli.data.transforms import gaussian_blur, gaussian_noise, mosaic
from ppvi_cli.anonymize.methods import build_method, load_methods
from ppvi_cli.errors import PPVIError


def mosaic_reference(pixels, block):
    out = pixels.copy()
    for y in range(0, pixels.shape[0], block):
        for x in range(0, pixels.shape[1], block):
            out[y:y + block, x:x + block] = pixels[y, x]
    return out


@pytest.mark.parametrize("shape,block", [((256, 128, 3), 24), ((37, 23, 3), 5), ((30, 20), 7), ((8, 8, 3), 1)])
def test_mosaic_fills_each_tile_with_its_top_left_pixel(shape, block):
    pixels = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    out = mosaic(pixels, block)
    assert out.shape == pixels.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, mosaic_reference(pixels, block))


def test_blur_is_pil_gaussian_blur_and_smooths():
    pixels = np.random.default_rng(2).integers(0, 256, size=(64, 32, 3), dtype=np.uint8)
    out = gaussian_blur(pixels, 12)
    expected = np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(12)))
    np.testing.assert_array_equal(out, expected)
    assert out.std() < pixels.std() / 4
    np.testing.assert_array_equal(gaussian_blur(pixels, 0), pixels)


def test_noise_has_the_requested_std_and_is_seeded():
    pixels = np.full((200, 100, 3), 128, np.uint8)
    out = gaussian_noise(pixels, 0.05, np.random.default_rng(3))
    diff = out.astype(float) - 128
    assert abs(diff.mean()) < 0.5
    assert diff.std() == pytest.approx(0.05 * 255, rel=0.03)
    again = gaussian_noise(pixels, 0.05, np.random.default_rng(3))
    np.testing.assert_array_equal(out, again)


def test_noise_default_sigma_saturates_and_clips():
    pixels = np.full((100, 50), 128, np.uint8)
    out = gaussian_noise(pixels, 0.5, np.random.default_rng(4))
    # with sigma 0.5 on [0, 1] about 16% of values clip at each end: P(N(0, .5) > .498) = 0.16
    assert 0.14 < (out == 255).mean() < 0.18 and 0.14 < (out == 0).mean() < 0.18


def test_registry_and_parameters():
    assert {"mosaic", "blur", "noise"} <= set(load_methods())
    assert build_method("mosaic", block=8).params() == {"block": 8}
    assert build_method("blur").params() == {"radius": 12.0}
    assert build_method("noise").params() == {"sigma": 0.5}
    with pytest.raises(PPVIError, match="did you mean 'mosaic'"):
        build_method("mosiac")
    with pytest.raises(PPVIError, match="takes no parameter block"):
        build_method("blur", block=3)
    with pytest.raises(PPVIError, match="--block"):
        mosaic(np.zeros((4, 4), np.uint8), 0)
