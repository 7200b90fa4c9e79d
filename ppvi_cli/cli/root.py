"""The root `ppvi` Typer app and its global options, apart from command registration.

Command modules add their commands to this `app`; `cli.app` imports them all and gives them their
help panels. Kept apart so that importing one command module first (as a test may) cannot catch
the registration half done.
"""

from __future__ import annotations

import typer

from ppvi_cli import __version__
from ppvi_cli.cli.common import GlobalOptions
from ppvi_cli.cli.options import global_device_option, global_seed_option

app = typer.Typer(
    name="ppvi",
    help="Privacy-preserving person re-identification: protect images, attack the protection, measure both sides.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # a privacy tool must not print tensors or people's image paths
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, powershell)
    rich_markup_mode="markdown",  # docstrings reflow as paragraphs
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every command
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ppvi {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document on stdout instead of tables."),
    device: str = global_device_option(),
    seed: int = global_seed_option(),
    quiet: bool = typer.Option(False, "--quiet", "-q", envvar="PPVI_QUIET", show_envvar=True,
                               help="No progress bars on stderr."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    ctx.obj = GlobalOptions(json=json_output, debug=debug, quiet=quiet, device=device, seed=seed)
