"""`ppvi data check` and `ppvi data synth`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ppvi_cli.cli.root import app
from ppvi_cli.cli.choices import Format
from ppvi_cli.cli.common import effective_seed, emit, progress_bars
from ppvi_cli.cli.options import constant_note, format_option, seed_option

data_app = typer.Typer(help="Inspect dataset layouts and synthesize the embedded VI dataset.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("check")
def check(
    ctx: typer.Context,
    root: Path = typer.Argument(..., help="Dataset root folder."),
    fmt: Format = format_option(),
    trial: int = typer.Option(None, "--trial", help=f"RegDB trial, 1..10 {constant_note('data.regdb', 'DEFAULT_TRIAL')}."),
    pattern: str = typer.Option(None, "--pattern", help="folder: regex on file names with groups camid/modality."),
) -> None:
    """Read a dataset and print ids, images, cameras and modalities per split; exit 2 naming what is missing."""
    from ppvi_cli.data.readers import load_dataset

    options = {k: v for k, v in (("trial", trial), ("pattern", pattern)) if v is not None}
    summary = load_dataset(root, fmt, **options).summary()

    def human(console):
        table = Table(title=f"{summary['format']} at {summary['root']}")
        for col in ("split", "ids", "images", "cameras", "modalities"):
            table.add_column(col, justify="right" if col in ("ids", "images") else "left")
        for name, row in summary["splits"].items():
            mods = ", ".join(f"{m} {n}" for m, n in row["modalities"].items())
            table.add_row(name, str(row["ids"]), str(row["images"]), ",".join(map(str, row["cameras"])), mods)
        console.print(table)
        for note in summary["notes"]:
            console.print(f"note: {note}")

    emit(ctx, summary, human)


@data_app.command("synth")
def synth(
    ctx: typer.Context,
    out: Path = typer.Argument(..., help="Output folder (SYSU-MM01 layout); must not exist or be empty."),
    ids: int = typer.Option(60, "--ids", min=4, help="Number of identities."),
    images_per_camera: int = typer.Option(4, "--images-per-camera", min=1, help="Images per identity and camera."),
    height: int = typer.Option(128, "--height", min=32, help="Image height in pixels."),
    width: int = typer.Option(64, "--width", min=16, help="Image width in pixels."),
    seed: int = seed_option(),
) -> None:
    """Draw a synthetic visible-infrared ReID dataset with ground-truth COCO keypoints."""
    from ppvi_cli.data.synth import SynthConfig, synthesize

    config = SynthConfig(ids=ids, images_per_camera=images_per_camera, height=height, width=width,
                         seed=effective_seed(ctx, seed))
    with progress_bars(ctx) as on_progress:
        summary = synthesize(out, config, on_progress=on_progress)

    def human(console):
        console.print(f"wrote {summary['images']} images of {summary['ids']} ids to {out} "
                      f"(train/val/test ids: {summary['split_ids']['train']}/{summary['split_ids']['val']}/"
                      f"{summary['split_ids']['test']}, seed {summary['config']['seed']})")

    emit(ctx, summary, human)
