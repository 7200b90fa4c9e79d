"""The `ppvi` console script: global options, command registration, exit codes.

Exit codes: 0 success; 1 a failed gate, or inputs that could not be protected (listed); 2 bad
usage or bad input, including an output that cannot be written (one line on stderr naming the file
or option at fault); 3 an internal error (a bug: one line that points at --debug, so a CI gate never
mistakes a crash for a failed gate); 130 interrupted. A traceback only with --debug.
"""

from __future__ import annotations

import sys

from rich.text import Text

from ppvi_cli.cli.common import stderr
from ppvi_cli.cli.examples import present
from ppvi_cli.cli.root import app
from ppvi_cli.errors import INTERNAL_ERROR, GateFailed, PPVIError

__all__ = ["app", "main"]

# One module per command group, one name per line.
COMMAND_MODULES = (
    "anonymize",
    "attack",
    "data",
    "demo",
    "evaluate",
    "features",
    "generator",
    "leak",
    "measure",
    "report",
    "train",
)


def _register() -> None:
    # Each module adds its commands to `app`; imports stay light (torch only inside commands).
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"ppvi_cli.cli.{name}")
    present(app)


_register()


def main() -> None:
    debug = "--debug" in sys.argv[1:]
    try:
        app(prog_name="ppvi")  # also under `python -m ppvi_cli`: completion reads _PPVI_COMPLETE
    except PPVIError as exc:
        if debug:
            raise
        stderr.print(Text("error: ", style="red") + Text(str(exc)))
        sys.exit(exc.exit_code)
    except GateFailed as exc:
        stderr.print(Text("gate failed: ", style="yellow") + Text(str(exc)))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        stderr.print("interrupted: finished files are kept; run the same command again to resume")
        sys.exit(130)
    except OSError as exc:  # the file system said no: read-only, full, missing, permissions
        if debug:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        stderr.print(Text("error: ", style="red") + Text(f"{exc.strerror or exc}{where}; finished files are kept "
                                                          "(rerun the command to resume)"))
        sys.exit(PPVIError.exit_code)
    except Exception as exc:  # noqa: BLE001 - anything else is a bug, never a gate result
        if debug:
            raise
        stderr.print(Text("internal error: ", style="red") + Text(f"{type(exc).__name__}: {exc}"[:300]
                                                                   + " (a bug in ppvi; rerun with --debug for the "
                                                                   "traceback and report it)"))
        sys.exit(INTERNAL_ERROR)

