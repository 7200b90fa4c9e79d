"""SSIM and PSNR against scikit-image's structural_similarity and peak_signal_noise_ratio."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from ppvi_cli.metrics import image_quality
from ppvi_cli.metrics.image_quality import batch_ssim_psnr, psnr, ssim

sk_metrics = pytest.importorskip("skimage.metrics")

TOL = 1e-4


def sk_ssim(a, b, data_range=255):
    channel_axis = -1 if a.ndim == 3 else None
    return sk_metrics.structural_similarity(a, b, data_range=data_range, channel_axis=channel_axis)


def sk_psnr(a, b, data_range=255):
    return sk_metrics.peak_signal_noise_ratio(a, b, data_range=data_range)


def _pairs(shape, seed):
    """(original, degraded) uint8 pairs: unrelated noise, blurred, noisy, blurred + noisy."""
    rng = np.random.default_rng(seed)
    smooth = gaussian_filter(rng.random(shape) * 255, sigma=(3, 3, 0)[: len(shape)])
    original = np.clip((smooth - smooth.mean()) * 6 + 128, 0, 255).astype(np.uint8)
    blur_sigma = (1.5, 1.5, 0)[: len(shape)]
    as_u8 = lambda v: np.clip(v, 0, 255).astype(np.uint8)  # noqa: E731
    return [
        (original, rng.integers(0, 256, shape, dtype=np.uint8)),
        (original, as_u8(gaussian_filter(original.astype(float), blur_sigma))),
        (original, as_u8(original + rng.normal(0, 12, shape))),
        (original, as_u8(gaussian_filter(original.astype(float), blur_sigma) + rng.normal(0, 5, shape))),
    ]


SHAPES = [(7, 7), (33, 20), (64, 32), (7, 8, 3), (40, 24, 3), (96, 48, 3), (20, 20, 4)]


@pytest.mark.parametrize("shape", SHAPES)
def test_single_pair_equals_skimage(shape):
    for original, degraded in _pairs(shape, seed=sum(shape)):
        assert ssim(original, degraded) == pytest.approx(sk_ssim(original, degraded), abs=TOL)
        assert psnr(original, degraded) == pytest.approx(sk_psnr(original, degraded), abs=TOL)


@pytest.mark.parametrize("shape", [(33, 20), (40, 24, 3)])
def test_batch_equals_single_pairs_and_skimage(shape):
    pairs = _pairs(shape, seed=1) + _pairs(shape, seed=2)
    raw = np.stack([p[0] for p in pairs])
    anon = np.stack([p[1] for p in pairs])
    got_ssim, got_psnr = batch_ssim_psnr(raw, anon)
    assert got_ssim.shape == got_psnr.shape == (len(pairs),)
    np.testing.assert_allclose(got_ssim, [ssim(a, b) for a, b in pairs], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got_psnr, [psnr(a, b) for a, b in pairs], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got_ssim, [sk_ssim(a, b) for a, b in pairs], rtol=0, atol=TOL)
    np.testing.assert_allclose(got_psnr, [sk_psnr(a, b) for a, b in pairs], rtol=0, atol=TOL)


def test_batch_spanning_several_chunks(monkeypatch):
    monkeypatch.setattr(image_quality, "_CHUNK_IMAGES", 3)
    rng = np.random.default_rng(9)
    raw = rng.integers(0, 256, (8, 16, 12, 3), dtype=np.uint8)
    anon = np.clip(raw + rng.normal(0, 20, raw.shape), 0, 255).astype(np.uint8)
    got_ssim, got_psnr = batch_ssim_psnr(raw, anon)
    np.testing.assert_allclose(got_ssim, [sk_ssim(a, b) for a, b in zip(raw, anon)], atol=TOL)
    np.testing.assert_allclose(got_psnr, [sk_psnr(a, b) for a, b in zip(raw, anon)], atol=TOL)


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # skimage's own inf
def test_identical_images():
    rng = np.random.default_rng(0)
    for shape in [(16, 9), (16, 9, 3)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        assert ssim(image, image) == 1.0
        assert psnr(image, image) == np.inf == sk_psnr(image, image.copy())
    raw = rng.integers(0, 256, (3, 10, 10, 3), dtype=np.uint8)
    anon = raw.copy()
    anon[1, 0, 0, 0] ^= 1
    got_ssim, got_psnr = batch_ssim_psnr(raw, anon)
    assert got_ssim[0] == got_ssim[2] == 1.0 and got_ssim[1] < 1.0
    assert np.isinf(got_psnr[[0, 2]]).all() and np.isfinite(got_psnr[1])


def test_float_images_with_unit_range():
    rng = np.random.default_rng(2)
    a = rng.random((30, 18, 3))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    assert ssim(a, b, data_range=1.0) == pytest.approx(sk_ssim(a, b, data_range=1.0), abs=TOL)
    assert psnr(a, b, data_range=1.0) == pytest.approx(sk_psnr(a, b, data_range=1.0), abs=TOL)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"\(8, 8\) vs \(8, 9\)"):
        ssim(np.zeros((8, 8), np.uint8), np.zeros((8, 9), np.uint8))
    with pytest.raises(ValueError, match=r"\(2, 8, 8, 3\) vs \(3, 8, 8, 3\)"):
        batch_ssim_psnr(np.zeros((2, 8, 8, 3)), np.zeros((3, 8, 8, 3)))
    small = np.zeros((6, 20, 3), np.uint8)
    with pytest.raises(ValueError):
        sk_ssim(small, small)
    with pytest.raises(ValueError, match="6x20"):
        ssim(small, small)
    assert psnr(small, small + 3) == pytest.approx(sk_psnr(small, small + 3), abs=TOL)  # no window
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        batch_ssim_psnr(np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="data_range"):
        psnr(np.zeros((8, 8)), np.ones((8, 8)), data_range=0)
