"""What every command shares: the global options, JSON-or-table output, progress bars on stderr."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from ppvi_cli.errors import PPVIError
from ppvi_cli.jsonsafe import json_safe
from ppvi_cli.progress import Event, Progress

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


@contextmanager
def progress_bars(ctx: typer.Context, echo: Callable[[Event], str] | None = None) -> Iterator[Progress]:
    """The `on_progress` callback for library calls: one bar per stage of its `Event`s, drawn on stderr
    (never stdout, so --json stays clean) from the first event on; silent with --quiet.

    `echo`: also print `echo(event)` above the bars for each event that carries `info` (e.g. `info_line`)."""
    quiet = options(ctx).quiet
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    bars = RichProgress(*columns, console=stderr, disable=quiet)
    tasks: dict[str, TaskID] = {}

    def on_progress(event: Event) -> None:
        if quiet:
            return
        if not tasks:
            bars.start()
        if event.stage not in tasks:  # a resumed run's bar starts where it stands, no jump in the rate
            tasks[event.stage] = bars.add_task(event.stage, total=event.total, completed=event.done)
        else:
            bars.update(tasks[event.stage], total=event.total, completed=event.done)
        if echo is not None and event.info:
            bars.console.print(echo(event))

    try:
        yield on_progress
    finally:
        if tasks:
            bars.stop()


def info_line(event: Event) -> str:
    """An event's `info` as one log line of `key value` pairs (training losses)."""
    return " ".join(f"{key} {fmt(value, 4)}" for key, value in (event.info or {}).items())


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
