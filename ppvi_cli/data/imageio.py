"""Image reading with clear per-file errors, encoding, and the walk that accounts for every file.

What goes in is decoded faithfully or refused with a reason, never silently altered:
- 8-bit modes: grey (L, 1) stays grey; palette, alpha, CMYK and other colour modes become RGB
  (alpha is dropped: the protected pixels are the colour ones).
- 16-bit grey (I;16*, and I holding values in 0..65535; thermal cameras write these) is mapped to
  8 bits by v8 = round(v16 / 257), the linear map of 0..65535 onto 0..255. Writers can restore the
  16-bit mode with v16 = 257 * v8 (`encode_image(..., sixteen_bit=True)`), so the map round-trips.
  Pillow reads 16-bit colour PNGs as 8-bit RGB itself (the high byte of each sample).
- Other 32-bit integer and float images (I beyond 16 bits, F) are refused: no mapping fits all.
- An image whose header declares more than `max_pixels` pixels is refused before it is decoded
  (a decompression bomb), and so is anything that is not a regular file (a FIFO would block forever).
"""

from __future__ import annotations

import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from ppvi_cli.atomic import atomic_open

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Image formats ppvi cannot write back under their own name: refused per file, never skipped in silence.
UNSUPPORTED_IMAGE_SUFFIXES = (".gif", ".ppm", ".pgm", ".pbm", ".pnm", ".jp2", ".j2k", ".jpx", ".heic", ".heif",
                              ".avif", ".ico", ".tga", ".psd", ".exr", ".dng", ".jxl", ".dds", ".qoi")
MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold (about 9,459 x 9,459)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_GREY_MODES = ("L", "1")
_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "RGBa", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")
_LA_MODES = ("LA", "La")


class ImageReadError(Exception):
    """An image that cannot be decoded; `reason` is short and fit for a manifest."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass
class Decoded:
    """Pixels as every method sees them (uint8 `[H, W]` or `[H, W, 3]`) and the file's own mode."""

    pixels: np.ndarray
    mode: str

    @property
    def sixteen_bit(self) -> bool:
        return self.mode in SIXTEEN_BIT_MODES or self.mode == "I"


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


@dataclass
class Tree:
    """Every file under a root, sorted into what ppvi reads and what it cannot, with reasons.

    `images`: relative POSIX paths of readable-looking image files; `refused`: `[{"path", "reason"}]`
    for image files that cannot be protected (special files, unsupported formats, broken links);
    `ignored`: `[{"path", "reason"}]` for everything else (hidden entries, non-image files).
    """

    images: list[str] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)
    ignored: list[dict] = field(default_factory=list)


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def scan_tree(root: str | Path) -> Tree:
    """Walk `root` (links to folders are not followed) and account for every entry; sorted paths.

    Hidden entries (names starting with '.') are not data: they are listed as ignored, not read.
    """
    root = Path(root)
    tree = Tree()
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in sorted(dirnames):
            if name.startswith("."):
                tree.ignored.append({"path": (base / name).relative_to(root).as_posix() + "/", "reason": "hidden folder"})
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            rel = (base / name).relative_to(root).as_posix()
            suffix = Path(name).suffix.lower()
            if name.startswith("."):
                tree.ignored.append({"path": rel, "reason": "hidden file"})
            elif suffix in IMAGE_SUFFIXES:
                try:
                    mode = os.stat(base / name).st_mode
                except OSError:
                    tree.refused.append({"path": rel, "reason": "broken symbolic link"})
                    continue
                if stat.S_ISREG(mode):
                    tree.images.append(rel)
                else:
                    tree.refused.append({"path": rel, "reason": f"{_file_kind(mode)}, not an image file (not opened)"})
            elif suffix in UNSUPPORTED_IMAGE_SUFFIXES:
                tree.refused.append({"path": rel, "reason": f"unsupported image format {suffix} "
                                     f"(ppvi reads {', '.join(IMAGE_SUFFIXES)}); convert it to PNG"})
            else:
                tree.ignored.append({"path": rel, "reason": "not an image file"})
    for items in (tree.images, tree.refused, tree.ignored):
        items.sort(key=lambda item: item["path"] if isinstance(item, dict) else item)
    return tree


