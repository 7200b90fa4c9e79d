"""`ppvi attack`: the recovery attack on a protected dataset, with a CI gate."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import typer
from rich.table import Table

from ppvi_cli.cli.root import app
from ppvi_cli.cli.common import effective_device, effective_seed, emit, fmt, progress


class _StageBars:
    """One progress bar per stage of the library's `(stage, done, total)` reports, one at a time."""

    def __init__(self, ctx: typer.Context):
        self.ctx, self.stack, self.stage, self.bar, self.done = ctx, ExitStack(), None, None, 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self.stack.close()
            self.stage, self.done = stage, 0
            self.bar = self.stack.enter_context(progress(self.ctx, stage, total))
        self.bar.advance(done - self.done)
        self.done = done

    def close(self) -> None:
        self.stack.close()


@app.command("attack")
def attack(
    ctx: typer.Context,
    raw: Path = typer.Option(..., "--raw", help="Raw dataset: its train ids are the attacker's public pairs, "
                             "its test ids are recovered."),
    anon: Path = typer.Option(..., "--anon", help="Its protected mirror (same relative paths)."),
    fmt_name: str = typer.Option("auto", "--format", "-f", help="Layout: auto, market1501, sysu, regdb or folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: recovered/, attack_grid.png, attack_last.pt, "
                             "attack.json."),
    epochs: int = typer.Option(None, "--epochs", min=1, help="Epochs over the public pairs (default: 100, the "
                               "authors')."),
    arch: str = typer.Option(None, "--arch", help="auto (the deepest UNet the size allows, up to unet128), unet32, "
                             "unet64, unet128 or unet256 (default: auto)."),
    ngf: int = typer.Option(None, "--ngf", min=1, help="UNet base width (default: 64, as pix2pix)."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Pairs per training step (default: 16)."),
    size: str = typer.Option(None, "--size", help="Working size HEIGHTxWIDTH for training and measuring "
                             "(default: 256x128)."),
    lr: float = typer.Option(None, "--lr", help="Adam learning rate (default: 1e-3, the authors')."),
    workers: int = typer.Option(None, "--workers", min=0, help="Image-decoding processes in training (default: 0)."),
    resume: bool = typer.Option(False, "--resume", help="Continue OUT/attack_last.pt if there is one (same settings; "
                                "--epochs may grow); start afresh otherwise."),
    max_ssim: float = typer.Option(None, "--max-ssim", help="Gate: exit 1 if a modality's mean recovered SSIM "
                                   "exceeds this."),
    max_psnr: float = typer.Option(None, "--max-psnr", help="Gate: exit 1 if a modality's mean recovered PSNR (dB) "
                                   "exceeds this."),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (default: the global --device)."),
    seed: int = typer.Option(None, "--seed", help="Random seed (default: the global --seed)."),
) -> None:
    """Train a recovery network (pix2pix UNet, L1) on (protected, original) train pairs; recover the test split.

    Scores: SSIM and PSNR vs the originals, of the recovered and of the protected images (lower = more private).
    They are means per modality, at the working size, on 8-bit pixels.
    Recovered images mirror the raw paths under OUT/recovered (PNG content).
    A checkpoint is written every epoch; --resume ends with the weights of an uninterrupted run.
    The gates apply to every modality's mean: exit 1 when one is above its limit.
    """
    from ppvi_cli.train.attack import AttackConfig, check_gate, run_attack
    from ppvi_cli.validate import parse_size

    given = {"epochs": epochs, "arch": arch, "ngf": ngf, "batch_size": batch_size, "lr": lr, "workers": workers,
             "size": parse_size(size) if size is not None else None}
    config = AttackConfig(raw=raw, anon=anon, out=out, format=fmt_name, device=effective_device(ctx, device),
                          seed=effective_seed(ctx, seed), resume=resume, max_ssim=max_ssim, max_psnr=max_psnr,
                          **{k: v for k, v in given.items() if v is not None})
    bars = _StageBars(ctx)
    try:
        summary = run_attack(config, on_progress=bars)
    finally:
        bars.close()
    emit(ctx, summary, lambda console: _table(console, summary))
    check_gate(summary)


def _db(value) -> str:
    return "inf" if value is None else fmt(value, 2)  # JSON null: identical images


def _table(console, summary: dict) -> None:
    method = summary.get("method") or "?"
    table = Table(title=f"recovery attack on {method} ({summary['anon']})")
    for col in ("modality", "images", "recovered SSIM", "recovered PSNR", "protected SSIM", "protected PSNR"):
        table.add_column(col, justify="left" if col == "modality" else "right")
    counts = {}
    for row in summary["images"]:
        counts[row["modality"]] = counts.get(row["modality"], 0) + 1
    for name, mean in [*summary["mean"].items(), ("all", summary["overall"])]:
        table.add_row(name, str(counts.get(name, len(summary["images"]))), fmt(mean["ssim"]), _db(mean["psnr"]),
                      fmt(mean["protected_ssim"]), _db(mean["protected_psnr"]))
    console.print(table)
    history = summary["history"]
    if history:
        console.print(f"L1 loss (on [-1, 1] pixels): epoch 1 {history[0]['l1']:.4f} -> epoch {history[-1]['epoch']} "
                      f"{history[-1]['l1']:.4f}")
    run = summary["run"]
    params = run["params"]
    console.print(f"public {summary['public']['images']} pairs ({summary['public']['ids']} ids), test "
                  f"{summary['test']['images']} images; {summary['arch']}, ngf {params['ngf']}, size "
                  f"{params['size'][0]}x{params['size'][1]}, lr {params['lr']}, batch {params['batch_size']}, "
                  f"seed {run['seed']}; ppvi {run['ppvi_version']}, torch {run['versions'].get('torch', '?')}")
    for note in summary["notes"]:
        console.print(f"note: {note}")
    for kind, path in summary["outputs"].items():
        console.print(f"{kind}: {path}")
    for failure in summary["gate"]["failures"]:
        console.print(f"[red]gate[/red] {failure}", markup=True)
