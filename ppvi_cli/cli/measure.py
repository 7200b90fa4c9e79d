"""`ppvi privacy` and `ppvi chaos`: image-level privacy measures with CI gates."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ppvi_cli.cli.root import app
from ppvi_cli.cli.choices import Format
from ppvi_cli.cli.common import emit, fmt, progress_bars
from ppvi_cli.cli.options import format_option
from ppvi_cli.errors import GateFailed


def _gate(summary: dict, failures: list[str]) -> None:
    summary["gate"] = {"passed": not failures, "failures": failures}


@app.command("privacy")
def privacy(
    ctx: typer.Context,
    raw: Path = typer.Option(..., "--raw", help="Raw dataset folder."),
    anon: Path = typer.Option(..., "--anon", help="Its anonymized mirror (same relative paths)."),
    fmt_name: Format = format_option(),
    max_ssim: float = typer.Option(None, "--max-ssim", help="Gate: exit 1 if a modality's mean SSIM exceeds this (PPA: 0.5)."),
    max_psnr: float = typer.Option(None, "--max-psnr", help="Gate: exit 1 if a modality's mean PSNR exceeds this (PPA: 15 dB)."),
) -> None:
    """SSIM and PSNR of every anonymized image against its raw twin; mean per modality.

    Lower is more private. PSNR is null in JSON (inf in tables) for identical images. The SSIM of an
    image smaller than the 7x7 window is undefined (null, listed under "undefined"); a gate on an
    undefined mean fails.
    """
    from ppvi_cli.measure import gate_failures, privacy_report

    with progress_bars(ctx) as on_progress:
        summary = privacy_report(raw, anon, fmt_name, on_progress=on_progress)
    _gate(summary, gate_failures(summary["mean"], {"ssim": max_ssim, "psnr": max_psnr}, summary["undefined"]))

    def human(console):
        table = Table(title=f"privacy: {anon} vs {raw}")
        for col in ("modality", "images", "SSIM", "PSNR (dB)"):
            table.add_column(col, justify="left" if col == "modality" else "right")
        for modality, mean in summary["mean"].items():
            n = sum(r["modality"] == modality for r in summary["images"])
            table.add_row(modality, str(n), fmt(mean["ssim"]), fmt(mean["psnr"], 2))
        console.print(table)

    emit(ctx, summary, human)
    if summary["gate"]["failures"]:
        raise GateFailed("; ".join(summary["gate"]["failures"]))


@app.command("chaos")
def chaos(
    ctx: typer.Context,
    root: Path = typer.Argument(..., help="Folder of (protected) images."),
    fmt_name: Format = format_option(),
    max_ad: float = typer.Option(None, "--max-ad", help="Gate: exit 1 if a modality's mean AD exceeds this."),
) -> None:
    """Anderson-Darling statistic of each image's pixels against a normal law (PixelFade's chaos).

    Lower is more chaotic, i.e. closer to Gaussian noise. A constant image has no defined AD (null in
    JSON, listed under "undefined"): it is not chaotic, so a --max-ad gate fails on it.
    """
    from ppvi_cli.measure import chaos_report, gate_failures

    with progress_bars(ctx) as on_progress:
        summary = chaos_report(root, fmt_name, on_progress=on_progress)
    _gate(summary, gate_failures(summary["mean"], {"ad": max_ad}, summary["undefined"]))

    def human(console):
        table = Table(title=f"chaos (Anderson-Darling) of {root}")
        for col in ("modality", "images", "mean AD"):
            table.add_column(col, justify="left" if col == "modality" else "right")
        for modality, mean in summary["mean"].items():
            n = sum(r["modality"] == modality for r in summary["images"])
            table.add_row(modality, str(n), fmt(mean, 2))
        console.print(table)

    emit(ctx, summary, human)
    if summary["gate"]["failures"]:
        raise GateFailed("; ".join(summary["gate"]["failures"]))
