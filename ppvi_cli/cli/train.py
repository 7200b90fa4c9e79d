"""`ppvi train ...`: the training command group (ReID models, generators)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ppvi_cli.cli.app import app
from ppvi_cli.cli.common import effective_device, effective_seed, emit, fmt, parse_floats, progress
from ppvi_cli.validate import parse_size

train_app = typer.Typer(help="Train models: ReID (`train reid`) and anonymization generators (`train generator`).",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")


@train_app.command("reid")
def reid(
    ctx: typer.Context,
    data: Path = typer.Option(..., "--data", "-d", help="Training dataset root (train split; sysu: train+val)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: last.pt, run.json, train_log.jsonl, summary.json"),
    fmt_name: str = typer.Option("auto", "--format", "-f", help="Layout: auto, market1501, sysu, regdb or folder."),
    anon: Path = typer.Option(None, "--anon", help="Anonymized mirror of --data: hybrid training L(x) + L(anon(x))."),
    recipe: str = typer.Option("agw", "--recipe", help="agw (CE-LS + WRT triplet + center) or pepr (PEPR-Net: "
                               "triplet + De-ID decoder + adversarial identity)."),
    pepr_lambdas: str = typer.Option("1,0.1,0.001", "--pepr-lambdas",
                                     help="pepr: weights of triplet, De-ID and Adv-ID (Eq. 4) [paper: 1,0.1,0.001]."),
    backbone: str = typer.Option("resnet50", "--backbone", help="resnet50 (AGW), resnet18 or mobilenetv2."),
    pretrained: str = typer.Option("imagenet", "--pretrained", help="imagenet, none, or a torchvision state dict."),
    dual_stream: bool = typer.Option(None, "--dual-stream/--single-stream",
                                     help="Per-modality stems [default: dual for sysu and regdb]."),
    epochs: int = typer.Option(120, "--epochs", min=1, help="Epochs (each a pass over the training ids)."),
    p: int = typer.Option(8, "--p", "-P", min=2, help="Batch: identities per batch."),
    k: int = typer.Option(4, "--k", "-K", min=1, help="Batch: images per identity (per modality for VI data)."),
    optimizer: str = typer.Option("adam", "--optimizer", help="adam (AGW, lr 3.5e-4) or sgd (VI baseline, lr 0.1)."),
    lr: float = typer.Option(None, "--lr", help="Base learning rate [default: by optimizer]."),
    size: str = typer.Option(None, "--size", help="Input HEIGHTxWIDTH [default: 256x128]; e.g. 128x64 on a CPU."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="AGW's flip, pad-crop and random erasing."),
    workers: int = typer.Option(0, "--workers", min=0, help="Data-loading worker processes."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last finished epoch."),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (default: the global --device)."),
    seed: int = typer.Option(None, "--seed", help="Random seed (default: the global --seed)."),
) -> None:
    """Train a ReID model (AGW, or PEPR-Net's privacy-enhancing objective with `--recipe pepr`).

    Checkpoints every epoch to OUT/last.pt; `--resume` continues a killed run. Under torchrun it trains with DDP.
    """
    from ppvi_cli.train.trainer import TrainConfig, train_reid

    lambdas = tuple(parse_floats(pepr_lambdas, "--pepr-lambdas", "1,0.1,0.001"))
    config = TrainConfig(data=data, out=out, format=fmt_name, anon=anon, recipe=recipe, pepr_lambdas=lambdas,
                         backbone=backbone, dual_stream=dual_stream,
                         pretrained=pretrained, epochs=epochs, p=p, k=k, optimizer=optimizer, lr=lr,
                         input_size=None if size is None else parse_size(size), augment=augment, seed=effective_seed(ctx, seed),
                         device=effective_device(ctx, device), workers=workers, resume=resume)
    with progress(ctx, "train reid") as bar:
        first_step: list[int] = []

        def on_progress(done: int, total: int, info: dict) -> None:
            if not first_step:
                first_step.append(done)
                bar.set_total(total - done + 1)  # a resumed run counts only what is left
            bar.advance()

        summary = train_reid(config, on_progress=on_progress)

    def human(console):
        final = summary["final"] or {}
        table = Table(title=f"train reid -> {summary['checkpoint']}")
        parts = ("id", "triplet", "acc") if summary["params"]["recipe"] == "agw" else ("triplet", "deid", "adv_id")
        for col in ("epoch", "lr", "loss", *parts, "images/s"):
            table.add_column(col, justify="right")
        cells = [fmt(final.get(key)) for key in ("epoch", "loss", *parts, "images_per_s")]
        table.add_row(cells[0], f"{final.get('lr', 0.0):.2e}", *cells[1:])
        console.print(table)
        params = summary["params"]
        console.print(f"{params['backbone']} dual_stream={params['dual_stream']} {params['format']} "
                      f"{summary['train_ids']} ids / {summary['train_images']} images; seed {summary['seed']}; "
                      f"device {summary['device']} x{summary['world_size']}; ppvi {summary['ppvi_version']}, "
                      f"torch {summary['versions'].get('torch')}")

    emit(ctx, summary, human)
