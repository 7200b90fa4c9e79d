"""`ppvi train generator`, `ppvi pose`, `ppvi recover` and `ppvi export`: learned anonymization
around its generators."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ppvi_cli.cli.root import app
from ppvi_cli.cli.choices import Backbone, Format, choice_option
from ppvi_cli.cli.common import effective_device, effective_seed, emit, info_line, progress_bars
from ppvi_cli.cli.options import (GENERATOR, PPA, SECUREREID, default_note, device_option, format_option,
                                  seed_option)
from ppvi_cli.cli.train import train_app
from ppvi_cli.errors import PPVIError
from ppvi_cli.validate import parse_size

RECIPES = ("securereid", "ppa")
# Options that belong to one recipe: option -> recipe.
_RECIPE_ONLY = {"--teacher": "ppa", "--teacher-epochs": "ppa", "--pose": "ppa", "--no-kpr": "ppa",
                "--no-dcma": "ppa", "--no-upgrade": "securereid", "--hold-out": "securereid"}
UNET_SIDE = 2 ** GENERATOR["num_downs"]  # the default UNet's name: unet_128 for 7 downsamplings


@train_app.command("generator")
def train_generator(
    ctx: typer.Context,
    recipe: str = typer.Option(..., "--recipe", help="securereid (reversible, supervision upgradation) or ppa "
                               "(visible-infrared: dual-stream, KPR, DCMA)."),
    data: Path = typer.Option(..., "--data", help="Training dataset root (its train split is used)."),
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoint.pt, logs, reid.pt."),
    data_format: Format = format_option(),
    init: str = typer.Option(GENERATOR["init"], "--init", help="Initial supervision: mosaic, blur or noise."),
    epochs: int = typer.Option(None, "--epochs", min=1,
                               help=f"Epochs {GENERATOR.note('epochs')}; the papers' schedule scales."),
    teacher: Path = typer.Option(None, "--teacher", help="ppa: frozen AGW teacher (a ReID checkpoint); absent: "
                                 "trained first in this run."),
    teacher_epochs: int = typer.Option(None, "--teacher-epochs", min=1, help="ppa: epochs of the in-run teacher "
                                       f"{default_note('epochs/4')}."),
    pose: str = typer.Option(None, "--pose", help="ppa: pose expert, groundtruth or yolo[:WEIGHTS] "
                             f"{PPA.note('pose')}."),
    no_kpr: bool = typer.Option(False, "--no-kpr", help="ppa: drop keypoint preservation (ablation)."),
    no_dcma: bool = typer.Option(False, "--no-dcma", help="ppa: drop cross-modal offset alignment (ablation)."),
    no_upgrade: bool = typer.Option(False, "--no-upgrade", help="securereid: keep the desensitised supervision."),
    hold_out: bool = typer.Option(None, "--hold-out/--no-hold-out", help="securereid: hold out "
                                  f"{SECUREREID['val_fraction']:.0%} of the ids and log the upgrade checks (with "
                                  f"G_Y's recovery) {default_note('only when upgrading')}; "
                                  "with --no-upgrade, trains on the same ids as an upgrading run."),
    input_size: str = typer.Option(None, "--input-size",
                                   help=f"Training size HEIGHTxWIDTH {GENERATOR.note('input_size')}."),
    num_downs: int = typer.Option(None, "--num-downs",
                                  help=f"UNet depth {GENERATOR.note('num_downs', f', unet_{UNET_SIDE}')}."),
    ngf: int = typer.Option(None, "--ngf", help=f"Generator width {GENERATOR.note('ngf')}."),
    ndf: int = typer.Option(None, "--ndf", help=f"Discriminator width {GENERATOR.note('ndf')}."),
    backbone: Backbone = choice_option(None, "--backbone", help=f"ReID backbone {GENERATOR.note('backbone')}."),
    pretrained: str = typer.Option(None, "--pretrained", help="ReID backbone weights: imagenet, none or a path."),
    p: int = typer.Option(None, "--p", min=1, help=f"Identities per batch \\[securereid {SECUREREID.show('p')}, "
                          f"ppa {PPA.show('p')}]."),
    k: int = typer.Option(None, "--k", min=1,
                          help=f"Images per identity (per modality for ppa) {GENERATOR.note('k')}."),
    lr: float = typer.Option(None, "--lr", help=f"Peak learning rate {GENERATOR.note('lr')}."),
    max_steps: int = typer.Option(None, "--max-steps", min=1, help="Cap the steps of each epoch (quick runs)."),
    workers: int = typer.Option(2, "--workers", min=0, help="Data loading processes."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint."),
    seed: int = seed_option(),
    device: str = device_option(),
) -> None:
    """Train an anonymization generator with its ReID model (SecureReID or PPA), checkpointing every epoch."""
    if recipe not in RECIPES:
        raise PPVIError(f"unknown --recipe {recipe!r} (choices: {', '.join(RECIPES)})")
    given = {"--teacher": teacher, "--teacher-epochs": teacher_epochs, "--pose": pose, "--no-kpr": no_kpr or None,
             "--no-dcma": no_dcma or None, "--no-upgrade": no_upgrade or None, "--hold-out": hold_out}
    for flag, value in given.items():
        if value is not None and _RECIPE_ONLY[flag] != recipe:
            raise PPVIError(f"{flag} applies to --recipe {_RECIPE_ONLY[flag]}, not {recipe}")
    shared = {"epochs": epochs, "input_size": parse_size(input_size, "--input-size") if input_size else None, "num_downs": num_downs,
              "ngf": ngf, "ndf": ndf, "backbone": backbone, "pretrained": pretrained, "p": p, "k": k, "lr": lr,
              "max_steps": max_steps}
    kwargs = {key: value for key, value in shared.items() if value is not None}
    kwargs.update(data=str(data), out=str(out), format=data_format, init=init, workers=workers,
                  seed=effective_seed(ctx, seed), device=effective_device(ctx, device))
    if recipe == "securereid":
        from ppvi_cli.train.generators.securereid import SecureReIDConfig, train_securereid

        config, train = SecureReIDConfig(**kwargs, upgrade=not no_upgrade, hold_out=hold_out), train_securereid
    else:
        from ppvi_cli.train.generators.ppa import PPAConfig, train_ppa

        extra = {"teacher": str(teacher) if teacher else None, "teacher_epochs": teacher_epochs, "pose": pose}
        config = PPAConfig(**kwargs, **{k_: v for k_, v in extra.items() if v is not None}, kpr=not no_kpr,
                           dcma=not no_dcma)
        train = train_ppa
    with progress_bars(ctx, echo=info_line) as on_progress:  # and the log lines
        summary = train(config, resume=resume, on_progress=on_progress)

    def human(console):
        rows = summary["epochs"][-6:]  # the last epochs, one column each: losses are many, epochs few
        table = Table(title=f"train generator --recipe {recipe} -> {summary['checkpoint']} (mean per epoch)")
        table.add_column("epoch")
        for row in rows:
            table.add_column(str(row["epoch"]), justify="right")
        for key in (k for k in (rows[-1] if rows else {}) if k != "epoch"):
            table.add_row(key, *(f"{row[key]:.4g}" if key in row else "-" for row in rows))
        console.print(table)
        for check in summary.get("upgrade_checks", []):
            console.print(f"epoch {check['epoch']}: psnr {check['psnr_anon']:.2f} "
                          f"(desensitised {check['psnr_des']:.2f}), "
                          f"ssim {check['ssim_anon']:.3f} ({check['ssim_des']:.3f}), rank-1 {check['rank1_anon']:.3f} "
                          f"(best {check['best_rank1_before']:.3f}) -> {'upgraded' if check['upgraded'] else 'kept'}")
        console.print(f"ReID model: {summary['reid_checkpoint']}; seed {summary['seed']}")
        console.print("params: " + ", ".join(f"{k}={v}" for k, v in summary["params"].items()))
        console.print("versions: " + ", ".join(f"{k} {v}" for k, v in summary["versions"].items()))

    emit(ctx, summary, human)


@app.command("pose")
def pose_maps(
    ctx: typer.Context,
    data: Path = typer.Option(..., "--data", help="Dataset (or image folder) to run the pose expert on."),
    out: Path = typer.Option(..., "--out", help="Folder for the guidance maps (PNG, mirrored paths)."),
    data_format: Format = format_option(),
    pose: str = typer.Option("groundtruth", "--pose", help="groundtruth, yolo or yolo:PATH_OR_NAME."),
    radius: float = typer.Option(5.0, "--radius", min=0, help="Map radius R in pixels of each image."),
    device: str = device_option(),
) -> None:
    """Render PPA's keypoint guidance maps and report the pose expert's detection rate per modality."""
    from ppvi_cli.pose.experts import render_pose_maps

    with progress_bars(ctx) as on_progress:
        summary = render_pose_maps(data, out, pose, data_format, radius, effective_device(ctx, device),
                                   on_progress=on_progress)

    def human(console):
        table = Table(title=f"pose {pose} -> {summary['out']} (R = {radius:g} px)")
        for col in ("modality", "images", "detected", "rate"):
            table.add_column(col, justify="left" if col == "modality" else "right")
        for modality, row in summary["detection"].items():
            table.add_row(modality, str(row["images"]), str(row["detected"]), f"{100 * row['rate']:.2f}%")
        console.print(table)
        for item in summary["unreadable"]:
            console.print(f"unreadable {item['path']}: {item['reason']}")
        console.print("versions: " + ", ".join(f"{k} {v}" for k, v in summary["versions"].items()))

    emit(ctx, summary, human)


@app.command("recover")
def recover(
    ctx: typer.Context,
    checkpoint: Path = typer.Option(..., "--checkpoint", help="checkpoint.pt of a SecureReID run."),
    input_root: Path = typer.Option(..., "--input", "-i", help="Protected folder (output of anonymize --method "
                                    "generator)."),
    output_root: Path = typer.Option(..., "--output", "-o", help="Mirror folder for the recovered images."),
    raw: Path = typer.Option(None, "--raw", help="Raw dataset the input mirrors: report PSNR/SSIM recovered vs raw."),
    data_format: Format = format_option(what="Input layout"),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per batch."),
    device: str = device_option(),
) -> None:
    """Authorized reversal: run SecureReID's recovery generator over a protected folder."""
    from ppvi_cli.anonymize.generator import recover_dataset

    with progress_bars(ctx) as on_progress:
        summary = recover_dataset(checkpoint, input_root, output_root, raw, data_format,
                                  effective_device(ctx, device), batch_size, on_progress=on_progress)

    def human(console):
        console.print(f"recovered {summary['written']} written, {summary['skipped']} skipped, "
                      f"{len(summary['failed'])} failed -> {summary['output']} (manifest {summary['manifest']})")
        quality = summary.get("quality")
        if quality and quality.get("images"):
            console.print(f"recovered vs raw over {quality['images']} images: PSNR {quality['psnr']:.2f} dB, "
                          f"SSIM {quality['ssim']:.4f} (min {quality['psnr_min']:.2f} dB / {quality['ssim_min']:.4f})")
        model = summary["model"]
        console.print(f"checkpoint {model['path']} (G_Y weights {model['weights_sha256'][:12]}); versions: "
                      + ", ".join(f"{k} {v}" for k, v in summary["versions"].items()))

    emit(ctx, summary, human)
    if summary["failed"]:
        from ppvi_cli.errors import GateFailed

        raise GateFailed(f"{len(summary['failed'])} image(s) could not be read (listed in {summary['manifest']})")


