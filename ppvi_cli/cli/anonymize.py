"""`ppvi anonymize`: protect a dataset into a mirrored folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ppvi_cli.cli.root import app
from ppvi_cli.cli.choices import Format, Method, choice_option
from ppvi_cli.cli.common import effective_device, effective_seed, emit, fmt, progress_bars
from ppvi_cli.cli.options import (BLUR, MOSAIC, NOISE, PIXELFADE, device_option, format_option, module_constant,
                                  seed_option, show)
from ppvi_cli.data.imageio import MAX_PIXELS
from ppvi_cli.errors import GateFailed, PPVIError

PF = "PixelFade"
AUTO_EPS = module_constant(PIXELFADE.module, "AUTO_EPS")
PRESETS = " or ".join(f"{name} ({show(step)})"
                      for name, step in module_constant(PIXELFADE.module, "LARGE_STEP_PRESETS").items())


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def method_options(method: str, given: dict) -> dict:
    """The options given on the command line (not None) that `method` takes; refuse the others."""
    from ppvi_cli.anonymize.methods import method_fields

    given = {k: v for k, v in given.items() if v is not None}
    known = method_fields(method)
    foreign = sorted(set(given) - known)
    if foreign:
        takes = ", ".join(_flag(k) for k in sorted(known)) or "no options"
        raise PPVIError(f"--method {method} does not take {', '.join(_flag(k) for k in foreign)} (it takes: {takes})")
    return given


@app.command("anonymize")
def anonymize(
    ctx: typer.Context,
    method: Method = choice_option(..., "--method", "-m", help="Protection method (its own options below)."),
    input_root: Path = typer.Option(..., "--input", "-i", help="Dataset (or any image folder) to protect; only read."),
    output_root: Path = typer.Option(..., "--output", "-o", help="Mirror folder to write; must be outside --input."),
    fmt_name: Format = format_option(what="Input layout"),
    block: int = typer.Option(None, "--block", help=f"mosaic: tile size in pixels {MOSAIC.note('block')}."),
    radius: float = typer.Option(None, "--radius",
                                 help=f"blur: Gaussian radius (std) in pixels {BLUR.note('radius')}."),
    sigma: float = typer.Option(None, "--sigma", help=f"noise: std on [0, 1] pixels {NOISE.note('sigma')}."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="generator: the trained generator checkpoint."),
    model: Path = typer.Option(None, "--model", rich_help_panel=PF,
                               help="The authorized ReID checkpoint (ppvi train reid) whose features are kept."),
    steps: int = typer.Option(None, "--steps", rich_help_panel=PF,
                              help=f"Optimisation steps T {PIXELFADE.note('steps')}."),
    masks: int = typer.Option(None, "--masks", rich_help_panel=PF,
                              help=f"Disjoint replacement sets I {PIXELFADE.note('masks')}."),
    eps: str = typer.Option(None, "--eps", rich_help_panel=PF,
                            help="Feature constraint: a mean squared feature difference (the paper's is the default), "
                                 f"or auto ({show(AUTO_EPS)} of each image's feature energy) {PIXELFADE.note('eps')}."),
    eps_scale: str = typer.Option(None, "--eps-scale", rich_help_panel=PF,
                                  help="What --eps is measured in: absolute, or energy (a fraction of each image's "
                                       f"feature energy mean(f^2)) {PIXELFADE.note('eps_scale')}."),
    alpha: float = typer.Option(None, "--alpha", rich_help_panel=PF,
                                help=f"Momentum decay {PIXELFADE.note('alpha')}."),
    beta: float = typer.Option(None, "--beta", rich_help_panel=PF,
                               help=f"Step while the constraint holds, normalised units {PIXELFADE.note('beta')}."),
    large_step: float = typer.Option(None, "--large-step", rich_help_panel=PF,
                                     help="Step when it does not, and in the final steps "
                                          f"{PIXELFADE.note('large_step', ', see --preset')}."),
    preset: str = typer.Option(None, "--preset", rich_help_panel=PF,
                               help=f"--large-step for the kind of data: {PRESETS}."),
    init_steps: int = typer.Option(None, "--init-steps", rich_help_panel=PF,
                                   help=f"Warm-up steps that always replace {PIXELFADE.note('init_steps')}."),
    final_steps: int = typer.Option(None, "--final-steps", rich_help_panel=PF,
                                    help=f"Last steps without replacement {PIXELFADE.note('final_steps')}."),
    work_size: str = typer.Option(None, "--work-size", rich_help_panel=PF,
                                  help="image: optimise and store at each image's size; model: at the model's "
                                       f"input size {PIXELFADE.note('work_size')}."),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", rich_help_panel=PF,
                                       help=f"bfloat16 autocast for the optimisation {PIXELFADE.note('amp')}."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", rich_help_panel=PF,
                                                 help=f"NHWC memory for the model {PIXELFADE.note('channels_last')}."),
    min_met: float = typer.Option(None, "--min-met", rich_help_panel=PF,
                                  help="Gate: exit 1 when fewer than this fraction of the files met eps."),
    save_float: bool = typer.Option(False, "--save-float", rich_help_panel=PF,
                                    help="Also write each result as float32 <name>.npy before 8-bit rounding."),
    seed: int = seed_option(),
    shard: str = typer.Option("0/1", "--shard", help="Process shard i of n (i/n); run n processes for the whole set."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per batch."),
    device: str = device_option("Where a method with a model runs"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace files at the output's paths that no record "
                                   "of this run covers (never done silently: without it they are refused)."),
    max_pixels: int = typer.Option(MAX_PIXELS, "--max-pixels", min=1, help="Refuse (per file) images larger than "
                                   "this many pixels: decompression bombs."),
) -> None:
    """Protect every image of --input into --output, path for path.

    The output is a run folder: its identity (method, parameters, seed, input, model) is recorded in
    .ppvi/ before the first file, each file counts as done only when the record lists it with its
    SHA-256, and a re-run resumes by verifying those hashes. Files in the output that no record of
    this run covers are refused (exit 2) unless --overwrite; another run into the same output is
    refused. manifest.json records method, parameters, seed, model checksum, versions and per-file
    status and hash (and, for pixelfade, each file's feature distance as stored). pixelfade and the
    generators write 8-bit PNG content under the original file names. Every image file under
    --input is protected (those outside the split files too) or listed with its reason, which makes
    the exit code 1.
    """
    from ppvi_cli.anonymize.constraint import check_min_met, min_met_failures
    from ppvi_cli.anonymize.methods import build_method
    from ppvi_cli.anonymize.runner import anonymize_dataset, anonymize_torchrun, parse_shard
    from ppvi_cli.distributed import process_device, process_group, torchrun_world

    check_min_met(min_met)
    if min_met is not None and method != "pixelfade":
        raise PPVIError(f"--min-met gates PixelFade's feature constraint; --method {method} has none")

    if preset is not None:
        from ppvi_cli.anonymize.pixelfade import LARGE_STEP_PRESETS

        if preset not in LARGE_STEP_PRESETS:
            raise PPVIError(f"unknown --preset {preset!r} (choices: {', '.join(LARGE_STEP_PRESETS)})")
        if large_step is not None:
            raise PPVIError("give --large-step or --preset, not both")
        large_step = LARGE_STEP_PRESETS[preset]
    if eps == "auto" and eps_scale is not None:
        raise PPVIError("--eps auto sets its own scale (energy): drop --eps-scale, or give --eps as a number")
    given = {"block": block, "radius": radius, "sigma": sigma, "checkpoint": checkpoint and str(checkpoint),
             "model": model and str(model), "steps": steps, "masks": masks, "eps": eps, "eps_scale": eps_scale,
             "alpha": alpha, "beta": beta, "large_step": large_step, "init_steps": init_steps,
             "final_steps": final_steps, "work_size": work_size, "amp": amp, "channels_last": channels_last}
    protector = build_method(method, **method_options(method, given))
    world = torchrun_world()
    if world is not None and shard != "0/1":
        raise PPVIError("under torchrun each rank takes shard RANK of WORLD_SIZE: drop --shard")
    options = dict(fmt=fmt_name, seed=effective_seed(ctx, seed), batch_size=batch_size,
                   device=process_device(effective_device(ctx, device), world), save_float=save_float,
                   overwrite=overwrite, max_pixels=max_pixels)
    with process_group(world), progress_bars(ctx) as on_progress:
        options.update(on_progress=on_progress)
        if world is None:
            summary = anonymize_dataset(protector, input_root, output_root, shard=parse_shard(shard), **options)
        else:
            summary = anonymize_torchrun(protector, input_root, output_root, world, **options)
    if min_met is not None:
        failures = min_met_failures(summary["stats"].get("constraint"), min_met,
                                    summary["written"] + summary["skipped"])
        summary["gate"] = {"min_met": min_met, "passed": not failures, "failures": failures}

    def human(console):
        table = Table(title=f"anonymize --method {method} -> {summary['output']}")
        for col in ("written", "skipped", "failed"):
            table.add_column(col, justify="right")
        table.add_row(str(summary["written"]), str(summary["skipped"]), str(len(summary["failed"])))
        console.print(table)
        if summary["stats"]:
            stats = Table(title=f"per-file stats over {summary['stats']['files']} written files")
            for col in ("stat", "mean", "max"):
                stats.add_column(col, justify="right" if col != "stat" else "left")
            for key, mean in summary["stats"]["mean"].items():
                stats.add_row(key, fmt(mean), fmt(summary["stats"]["max"][key]))
            console.print(stats)
        if summary["stats"].get("constraint"):
            console.print(constraint_line(summary["stats"]["constraint"]))
        params = ", ".join(f"{k}={v}" for k, v in summary["params"].items())
        console.print(f"params: {params}; seed {summary['seed']}; manifest {summary['manifest']}")
        if summary["outside_splits"]:
            console.print(f"{summary['outside_splits']} images outside the dataset's split files were protected too")
        if summary["repaired"]:
            console.print(f"{len(summary['repaired'])} files whose bytes no longer matched the record were redone")
        if summary["model"]:
            console.print("model: " + ", ".join(f"{k}={v}" for k, v in summary["model"].items() if k != "config"))
        console.print("versions: " + ", ".join(f"{k} {v}" for k, v in summary["versions"].items()))
        for item in summary["failed"]:
            console.print(f"[red]failed[/red] {item['path']}: {item['reason']}", markup=True)

    if world is None or world.main:  # one report per job
        emit(ctx, summary, human)
    if summary["failed"]:
        raise GateFailed(f"{len(summary['failed'])} image(s) could not be protected (listed in {summary['manifest']})")
    if summary.get("gate", {}).get("failures"):
        raise GateFailed("; ".join(summary["gate"]["failures"]))


def constraint_line(constraint: dict) -> str:
    """One line: how many files met eps and where their feature distances ended."""
    eps, spread = constraint["eps"], constraint["distance"]
    eps_text = fmt(eps["min"]) if eps["min"] == eps["max"] else f"{fmt(eps['min'])}-{fmt(eps['max'])}"
    quantiles = ", ".join(f"{k} {fmt(spread[k])}" for k in ("min", "p10", "median", "p90", "max") if k in spread)
    return (f"feature constraint: {constraint['met']} of {constraint['files']} files met eps {eps_text} "
            f"({constraint['share_met']:.1%}), {constraint['bound']} met it during the run; final feature MSE "
            f"{quantiles}")
