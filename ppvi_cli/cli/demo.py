"""`ppvi demo`: the whole toolkit on the embedded synthetic dataset, in one command."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ppvi_cli.cli.app import app
from ppvi_cli.cli.common import effective_seed, emit, fmt, options, stderr


@app.command("demo")
def demo(
    ctx: typer.Context,
    out: Path = typer.Option(Path("demo_out"), "--out", "-o", help="Folder for the data, protected copies and figures."),
    ids: int = typer.Option(24, "--ids", min=4, help="Identities to synthesize."),
    seed: int = typer.Option(None, "--seed", help="Random seed (default: the global --seed)."),
) -> None:
    """Synthesize a small VI dataset, protect it with every method, print privacy and chaos tables.

    Re-running reuses what is already in --out.
    """
    from ppvi_cli.demo import DemoConfig, run_demo

    config = DemoConfig(ids=ids, seed=effective_seed(ctx, seed))
    quiet = options(ctx).quiet
    results = run_demo(out, config, stage=lambda s: None if quiet else stderr.print(f"[bold]demo:[/bold] {s}"))

    def human(console):
        methods = results["methods"]
        privacy = Table(title="privacy of protected vs raw (lower = more private; PPA gate: SSIM < 0.5, PSNR < 15)")
        for col in ("method", "modality", "SSIM", "PSNR (dB)"):
            privacy.add_column(col, justify="left" if col in ("method", "modality") else "right")
        for name, res in methods.items():
            for modality, mean in res.get("privacy", {}).items():
                privacy.add_row(name, modality, fmt(mean["ssim"]), fmt(mean["psnr"], 2))
        console.print(privacy)
        chaos = Table(title="chaos: mean Anderson-Darling statistic (lower = closer to noise)")
        for col in ("method", "visible", "infrared"):
            chaos.add_column(col, justify="left" if col == "method" else "right")
        for name, res in methods.items():
            chaos.add_row(name, fmt(res["chaos"].get("visible", float("nan")), 1),
                          fmt(res["chaos"].get("infrared", float("nan")), 1))
        console.print(chaos)
        console.print(f"{results['images']} images; grid: {results['grid']}; all numbers in {out / 'demo.json'}")

    emit(ctx, results, human)
