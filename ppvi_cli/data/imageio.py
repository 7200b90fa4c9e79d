"""Image reading with clear errors, and atomic writes that never leave half a file behind."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ppvi_cli.atomic import atomic_open

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(Exception):
    """An image that cannot be decoded; `reason` is short and fit for a manifest."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def list_images(root: str | Path) -> list[str]:
    """Relative paths (POSIX) of every image under `root`, sorted, hidden entries skipped."""
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and is_image(name):
                found.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(found)


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image as uint8: `[H, W]` for grey (L) images, `[H, W, 3]` otherwise.

    Palette, alpha and 16-bit images are converted to RGB or L so every method sees 8-bit pixels.
    """
    try:
        with Image.open(path) as im:
            im.load()
            mode = "L" if im.mode in ("L", "I;16", "I", "1") else "RGB"
            return np.asarray(im.convert(mode) if im.mode != mode else im, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a decodable image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(path, f"corrupt image ({exc})") from None


def _pil_format(path: Path) -> str:
    ext = path.suffix.lower()
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF",
            ".tiff": "TIFF", ".webp": "WEBP"}.get(ext, "PNG")


def write_image_atomic(path: str | Path, pixels: np.ndarray, jpeg_quality: int = 95) -> None:
    """Write `pixels` (uint8 `[H, W]` or `[H, W, 3]`) to `path` via a temp file and a rename.

    The image is built fresh from the array, so no metadata of any input file is carried over.
    """
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))
    fmt = _pil_format(Path(path))
    options = {"quality": jpeg_quality} if fmt == "JPEG" else {}
    with atomic_open(path, "wb") as fh:
        image.save(fh, format=fmt, **options)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)
