"""`ppvi train ...`: the training command group (ReID models, generators)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ppvi_cli.cli.root import app
from ppvi_cli.cli.choices import Backbone, Format, choice_option
from ppvi_cli.cli.common import effective_device, effective_seed, emit, fmt, given, parse_floats, progress_bars
from ppvi_cli.cli.options import (MODEL, TRAIN, default_note, device_option, format_option, module_constant,
                                  seed_option, show)
from ppvi_cli.errors import PPVIError
from ppvi_cli.validate import parse_size

train_app = typer.Typer(help="Train models: ReID (`train reid`) and anonymization generators (`train generator`).",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")
LR = module_constant(TRAIN.module, "DEFAULT_LR")  # by optimizer
PEPR_LAMBDAS = TRAIN.show("pepr_lambdas")  # "1,0.1,0.001", the paper's


@train_app.command("reid")
def reid(
    ctx: typer.Context,
    data: Path = typer.Option(None, "--data", "-d", help="Training dataset root (train split; sysu: train+val); "
                              "required unless --config gives it."),
    out: Path = typer.Option(None, "--out", "-o", help="Run folder: last.pt, run.json, train_log.jsonl, "
                             "summary.json; required unless --config gives it."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML file (keys: the names under \"params\" in a "
                                "run.json) or a run's own run.json: its values replace the defaults, and every "
                                "flag given here replaces its value."),
    fmt_name: Format = format_option(TRAIN["format"]),
    anon: Path = typer.Option(None, "--anon", help="Anonymized mirror of --data: hybrid training L(x) + L(anon(x))."),
    recipe: str = typer.Option(TRAIN["recipe"], "--recipe", help="agw (CE-LS + WRT triplet + center) or pepr "
                               "(PEPR-Net: triplet + De-ID decoder + adversarial identity)."),
    pepr_lambdas: str = typer.Option(PEPR_LAMBDAS, "--pepr-lambdas",
                                     help="pepr: weights of triplet, De-ID and Adv-ID (Eq. 4); the default is the "
                                     "paper's."),
    backbone: Backbone = choice_option(TRAIN["backbone"], "--backbone", help="ReID backbone (the default is AGW's)."),
    pretrained: str = typer.Option(TRAIN["pretrained"], "--pretrained",
                                   help="imagenet, none, or a torchvision state dict."),
    dual_stream: bool = typer.Option(None, "--dual-stream/--single-stream",
                                     help=f"Per-modality stems {default_note('dual for sysu and regdb')}."),
    epochs: int = typer.Option(TRAIN["epochs"], "--epochs", min=1, help="Epochs (each a pass over the training ids)."),
    p: int = typer.Option(TRAIN["p"], "--p", "-P", min=2, help="Batch: identities per batch."),
    k: int = typer.Option(TRAIN["k"], "--k", "-K", min=1,
                          help="Batch: images per identity (per modality for VI data)."),
    optimizer: str = typer.Option(TRAIN["optimizer"], "--optimizer", help=f"adam (AGW, lr {show(LR['adam'])}) or sgd "
                                  f"(VI baseline, lr {show(LR['sgd'])})."),
    lr: float = typer.Option(None, "--lr", help=f"Base learning rate {default_note('by optimizer')}."),
    size: str = typer.Option(None, "--size", help=f"Input HEIGHTxWIDTH {MODEL.note('input_size')}; e.g. 128x64 "
                             "on a CPU."),
    augment: bool = typer.Option(TRAIN["augment"], "--augment/--no-augment",
                                 help="AGW's flip, pad-crop and random erasing."),
    workers: int = typer.Option(TRAIN["workers"], "--workers", min=0, help="Data-loading worker processes."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last finished epoch."),
    device: str = device_option(),
    seed: int = seed_option(),
) -> None:
    """Train a ReID model (AGW, or PEPR-Net's privacy-enhancing objective with `--recipe pepr`).

    Checkpoints every epoch to OUT/last.pt; `--resume` continues a killed run. Under torchrun it trains with DDP.
    `--config runs/a/run.json --out runs/b` replays run a into b; add flags to vary it.
    """
    from ppvi_cli.train.config_file import read_config
    from ppvi_cli.train.reid.trainer import TrainConfig, train_reid

    # TrainConfig field -> (function parameter, value as the field takes it)
    flags = {"data": ("data", data), "out": ("out", out), "format": ("fmt_name", fmt_name), "anon": ("anon", anon),
             "recipe": ("recipe", recipe),
             "pepr_lambdas": ("pepr_lambdas", tuple(parse_floats(pepr_lambdas, "--pepr-lambdas", PEPR_LAMBDAS))),
             "backbone": ("backbone", backbone), "pretrained": ("pretrained", pretrained),
             "dual_stream": ("dual_stream", dual_stream), "epochs": ("epochs", epochs), "p": ("p", p), "k": ("k", k),
             "optimizer": ("optimizer", optimizer), "lr": ("lr", lr),
             "input_size": ("size", None if size is None else parse_size(size)), "augment": ("augment", augment),
             "workers": ("workers", workers), "device": ("device", device), "seed": ("seed", seed)}
    values = read_config(config, TrainConfig, exclude=("resume",)) if config is not None else {}
    values.update({field: value for field, (name, value) in flags.items() if given(ctx, name)})
    root = ctx.find_root()
    for field in ("device", "seed"):  # the global option, when given, beats the file but not the command's own
        if field not in values or (given(root, field) and not given(ctx, field)):
            values[field] = effective_device(ctx, None) if field == "device" else effective_seed(ctx, None)
    missing = [f"--{field}" for field in ("data", "out") if values.get(field) is None]
    if missing:
        raise PPVIError(f"{' and '.join(missing)} missing: give them on the command line or in --config")
    config = TrainConfig(**values, resume=resume)
    with progress_bars(ctx) as on_progress:
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