@app.command("export")
def export(
    ctx: typer.Context,
    checkpoint: Path = typer.Option(..., "--checkpoint", help="checkpoint.pt of a `ppvi train generator` run; with "
                                    "--onnx, a ReID checkpoint (last.pt of `ppvi train reid`, reid.pt)."),
    out: Path = typer.Option(..., "--out", "-o", help="File to write (e.g. weights/my_generator.pt, reid.onnx)."),
    half: bool = typer.Option(False, "--half", help="Store the weights as float16 (half the size; cast back on load)."),
    onnx: bool = typer.Option(False, "--onnx", help="Write a ReID model as ONNX for deployment (pixels in [0, 1] "
                              "-> BNNeck feature), checked with onnxruntime against PyTorch (needs ppvi[onnx])."),
) -> None:
    """Export a trained model: a generator run's inference networks, or a ReID model as ONNX (--onnx).

    Without --onnx: only the inference networks (SecureReID: G_X, G_Y; PPA: G) in a small file that
    `anonymize --method generator` and `recover` read; it cannot be resumed. With --onnx: the ReID
    model as an ONNX graph for deployment, written once onnxruntime's features match PyTorch's (the
    largest difference is printed).
    """
    if onnx:
        if half:
            raise PPVIError("--half applies to generator exports, not --onnx")
        from ppvi_cli.models.onnx_export import export_onnx

        summary = export_onnx(checkpoint, out)

        def human(console):
            check = summary["check"]
            console.print(f"ONNX opset {summary['opset']}: {', '.join(summary['inputs'])} -> feature "
                          f"[B, {summary['feat_dim']}] at {summary['input_size'][0]}x{summary['input_size'][1]} -> "
                          f"{summary['out']} ({summary['bytes'] / 2**20:.1f} MiB, "
                          f"sha256 {summary['file_sha256'][:12]})")
            console.print(f"check ({check['runtime']}, {check['images']} seeded images): max |onnx - torch| = "
                          f"{check['max_abs_diff']:.3g} (features up to {check['max_abs_feature']:.3g})")

        emit(ctx, summary, human)
        return
    from ppvi_cli.models.generator_checkpoint import export_run

    summary = export_run(checkpoint, out, half=half)

    def human(console):
        console.print(f"{summary['recipe']} epoch {summary['epoch']}: {', '.join(summary['nets'])} -> {summary['out']} "
                      f"({summary['bytes'] / 2**20:.1f} MiB, sha256 {summary['file_sha256'][:12]})")

    emit(ctx, summary, human)