def list_images(root: str | Path) -> list[str]:
    """Relative paths (POSIX) of every regular image file under `root`, sorted, hidden entries skipped."""
    return scan_tree(root).images


def decode_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Decoded:
    """Decode an image by the rules of the module docstring; ImageReadError with a short reason."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageReadError(path, f"{_file_kind(st.st_mode)}, not an image file (not opened)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies below
            with Image.open(path) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise ImageReadError(path, f"{width}x{height} = {width * height:,} pixels exceeds --max-pixels "
                                         f"{max_pixels:,} (a decompression bomb?); raise --max-pixels if it is real")
                im.load()
                return Decoded(_to_8bit(im, path), im.mode)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"decompression bomb refused by Pillow ({exc})") from None
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a decodable image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(path, f"corrupt image ({exc})") from None


def _to_8bit(im: Image.Image, path) -> np.ndarray:
    mode = im.mode
    if mode == "L":
        return np.array(im, dtype=np.uint8)
    if mode in _GREY_MODES or mode in _LA_MODES:
        return np.array(im.convert("L"), dtype=np.uint8)
    if mode == "RGB":
        return np.array(im, dtype=np.uint8)
    if mode in _COLOUR_MODES:
        return np.array(im.convert("RGB"), dtype=np.uint8)
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        values = np.array(im, dtype=np.int64)
        if values.min(initial=0) < 0 or values.max(initial=0) > 65535:
            raise ImageReadError(path, f"32-bit integer image (values {values.min()}..{values.max()}) is not "
                                 "supported; store it as 8- or 16-bit")
        return np.round(values / 257.0).astype(np.uint8)  # v8 = round(v16 / 257): 0 -> 0, 65535 -> 255
    raise ImageReadError(path, f"image mode {mode} is not supported (8-bit grey/colour and 16-bit grey are)")


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image as uint8: `[H, W]` for grey images, `[H, W, 3]` otherwise (see `decode_image`)."""
    return decode_image(path, max_pixels).pixels


def _pil_format(path: Path) -> str:
    ext = path.suffix.lower()
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF",
            ".tiff": "TIFF", ".webp": "WEBP"}.get(ext, "PNG")


LOSSY_SUFFIXES = (".jpg", ".jpeg", ".webp")


def encode_image(fh: BinaryIO, pixels: np.ndarray, name: str | Path, *, lossless: bool = False,
                 sixteen_bit: bool = False, jpeg_quality: int = 95) -> None:
    """Encode uint8 `pixels` into `fh` in the format `name`'s suffix names, built fresh (no metadata).

    `lossless`: lossy names (.jpg, .jpeg, .webp) get PNG content instead (readers decode by content).
    `sixteen_bit`: a grey image goes back to 16 bits (v16 = 257 * v8) where the format holds it (PNG, TIFF).
    """
    fmt = "PNG" if lossless and Path(name).suffix.lower() in LOSSY_SUFFIXES else _pil_format(Path(name))
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if sixteen_bit and pixels.ndim == 2 and fmt in ("PNG", "TIFF"):
        image = Image.fromarray(pixels.astype(np.uint16) * 257)
    else:
        image = Image.fromarray(pixels)
    image.save(fh, format=fmt, **({"quality": jpeg_quality} if fmt == "JPEG" else {}))


def write_image_atomic(path: str | Path, pixels: np.ndarray, jpeg_quality: int = 95) -> None:
    """Write `pixels` (uint8 `[H, W]` or `[H, W, 3]`) to `path` via a temp file and a rename."""
    with atomic_open(path, "wb") as fh:
        encode_image(fh, pixels, path, jpeg_quality=jpeg_quality)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)
