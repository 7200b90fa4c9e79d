"""Anderson-Darling chaos against scipy.stats.anderson, the definition ppvi adopts."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from ppvi_cli.metrics import chaos
from ppvi_cli.metrics.chaos import anderson_darling_normal, chaos_scores

RTOL = 1e-9


def scipy_ad(values: np.ndarray) -> float:
    with warnings.catch_warnings():
        # scipy >= 1.17 warns that the critical values are deprecated; only the statistic is used.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # 0/0 on a constant image
        return float(stats.anderson(np.asarray(values, dtype=float).ravel(), dist="norm").statistic)


def _cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    gradient = np.linspace(0, 255, 3000)[None, :] + rng.normal(0, 6, (3, 3000))
    return {
        "normal": rng.normal(3.0, 2.0, (4, 5000)),
        "uniform": rng.random((4, 3001)),
        "float32": rng.normal(size=(3, 777)).astype(np.float32),
        "uint8_image": rng.integers(0, 256, (3, 64 * 32 * 3), dtype=np.uint8),
        "uint8_gradient": np.clip(gradient, 0, 255).astype(np.uint8),
        "uint8_skewed": (rng.random((3, 4000)) ** 4 * 255).astype(np.uint8),
        "uint8_small_p": rng.integers(0, 256, (5, 20), dtype=np.uint8),
        "int16_negative": rng.integers(-300, 300, (3, 2000)).astype(np.int16),
        "float_integral": rng.integers(-5, 5, (3, 300)).astype(np.float64),
        "uint8_over_255": rng.integers(0, 256, (3, 5000)) / 255.0,
        "p2": rng.normal(size=(3, 2)),
        "p3_ties": np.array([[0, 0, 1], [2, 1, 2], [5, 9, 1]]),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_equals_scipy(name):
    rows = _cases()[name]
    expected = np.array([scipy_ad(row) for row in rows])
    np.testing.assert_allclose(anderson_darling_normal(rows), expected, rtol=RTOL, atol=0)


@pytest.mark.parametrize("kernel", ["histogram", "sorted"])
def test_both_paths_equal_scipy_on_integer_pixels(kernel):
    rng = np.random.default_rng(3)
    rows = np.clip(rng.normal(120, 50, (3, 6000)), 0, 255).astype(np.uint8)
    rows[1, :10] = 255  # a heavy tie at the top
    if kernel == "histogram":
        got = chaos._ad_histogram(rows, int(rows.min()), int(rows.max()))
    else:
        got = chaos._ad_sorted(rows)
    expected = np.array([scipy_ad(row) for row in rows])
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=0)


def test_chunks_give_the_same_result(monkeypatch):
    rng = np.random.default_rng(4)
    rows = rng.normal(size=(7, 500))
    rows[3:] = np.rint(rows[3:] * 20)  # later chunks integral: the histogram path
    whole = anderson_darling_normal(rows)
    monkeypatch.setattr(chaos, "_CHUNK_VALUES", 1000)
    # Two rows a chunk: rows 3-6 now take the histogram path, so equal to rounding, not bitwise.
    np.testing.assert_allclose(anderson_darling_normal(rows), whole, rtol=1e-12, atol=0)
    np.testing.assert_allclose(whole, [scipy_ad(r) for r in rows], rtol=RTOL)


def test_constant_rows_are_nan():
    rows = np.array([[5, 5, 5, 5], [0, 1, 2, 3], [7, 7, 7, 7]], dtype=np.uint8)
    got = anderson_darling_normal(rows)
    assert np.isnan(got[0]) and np.isnan(got[2])
    assert got[1] == pytest.approx(scipy_ad(rows[1]), rel=RTOL)
    # scipy returns rounding noise (about 1e3) for a repeated 0.1; ppvi says there is no spread.
    assert np.isnan(anderson_darling_normal(np.full((2, 100), 0.1))).all()
    assert np.isnan(anderson_darling_normal(np.array([[3.0], [4.0]]))).all()


def test_non_finite_rows_are_nan():
    rows = np.array([[1.0, np.nan, 3.0, 4.0], [1.0, np.inf, 3.0, 4.0], [1.0, 2.0, 3.0, 5.0]])
    got = anderson_darling_normal(rows)
    assert np.isnan(got[:2]).all()
    assert got[2] == pytest.approx(scipy_ad(rows[2]), rel=RTOL)


def test_chaos_scores_mixed_shapes_keep_input_order():
    rng = np.random.default_rng(5)
    images = [
        rng.integers(0, 256, (32, 16, 3), dtype=np.uint8),
        rng.normal(100, 30, (20, 10)),
        rng.integers(0, 256, (32, 16, 3), dtype=np.uint8),
        np.full((8, 8), 9, dtype=np.uint8),
        rng.integers(0, 256, (16, 32, 3), dtype=np.uint8),  # same size, other shape
        rng.integers(0, 256, (20, 10), dtype=np.uint8),  # same size as a float image
        rng.integers(0, 256, (32, 16, 3), dtype=np.uint8),
    ]
    expected = np.array([scipy_ad(im) for im in images])
    for batch_size in (1, 2, 256):
        got = chaos_scores(images, batch_size=batch_size)
        assert got.shape == (len(images),)
        assert np.isnan(got[3])
        keep = ~np.isnan(expected)
        np.testing.assert_allclose(got[keep], expected[keep], rtol=RTOL, atol=0)
    assert chaos_scores([]).shape == (0,)


def test_noise_is_more_chaotic_than_a_smooth_image():
    rng = np.random.default_rng(6)
    ramp = np.linspace(0, 255, 128)
    smooth = np.broadcast_to(ramp[None, :, None], (256, 128, 3)).astype(np.uint8)
    noise = np.clip(rng.normal(128, 40, (256, 128, 3)), 0, 255).astype(np.uint8)
    noise_ad, smooth_ad = chaos_scores([noise, smooth])
    assert noise_ad < 5 < 100 < smooth_ad


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"\[N, P\]"):
        anderson_darling_normal(np.zeros(10))
    with pytest.raises(ValueError, match="real"):
        anderson_darling_normal(np.ones((2, 3), dtype=complex))
    with pytest.raises(ValueError, match="image 1 is empty"):
        chaos_scores([np.ones((4, 4)), np.ones((0, 3))])
    with pytest.raises(ValueError, match="batch_size"):
        chaos_scores([np.ones((4, 4))], batch_size=0)
