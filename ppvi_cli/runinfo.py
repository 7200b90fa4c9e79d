"""What goes with every result so it can be reproduced: versions, seed, parameters, checksums."""

from __future__ import annotations

import hashlib
import platform
import random
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from ppvi_cli import __version__

_PACKAGES = ("numpy", "scipy", "pillow", "scikit-image", "torch", "torchvision", "faiss-cpu", "faiss-gpu")


def versions() -> dict[str, str]:
    """Versions of ppvi, Python and the numeric packages a result depends on."""
    found = {"ppvi": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def stamp(seed: int | None, params: dict) -> dict:
    """The reproducibility header written into every manifest and JSON result."""
    return {
        "ppvi_version": __version__,
        "seed": seed,
        "params": params,
        "versions": versions(),
        "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:]) if sys.argv else "",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (when imported) from one place."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)


def derived_seed(seed: int, key: str) -> int:
    """A 64-bit seed for one item (e.g. an image path), independent of processing order."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
