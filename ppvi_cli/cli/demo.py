"""`ppvi demo`: the whole toolkit on the embedded synthetic dataset, in one command."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ppvi_cli.cli.root import app
from ppvi_cli.cli.common import effective_seed, emit, fmt, options, progress_bars
from ppvi_cli.cli.options import seed_option


@app.command("demo")
def demo(
    ctx: typer.Context,
    out: Path = typer.Option(Path("demo_out"), "--out", "-o", help="Folder for the data, protected copies and figures."),
    seed: int = seed_option(),
) -> None:
    """The whole toolkit on the embedded synthetic VI dataset, in one command.

    Synthesize, protect with every method (mosaic, blur, noise, PixelFade, and the shipped SecureReID
    and PPA generators), measure privacy and chaos, evaluate the shipped weights
    (weights/demo_dual_stream.pt) under the four settings (sysu-all), reverse SecureReID with its
    recovery generator, attack every protection (l1 and gan attackers, PixelFade also identity; bold: the
    worst case),
    and write the report (--out/report/report.html).
    Re-running reuses what is already in --out.
    """
    from ppvi_cli.demo import DemoConfig, run_demo

    config = DemoConfig(seed=effective_seed(ctx, seed))
    with progress_bars(ctx, echo=lambda event: f"[bold]demo:[/bold] {event.info['step']}") as on_progress:
        results = run_demo(out, config, device=options(ctx).device, on_progress=on_progress)

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
        utility = Table(title="demo weights, sysu-all (10 trials): rank-1 / mAP / mINP in percent")
        utility.add_column("method")
        for setting in ("raw2raw", "raw2anon", "anon2raw", "anon2anon"):
            utility.add_column(setting, justify="right")
        attack = Table(title="recovery attackers: SSIM / PSNR of recovered vs raw (the worst case is the privacy)")
        for col in ("method", "modality", "attacker", "recovered SSIM", "recovered PSNR", "protected SSIM",
                    "protected PSNR"):
            attack.add_column(col, justify="left" if col in ("method", "modality", "attacker") else "right")
        for name, res in methods.items():
            if "eval" in res:
                utility.add_row(name, *(f"{r['rank1']:.1f} / {r['mAP']:.1f} / {r['mINP']:.1f}"
                                        for r in res["eval"].values()))
            for modality, worst in res.get("attack_worst", {}).items():
                for attacker, means in res["attack"].items():
                    m = means[modality]
                    mark = lambda key, text: f"[bold]{text}[/bold]" if m[key] == worst[key] else text  # noqa: E731
                    attack.add_row(name, modality, attacker, mark("ssim", fmt(m["ssim"])),
                                   mark("psnr", fmt(m["psnr"], 2)), fmt(m["protected_ssim"]),
                                   fmt(m["protected_psnr"], 2))
        console.print(utility)
        console.print(attack)
        for name, res in methods.items():
            if "recovery" in res:
                rec = res["recovery"]
                console.print(f"authorized reversal of {name} (its recovery generator G_Y), recovered vs raw over "
                              f"{rec['images']} images: SSIM {fmt(rec['ssim'])}, PSNR {fmt(rec['psnr'], 2)} dB")
        console.print(f"{results['images']} images; grid: {results['grid']}; report: {results['report']}; "
                      f"all numbers in {out / 'demo.json'}")

    emit(ctx, results, human)
