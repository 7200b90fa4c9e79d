"""`--device auto|cpu|cuda[:N]` resolved in one place, with errors that say what was seen."""

from __future__ import annotations

import os
import re

from ppvi_cli.errors import PPVIError

DEVICE_HELP = "auto (a GPU when there is one), cpu, cuda or cuda:N"


def select_device(spec: str = "auto"):
    """Return the `torch.device` for a `--device` value; raise PPVIError when it cannot be had."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if not match:
        raise PPVIError(f"invalid --device {spec!r}: use {DEVICE_HELP}")
    index = int(match.group(1) or 0)
    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    if index >= count:
        raise PPVIError(
            f"--device {spec} is not available (torch.cuda.is_available()={available}, "
            f"device count={count}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
            "use --device cpu or a visible GPU index"
        )
    return torch.device(f"cuda:{index}")
