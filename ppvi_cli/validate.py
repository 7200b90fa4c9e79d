"""Option values checked once, before anything is written: finite, of the right kind, in range.

A refused command must leave the file system as it found it, so every library entry point checks
its options with these before it touches an output.
"""

from __future__ import annotations

import math

from ppvi_cli.errors import PPVIError

MAX_SIDE = 4096  # the largest working side a --size may ask for (a 4096x4096 RGB batch is already 200 MB)


def check_number(flag: str, value, *, low: float | None = None, high: float | None = None, integer: bool = False,
                 low_open: bool = False, high_open: bool = False) -> None:
    """PPVIError unless `value` is a finite number (an int when `integer`) within the bounds given.

    >>> check_number("--sigma", float("nan"), low=0)  # doctest: +SKIP
    PPVIError: --sigma must be a finite number >= 0, got nan
    """
    lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
    hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
    want = f"{'an integer' if integer else 'a finite number'}{' ' + lo if lo else ''}{' and ' if lo and hi else ''}" \
           f"{(' ' if not lo else '') + hi if hi else ''}"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and integer:
        ok = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if ok:
        ok = math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise PPVIError(f"{flag} must be {want}, got {value!r}")


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    """`"256x128"` -> (256, 128) as (height, width); each side 1..MAX_SIDE."""
    try:
        height, width = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise PPVIError(f"invalid {option} {text!r}: use HEIGHTxWIDTH, e.g. 256x128") from None
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise PPVIError(f"invalid {option} {text!r}: each side must be 1..{MAX_SIDE} pixels")
    return height, width


def format_size(size: tuple[int, int]) -> str:
    """(256, 128) -> "256x128", as `parse_size` reads it."""
    return "x".join(str(int(v)) for v in size)
