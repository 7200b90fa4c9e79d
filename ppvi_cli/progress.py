"""Progress: the one event every long-running library function reports.

A function that reports progress takes `on_progress: Progress | None` and calls it with `Event`s:
`stage` names the work in the library's own words ("anonymize generator", "features", "eval market",
"attack l1: train", "train reid"), `done` counts what is finished of that stage so far (items,
gallery rows or steps; cumulative, never decreasing), `total` is the stage's size when known, and
`info` carries details (a training step's losses). A stage may report `done == 0` once its size is
known; a function reports nothing before its checks pass, so a refused run prints only its error.
Events of one stage come in order; a run may go through several stages, one after another.

`Tracker` is the counting helper libraries use; it does nothing without a callback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class Event:
    stage: str
    done: int
    total: int | None = None
    info: Mapping[str, Any] | None = None


Progress = Callable[[Event], None]


class Tracker:
    """Counts one stage's work and reports it to `on_progress` (nothing when that is None)."""

    def __init__(self, on_progress: Progress | None, stage: str, total: int | None = None, done: int = 0):
        self.on_progress, self.stage, self.total, self.done = on_progress, stage, total, done

    def report(self, info: Mapping[str, Any] | None = None) -> None:
        """Report where the stage stands now (e.g. `done == 0` once its size is known)."""
        if self.on_progress is not None:
            self.on_progress(Event(self.stage, self.done, self.total, info))

    def start(self, total: int | None = None) -> None:
        """The stage's size is known (or confirmed): report it."""
        if total is not None:
            self.total = total
        self.report()

    def advance(self, n: int = 1, info: Mapping[str, Any] | None = None) -> None:
        self.done += n
        self.report(info)

    def to(self, done: int, info: Mapping[str, Any] | None = None) -> None:
        """Set the count to `done` (for loops that know their position) and report it."""
        self.done = done
        self.report(info)

    def part(self) -> Progress | None:
        """A callback for a called function's events, counted into this stage: each of its events
        advances this tracker by what the callee finished since its last one (its stage name and total
        are ignored). Take a fresh `part()` for each call."""
        if self.on_progress is None:
            return None
        seen: dict[str, int] = {}

        def forward(event: Event) -> None:
            step = event.done - seen.get(event.stage, 0)
            seen[event.stage] = event.done
            if step or event.info:
                self.advance(step, event.info)

        return forward


def renamed(on_progress: Progress | None, stage: str) -> Progress | None:
    """`on_progress` with every event's stage replaced by `stage` (a callee's work under the caller's name)."""
    if on_progress is None:
        return None
    return lambda event: on_progress(Event(stage, event.done, event.total, event.info))
