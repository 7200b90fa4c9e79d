"""`ppvi attack`: attackers on a protected dataset (recovery and linkage), the worst case, a CI gate."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ppvi_cli.cli.root import app
from ppvi_cli.cli.choices import Format
from ppvi_cli.cli.common import effective_device, effective_seed, emit, fmt, progress_bars
from ppvi_cli.cli.options import ATTACK, device_option, format_option, seed_option


@app.command("attack")
def attack(
    ctx: typer.Context,
    raw: Path = typer.Option(..., "--raw", help="Raw dataset: its train ids are the attackers' public set, "
                             "its test ids are attacked."),
    anon: Path = typer.Option(..., "--anon", help="Its protected mirror (same relative paths)."),
    fmt_name: Format = format_option(),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: attack.json, attack_grid.png and one sub-folder "
                             "per attacker (recovered/ and attack_last.pt; linkage/reid/)."),
    attackers: list[str] = typer.Option(None, "--attacker", "-a", help="l1, gan, identity, linkage; repeat the "
                                        f"option or give a comma list (default: {ATTACK.show('attackers')})."),
    model: Path = typer.Option(None, "--model", help="The authorized ReID checkpoint: the identity attacker holds it; "
                               "the linkage attacker reports its anon2raw beside its own figures."),
    epochs: int = typer.Option(None, "--epochs", min=1, help="Epochs of the recovery attackers over the public "
                               f"pairs (default: {ATTACK.show('epochs')}, the authors')."),
    arch: str = typer.Option(None, "--arch", help="auto (the deepest UNet the size allows, up to unet128), unet32, "
                             f"unet64, unet128 or unet256 (default: {ATTACK.show('arch')})."),
    ngf: int = typer.Option(None, "--ngf", min=1, help="UNet (and gan discriminator) base width "
                            f"(default: {ATTACK.show('ngf')}, as pix2pix)."),
    batch_size: int = typer.Option(None, "--batch-size", min=1,
                                   help=f"Pairs per training step (default: {ATTACK.show('batch_size')})."),
    size: str = typer.Option(None, "--size", help="Working size HEIGHTxWIDTH for training and measuring "
                             f"(default: {ATTACK.show('size')})."),
    lr: float = typer.Option(None, "--lr", help="Adam learning rate of the recovery attackers "
                             f"(default: {ATTACK.show('lr')}, the authors')."),
    lambda_l1: float = typer.Option(None, "--lambda-l1", help="gan: weight of L1 beside the adversarial term "
                                    f"(default: {ATTACK.show('lambda_l1')}, pix2pix)."),
    lambda_id: float = typer.Option(None, "--lambda-id", help="identity: weight of the feature term (1 - cosine) "
                                    f"beside L1 (default: {ATTACK.show('lambda_id')})."),
    refine_steps: int = typer.Option(None, "--refine-steps", min=0, help="identity: test-time Adam steps per image "
                                     "towards the protected image's authorized feature "
                                     f"(default: {ATTACK.show('refine_steps')}, none)."),
    refine_lr: float = typer.Option(None, "--refine-lr", help="identity: rate of those steps on [-1, 1] pixels "
                                    f"(default: {ATTACK.show('refine_lr')})."),
    linkage_epochs: int = typer.Option(None, "--linkage-epochs", min=1, help="linkage: ReID training epochs "
                                       f"(default: {ATTACK.show('linkage_epochs')}, AGW's)."),
    linkage_backbone: str = typer.Option(None, "--linkage-backbone", help="linkage: its ReID backbone, resnet50, "
                                         f"resnet18 or mobilenetv2 (default: {ATTACK.show('linkage_backbone')})."),
    linkage_pretrained: str = typer.Option(None, "--linkage-pretrained", help="linkage: imagenet (torchvision's "
                                           "weights), none, or a torchvision state-dict file "
                                           f"(default: {ATTACK.show('linkage_pretrained')})."),
    linkage_p: int = typer.Option(None, "--linkage-p", min=2,
                                  help=f"linkage: ids per PK batch (default: {ATTACK.show('linkage_p')})."),
    linkage_k: int = typer.Option(None, "--linkage-k", min=1,
                                  help=f"linkage: images per id (default: {ATTACK.show('linkage_k')})."),
    workers: int = typer.Option(None, "--workers", min=0,
                                help=f"Image-decoding processes in training (default: {ATTACK.show('workers')})."),
    resume: bool = typer.Option(False, "--resume", help="Continue each attacker's checkpoint if there is one (same "
                                "settings; --epochs may grow); start afresh otherwise."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace files at this run's output paths that no "
                                   "record of it covers (e.g. an older ppvi's attack), or take over a folder "
                                   "another attack run owns."),
    max_ssim: float = typer.Option(None, "--max-ssim", help="Gate: exit 1 if a modality's worst-case recovered SSIM "
                                   "exceeds this."),
    max_psnr: float = typer.Option(None, "--max-psnr", help="Gate: exit 1 if a modality's worst-case recovered PSNR "
                                   "(dB) exceeds this."),
    max_rank1: float = typer.Option(None, "--max-rank1", help="Gate: exit 1 if the linkage rank-1 (percent) of a "
                                    "query modality exceeds this."),
    device: str = device_option(),
    seed: int = seed_option(),
) -> None:
    """Attack a protection: every attacker learns on the public ids' (protected, original) pairs and is scored
    on the test ids; privacy is the worst case over the attackers run.

    l1: the papers' attacker, a pix2pix UNet trained with L1 to undo the protection.

    gan: pix2pix proper, the UNet against a conditional PatchGAN discriminator, adversarial loss + 100 x L1.

    identity: holds the authorized ReID model (--model: a stolen copy, or the service answering with features
    and gradients); trains with L1 + a term pulling the recovery's authorized features to the original's, and
    with --refine-steps refines each recovery towards the protected image's authorized feature (PixelFade
    keeps it close to the original's).

    linkage: no authorized model; trains its own ReID model on the public ids' raw and protected images and
    matches protected test images (query) to raw photos of the test ids (gallery); rank-1/mAP/mINP beside
    chance and, with --model, the authorized model's anon2raw (utility by design).

    Recovery scores: SSIM and PSNR vs the originals, of the recovered and of the protected images (lower =
    more private), means per modality at the working size on 8-bit pixels; recovered images mirror the raw
    paths under OUT/ATTACKER/recovered (PNG content). Checkpoints are written every epoch; --resume ends
    with the weights of an uninterrupted run. The gates apply to every modality's worst case: exit 1 when
    one is above its limit.
    """
    from ppvi_cli.attack.run import AttackConfig, check_gate, parse_attackers, run_attack
    from ppvi_cli.validate import parse_size

    given = {"epochs": epochs, "arch": arch, "ngf": ngf, "batch_size": batch_size, "lr": lr, "workers": workers,
             "size": parse_size(size) if size is not None else None, "lambda_l1": lambda_l1, "lambda_id": lambda_id,
             "refine_steps": refine_steps, "refine_lr": refine_lr, "linkage_epochs": linkage_epochs,
             "linkage_backbone": linkage_backbone, "linkage_pretrained": linkage_pretrained,
             "linkage_p": linkage_p, "linkage_k": linkage_k}
    config = AttackConfig(raw=raw, anon=anon, out=out, format=fmt_name, attackers=parse_attackers(attackers),
                          model=model, device=effective_device(ctx, device), seed=effective_seed(ctx, seed),
                          resume=resume, overwrite=overwrite, max_ssim=max_ssim, max_psnr=max_psnr, max_rank1=max_rank1,
                          **{k: v for k, v in given.items() if v is not None})
    with progress_bars(ctx) as on_progress:
        summary = run_attack(config, on_progress=on_progress)
    emit(ctx, summary, lambda console: _tables(console, summary))
    check_gate(summary)


def _db(value) -> str:
    return "inf" if value is None else fmt(value, 2)  # JSON null: identical images


def _pct(value) -> str:
    return "-" if value is None else fmt(value, 1)


def _tables(console, summary: dict) -> None:
    method = summary.get("method") or "?"
    sections = summary["attackers"]
    recovery = {n: s for n, s in sections.items() if s["kind"] == "recovery"}
    if recovery:
        table = Table(title=f"recovery attackers on {method} ({summary['anon']})")
        for col in ("attacker", "modality", "images", "recovered SSIM", "recovered PSNR", "protected SSIM",
                    "protected PSNR"):
            table.add_column(col, justify="left" if col in ("attacker", "modality") else "right")
        for name, section in recovery.items():
            counts = {}
            for row in section["images"]:
                counts[row["modality"]] = counts.get(row["modality"], 0) + 1
            for modality, mean in [*section["mean"].items(), ("all", section["overall"])]:
                table.add_row(name, modality, str(counts.get(modality, len(section["images"]))), fmt(mean["ssim"]),
                              _db(mean["psnr"]), fmt(mean["protected_ssim"]), _db(mean["protected_psnr"]))
        console.print(table)
        for name, section in recovery.items():
            history = section["history"]
            if history:
                terms = ", ".join(f"{k} {history[0][k]:.4f} -> {history[-1][k]:.4f}"
                                  for k in history[0] if k != "epoch")
                console.print(f"{name}: epochs 1 -> {history[-1]['epoch']}: {terms} (l1 on [-1, 1] pixels)")
            if "refine" in section:
                overall = section["overall"]
                console.print(f"{name}: before its {section['refine']['steps']} refinement steps SSIM "
                              f"{fmt(overall['network_ssim'])}, PSNR {_db(overall['network_psnr'])}")
    link = sections.get("linkage")
    if link:
        table = Table(title=f"linkage attacker on {method}: protected query -> raw gallery ({link['protocol']}), %")
        for col in ("query modality", "queries", "rank-1", "mAP", "mINP", "chance rank-1 / mAP",
                    "authorized anon2raw rank-1 / mAP"):
            table.add_column(col, justify="left" if col == "query modality" else "right")
        for modality, figures in link["mean"].items():
            chance, auth = link["chance"]["mean"][modality], (link["authorized"] or {}).get("mean", {}).get(modality)
            table.add_row(modality, str(figures["valid_queries"]), _pct(figures["rank1"]), _pct(figures["mAP"]),
                          _pct(figures["mINP"]), f"{_pct(chance['rank1'])} / {_pct(chance['mAP'])}",
                          f"{_pct(auth['rank1'])} / {_pct(auth['mAP'])}" if auth else "-")
        console.print(table)
        console.print(f"linkage: {link['model']['backbone']} ({link['model']['pretrained']}), "
                      f"{link['model']['epochs']} epochs on the public ids' raw + protected images; {link['split']}")
    worst = Table(title="worst case over the attackers (the privacy; the gates apply to it)")
    for col in ("modality", "recovered SSIM", "recovered PSNR", "linkage rank-1 %"):
        worst.add_column(col, justify="left" if col == "modality" else "right")
    by = summary["worst_by"]
    for modality, mean in [*summary["mean"].items(), ("all", summary["overall"])]:
        cell = lambda key, show: f"{show(mean[key])} ({by[modality][key]})" if key in mean else "-"  # noqa: E731
        worst.add_row(modality, cell("ssim", fmt), cell("psnr", _db), cell("rank1", _pct))
    console.print(worst)
    run = summary["run"]
    params = run["params"]
    console.print(f"public {summary['public']['images']} pairs ({summary['public']['ids']} ids), test "
                  f"{summary['test']['images']} images; {summary['arch']}, ngf {params['ngf']}, size "
                  f"{params['size'][0]}x{params['size'][1]}, lr {params['lr']}, batch {params['batch_size']}, "
                  f"seed {run['seed']}; ppvi {run['ppvi_version']}, torch {run['versions'].get('torch', '?')}")
    for note in summary["notes"]:
        console.print(f"note: {note}")
    for kind, path in summary["outputs"].items():
        if path:
            console.print(f"{kind}: {path}")
    for failure in summary["gate"]["failures"]:
        console.print(f"[red]gate[/red] {failure}", markup=True)
