"""Strict JSON: the one rule by which ppvi writes NaN and infinities (as null)."""

from __future__ import annotations

import math


def json_safe(value):
    """`value` with every non-finite float (NaN, +-inf: e.g. the PSNR of identical images) replaced by
    None, through dicts, lists and tuples (each kept its type), so `json.dumps(..., allow_nan=False)`
    writes strict JSON that jq and browsers read."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, tuple):
        return tuple(json_safe(v) for v in value)
    return value
