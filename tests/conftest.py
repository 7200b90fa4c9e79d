"""Shared fixtures: small image trees built per test, the optional real data, offline settings."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="ppvi-yolo-"))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny models: two torch threads spend more time synchronising than computing
    (measured 5-8x the CPU time of one thread on a busy 2-core runner). One thread for the module,
    restored after it; use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fake_gpu(monkeypatch):
    """Two fake CUDA devices for one test (`tests/fake_cuda.py`): tensors moved to `cuda:N` compute
    on the CPU but report `cuda:N`, and every device mix real CUDA refuses raises. Yields the mode
    (`.created` tensors per device, `.syncs` host waits, `.calls` to the faked `torch.cuda`)."""
    from fake_cuda import fake_cuda

    with fake_cuda(monkeypatch) as mode:
        yield mode


@pytest.fixture
def shared_data() -> Path:
    """`../shared/data`, or a clean skip on machines without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (real-data test)")
    return SHARED_DATA


def textured_image(rng: np.random.Generator, height: int = 40, width: int = 24, grey: bool = False) -> np.ndarray:
    """A structured uint8 image (gradient + blocks + mild noise) so SSIM/AD are not degenerate."""
    yy, xx = np.mgrid[0:height, 0:width]
    base = 60 + 120 * yy / height + 40 * np.sin(xx / 3.0)
    channels = 1 if grey else 3
    img = np.stack([base + rng.uniform(-40, 40) for _ in range(channels)], axis=-1)
    y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
    img[y0:y0 + height // 3, x0:x0 + width // 3] += rng.uniform(-60, 60, size=channels)
    img += rng.normal(0, 4, size=img.shape)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return img[..., 0] if grey else img


@pytest.fixture
def image_tree(tmp_path) -> Path:
    """A plain folder of images in nested dirs: colour JPEGs and PNGs and one grey PNG."""
    rng = np.random.default_rng(0)
    root = tmp_path / "raw"
    for i, rel in enumerate(["a/0001.jpg", "a/0002.png", "b/c/0003.png", "b/0004.jpg", "b/grey.png", "0005.png"]):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(textured_image(rng, grey=rel.endswith("grey.png"))).save(path)
    return root


def run_cli(*args: str, cwd: Path | None = None):
    """Run the real console entry point (`main()`, with its exit-code handling) in a subprocess."""
    import subprocess

    return subprocess.run([sys.executable, "-m", "ppvi_cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "COLUMNS": "200"})


def tiny_features(path: Path) -> Path:
    """A saved features file of 8 query and 8 gallery rows (4 ids, 2 cameras), raw only."""
    from ppvi_cli.evaluation.store import save_features
    from ppvi_cli.metrics.features import FeatureSet

    rng = np.random.default_rng(0)
    pids, camids = np.repeat(np.arange(4), 2), np.tile([1, 2], 4)
    save_features(path, FeatureSet(str(path), {"raw": rng.normal(size=(8, 4)).astype(np.float32)},
                                   {"raw": rng.normal(size=(8, 4)).astype(np.float32)}, pids, camids, pids, camids))
    return path


class Interrupting:
    """Wraps a method and raises KeyboardInterrupt after `after` batches, like a Ctrl-C."""

    def __init__(self, method, after):
        self.method, self.after = method, after

    def __getattr__(self, name):
        return getattr(self.method, name)

    def protect_batch(self, images, records, seeds):
        if self.after == 0:
            raise KeyboardInterrupt
        self.after -= 1
        return self.method.protect_batch(images, records, seeds)
