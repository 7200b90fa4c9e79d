"""What every command shares: the global options, JSON-or-table output, progress bars on stderr."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ppvi_cli.errors import PPVIError
from ppvi_cli.jsonsafe import json_safe

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass
class GlobalOptions:
    json: bool = False
    debug: bool = False
    quiet: bool = False
    device: str = "auto"
    seed: int = 0


def options(ctx: typer.Context) -> GlobalOptions:
    root = ctx.find_root()
    if not isinstance(root.obj, GlobalOptions):
        root.obj = GlobalOptions()
    return root.obj


def effective_seed(ctx: typer.Context, local: int | None) -> int:
    """A command's own `--seed` wins over the global one."""
    return options(ctx).seed if local is None else local


def effective_device(ctx: typer.Context, local: str | None) -> str:
    return options(ctx).device if local is None else local


def given(ctx: typer.Context, name: str) -> bool:
    """Whether option `name` (the function parameter) was set on the command line or from its
    environment variable, rather than left at its default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def emit(ctx: typer.Context, result: dict, human: Callable[[Console], None]) -> None:
    """Print `result` as one JSON document (with --json) or let `human` draw tables on stdout.

    The JSON is strict: NaN and infinities become null (`json_safe`; documented per command)."""
    if options(ctx).json:
        sys.stdout.write(json.dumps(json_safe(result), indent=2, default=str, allow_nan=False) + "\n")
        sys.stdout.flush()
    else:
        human(stdout)


class Bar:
    """A progress bar handle: call it (or `.advance(n)`) per item; `.set_total(n)` once known.

    The bar is drawn only once work starts, so a command that fails its checks prints just the error.
    """

    def __init__(self, progress: Progress, description: str, total: int | None):
        self._progress, self._description, self._total = progress, description, total
        self._task = None

    def _start(self):
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task(self._description, total=self._total)
        return self._task

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._start(), n)

    __call__ = advance

    def set_total(self, total: int) -> None:
        self._progress.update(self._start(), total=total)

    def close(self) -> None:
        if self._task is not None:
            self._progress.stop()


@contextmanager
def progress(ctx: typer.Context, description: str, total: int | None = None) -> Iterator[Bar]:
    """A progress bar on stderr (never stdout, so --json stays clean). Silent with --quiet."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    bar = Bar(Progress(*columns, console=stderr, disable=options(ctx).quiet), description, total)
    try:
        yield bar
    finally:
        bar.close()


def fmt(value, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def parse_floats(text: str, option: str, example: str) -> list[float]:
    """'0.1,0.5,1.0' -> [0.1, 0.5, 1.0]; a PPVIError naming `option` (with `example`) otherwise."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise PPVIError(f"{option} {text!r}: give comma-separated numbers, e.g. {example}") from None
    if not values:
        raise PPVIError(f"{option} is empty: give comma-separated numbers, e.g. {example}")
    return values
