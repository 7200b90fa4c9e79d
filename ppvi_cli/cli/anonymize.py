"""`ppvi anonymize`: protect a dataset into a mirrored folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ppvi_cli.cli.app import app
from ppvi_cli.cli.common import effective_seed, emit, progress
from ppvi_cli.errors import GateFailed


@app.command("anonymize")
def anonymize(
    ctx: typer.Context,
    method: str = typer.Option(..., "--method", "-m", help="Protection method: mosaic, blur or noise."),
    input_root: Path = typer.Option(..., "--input", "-i", help="Dataset (or any image folder) to protect; only read."),
    output_root: Path = typer.Option(..., "--output", "-o", help="Mirror folder to write; must be outside --input."),
    fmt: str = typer.Option("auto", "--format", "-f", help="Input layout: auto, market1501, sysu, regdb or folder."),
    block: int = typer.Option(None, "--block", help="mosaic: tile size in pixels [default: 24]."),
    radius: float = typer.Option(None, "--radius", help="blur: Gaussian radius (std) in pixels [default: 12]."),
    sigma: float = typer.Option(None, "--sigma", help="noise: std on [0, 1] pixels [default: 0.5]."),
    seed: int = typer.Option(None, "--seed", help="Random seed (default: the global --seed)."),
    shard: str = typer.Option("0/1", "--shard", help="Process shard i of n (i/n); run n processes for the whole set."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per batch."),
) -> None:
    """Protect every image of --input into --output, path for path.

    Files are written atomically; a re-run skips finished files (resume after a kill); manifest.json
    records method, parameters, seed, versions and per-file status. Unreadable images are listed and
    make the exit code 1; the rest are still processed.
    """
    from ppvi_cli.anonymize.methods import build_method
    from ppvi_cli.anonymize.runner import anonymize_dataset, parse_shard

    given = {"block": block, "radius": radius, "sigma": sigma}
    protector = build_method(method, **{k: v for k, v in given.items() if v is not None})
    run_seed = effective_seed(ctx, seed)
    with progress(ctx, f"anonymize {method}") as bar:
        summary = anonymize_dataset(protector, input_root, output_root, fmt=fmt, seed=run_seed,
                                    shard=parse_shard(shard), batch_size=batch_size,
                                    on_progress=bar.advance, on_total=bar.set_total)

    def human(console):
        table = Table(title=f"anonymize --method {method} -> {summary['output']}")
        for col in ("written", "skipped", "failed"):
            table.add_column(col, justify="right")
        table.add_row(str(summary["written"]), str(summary["skipped"]), str(len(summary["failed"])))
        console.print(table)
        params = ", ".join(f"{k}={v}" for k, v in summary["params"].items())
        console.print(f"params: {params}; seed {summary['seed']}; manifest {summary['manifest']}")
        for item in summary["failed"]:
            console.print(f"[red]failed[/red] {item['path']}: {item['reason']}", markup=True)

    emit(ctx, summary, human)
    if summary["failed"]:
        raise GateFailed(f"{len(summary['failed'])} image(s) could not be read (listed in {summary['manifest']})")
