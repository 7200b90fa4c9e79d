"""SSIM and PSNR between original and protected (or recovered) images.

SSIM is scikit-image's ``structural_similarity(a, b, data_range=255, channel_axis=-1)`` for colour,
without ``channel_axis`` for grey (7x7 uniform window, K1 = 0.01, K2 = 0.03, sample covariances,
the 3-pixel border dropped, mean over pixels then channels), called per pair: the numbers the papers
that used it report (SecureReID's supervision upgradation, the recovery attack). ppvi once carried its
own batched copy; measured at 1.5-2.3x a scikit-image loop, it did not earn a second definition.
PSNR is ``10 log10(data_range^2 / MSE)`` in float64, as scikit-image's ``peak_signal_noise_ratio``,
computed batched (one line of arithmetic; ``inf`` for identical images without a warning).
"""

from __future__ import annotations

import numpy as np

WIN_SIZE = 7  # scikit-image's default window: images with a smaller side have no SSIM
# Images per PSNR chunk: bounds the float64 difference of one chunk (~6 MiB at 256x128x3).
_CHUNK_IMAGES = 16


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB of one pair ``[H, W]`` or ``[H, W, C]``; ``inf`` if equal."""
    _check_pair(a, b, batched=False, min_side=1)
    return float(_batch_psnr(np.asarray(a)[None], np.asarray(b)[None], _check_range(data_range))[0])


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Mean structural similarity of one pair: ``[H, W]`` grey or ``[H, W, C]`` channels-last."""
    _check_pair(a, b, batched=False)
    return _ssim(np.asarray(a), np.asarray(b), _check_range(data_range))


def batch_ssim_psnr(
    raw: np.ndarray, anon: np.ndarray, data_range: float = 255.0, min_side: int = WIN_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """SSIM and PSNR of each pair ``(raw[i], anon[i])``.

    Args:
        raw: ``[N, H, W]`` grey or ``[N, H, W, C]`` channels-last images, H and W at least 7.
        anon: the same shape, e.g. the protected or recovered versions of ``raw``.
        data_range: span of possible pixel values (255 for 8-bit images).
        min_side: images with a side below the 7x7 window are refused (ValueError) unless this is
            lowered; their SSIM is then NaN (undefined), their PSNR still exact.

    Returns:
        ``(ssim, psnr)``, each ``[N]`` float64; psnr in dB, ``inf`` for identical images.

    Example:
        >>> raw = np.zeros((2, 8, 8), np.uint8)
        >>> s, p = batch_ssim_psnr(raw, raw + 1)  # one grey level brighter
        >>> s.round(4), p.round(2)
        (array([0.8667, 0.8667]), array([48.13, 48.13]))
    """
    _check_pair(raw, anon, batched=True, min_side=min_side)
    raw, anon = np.asarray(raw), np.asarray(anon)
    data_range = _check_range(data_range)
    small = min(raw.shape[1:3]) < WIN_SIZE
    ssim = np.full(len(raw), np.nan) if small else np.array([_ssim(a, b, data_range) for a, b in zip(raw, anon)],
                                                            dtype=np.float64).reshape(len(raw))
    return ssim, _batch_psnr(raw, anon, data_range)


def _check_pair(a: np.ndarray, b: np.ndarray, batched: bool, min_side: int = WIN_SIZE) -> None:
    a_shape, b_shape = np.shape(a), np.shape(b)
    if a_shape != b_shape:
        raise ValueError(f"image shapes differ: {a_shape} vs {b_shape}; compare images of equal size")
    ndims = (3, 4) if batched else (2, 3)
    if len(a_shape) not in ndims:
        expected = "[N, H, W] or [N, H, W, C]" if batched else "[H, W] or [H, W, C]"
        raise ValueError(f"expected images shaped {expected}, got shape {a_shape}")
    height, width = a_shape[int(batched) : int(batched) + 2]
    if min(height, width) < min_side:
        raise ValueError(
            f"images are {height}x{width}, smaller than the {WIN_SIZE}x{WIN_SIZE} SSIM window; "
            "resize them first"
        )


def _check_range(data_range: float) -> float:
    data_range = float(data_range)
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    return data_range


def _batch_psnr(raw: np.ndarray, anon: np.ndarray, data_range: float) -> np.ndarray:
    axes = tuple(range(1, raw.ndim))
    mse = np.empty(len(raw), dtype=np.float64)
    for start in range(0, len(raw), _CHUNK_IMAGES):
        diff = raw[start : start + _CHUNK_IMAGES].astype(np.float64)
        diff -= anon[start : start + _CHUNK_IMAGES]
        mse[start : start + _CHUNK_IMAGES] = np.mean(diff * diff, axis=axes)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)


def _ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, data_range=data_range, channel_axis=-1 if a.ndim == 3 else None))
