"""`ppvi features`: a ReID checkpoint's query/gallery features of a dataset, saved for `ppvi eval --features`.

`model_features` is shared with `ppvi eval --model`, which extracts (or reuses cached) features the same way.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ppvi_cli.cli.root import app
from ppvi_cli.cli.choices import Format, Protocol, choice_option
from ppvi_cli.cli.common import effective_device, effective_seed, emit, progress
from ppvi_cli.cli.options import device_option, format_option
from ppvi_cli.errors import PPVIError

TRIAL_HELP = "RegDB: the split trial of the idx files, 1..10."
TEST_IDS_HELP = ("market1501 without query/ and folder: hold out the last N ids (ascending) as test ids; "
                 "query = first image per camera per id.")
CACHE_HELP = "Feature cache folder (default $PPVI_CACHE_DIR or ~/.cache/ppvi/features; it holds identity features)."


def model_features(ctx: typer.Context, *, model: Path, data: Path, fmt: str, anon: Path | None, protocol: str | None,
                   trial: int, test_ids: int, pattern: str | None, batch_size: int, workers: int,
                   device: str | None, cache_dir: Path | None, no_cache: bool, world=None):
    """Load the checkpoint, then extract or reuse features: `(ModelFeatures, params dict for the stamp)`."""
    from ppvi_cli.data.readers import FORMATS
    from ppvi_cli.device import select_device
    from ppvi_cli.metrics.model_features import check_protocol_format, dataset_features, default_cache_dir
    from ppvi_cli.models.checkpoint import load_checkpoint

    from ppvi_cli.runfolder import check_outside_inputs

    if no_cache and cache_dir is not None:
        raise PPVIError("--no-cache and --cache-dir contradict each other; pass one of them")
    if not no_cache:  # the cache is written too: never inside an input
        check_outside_inputs(cache_dir or default_cache_dir(), {"--model": model, "--data": data, "--anon": anon},
                             option="--cache-dir", folder=False)
    if fmt != "auto":  # a named layout is checked before the model loads; auto is checked once detected
        FORMATS.get(fmt.lower())
        if protocol is not None:
            check_protocol_format(protocol, fmt.lower())
    cache = None if no_cache else (cache_dir or default_cache_dir())
    from ppvi_cli.distributed import process_device

    torch_device = select_device(process_device(effective_device(ctx, device), world))
    net, config, meta = load_checkpoint(model, map_location=torch_device)
    params = {"model": str(model), "model_sha256": meta["sha256"], "data": str(data), "format": fmt,
              "anon": None if anon is None else str(anon), "protocol": protocol, "trial": trial,
              "test_ids": test_ids, "pattern": pattern, "batch_size": batch_size, "workers": workers,
              "device": str(torch_device), "cache_dir": None if cache is None else str(cache),
              "model_config": config.to_dict()}
    with progress(ctx, "features") as bar:

        def on_total(n: int) -> None:
            if n:  # a cache hit extracts nothing: no bar
                bar.set_total(n)

        result = dataset_features(net, data, fmt, anon, torch_device, batch_size, cache, model_sha256=meta["sha256"],
                                  protocol=protocol, trial=trial, test_ids=test_ids, pattern=pattern,
                                  num_workers=workers, on_total=on_total, on_progress=bar.advance, world=world)
    params["format"] = result.split.format
    return result, params


def source_summary(result) -> dict:
    """What the JSON says about extracted features: split, counts, dims, cache state."""
    feats, split = result.features, result.split
    return {"format": split.format, "split": split.params, "protocols": split.protocols,
            "forms": list(feats.query), "dims": int(feats.query["raw"].shape[1]),
            "counts": {"query": len(feats.query_pids), "gallery": len(feats.gallery_pids),
                       "query_ids": len(set(feats.query_pids.tolist())),
                       "gallery_ids": len(set(feats.gallery_pids.tolist()))},
            "model_sha256": result.model_sha256, "cache": result.cache,
            "cache_path": None if result.cache_path is None else str(result.cache_path), "notes": split.notes}


@app.command("features")
def features_command(
    ctx: typer.Context,
    model: Path = typer.Option(..., "--model", help="ReID checkpoint (.pt) written by `ppvi train reid`."),
    data: Path = typer.Option(..., "--data", help="Dataset root (raw images)."),
    out: Path = typer.Option(..., "--out", help="Features file to write (.npz, read by `ppvi eval --features`)."),
    fmt: Format = format_option(),
    anon: Path = typer.Option(None, "--anon", help="Anonymized mirror of --data (from `ppvi anonymize`): adds "
                              "query_anon/gallery_anon, row-aligned with the raw features."),
    protocol: Protocol = choice_option(None, "--protocol", "-p", help="Check the split fits it; RegDB: regdb-v2t "
                                 "(default) or regdb-t2v picks which modality queries."),
    trial: int = typer.Option(1, "--trial", min=1, max=10, help=TRIAL_HELP),
    test_ids: int = typer.Option(201, "--test-ids", min=1, help=TEST_IDS_HELP),
    pattern: str = typer.Option(None, "--pattern", help="folder: regex on file names with groups camid/modality."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per forward pass."),
    workers: int = typer.Option(0, "--workers", min=0, help="Image-decoding worker processes (0: in process)."),
    device: str = device_option(),
    cache_dir: Path = typer.Option(None, "--cache-dir", help=CACHE_HELP),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the feature cache."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out that is not a ppvi "
                                   "features file (one that is, is replaced anyway)."),
) -> None:
    """Extract a checkpoint's retrieval features of a dataset's query and gallery (raw, and anonymized with --anon).

    The split follows the format: sysu = infrared queries and the visible pool of the test ids; regdb =
    one trial's test lists; market1501 = query/ and bounding_box_test/, or held-out ids of
    bounding_box_train/; folder = held-out ids. Features are cached by checkpoint and image checksums.
    """
    from ppvi_cli.distributed import process_group, torchrun_world
    from ppvi_cli.metrics.features import check_features_target, save_features
    from ppvi_cli.runfolder import check_outside_inputs
    from ppvi_cli.runinfo import stamp

    check_outside_inputs(out, {"--model": model, "--data": data, "--anon": anon}, option="--out", folder=False)
    check_features_target(out, overwrite)
    world = torchrun_world()
    with process_group(world):
        result, params = model_features(ctx, model=model, data=data, fmt=fmt, anon=anon, protocol=protocol,
                                        trial=trial, test_ids=test_ids, pattern=pattern, batch_size=batch_size,
                                        workers=workers, device=device, cache_dir=cache_dir, no_cache=no_cache,
                                        world=world)
    if world is not None and not world.main:  # rank 0 writes the file and reports for the job
        return
    save_features(out, result.features)
    doc = {"out": str(out), **source_summary(result)}
    doc["run"] = stamp(effective_seed(ctx, None), params | {"out": str(out)})

    def human(console):
        table = Table(title=f"ppvi features {model.name} on {data} ({doc['format']})")
        for col in ("side", "images", "ids", "dims", "forms"):
            table.add_column(col, justify="left" if col in ("side", "forms") else "right")
        for side in ("query", "gallery"):
            table.add_row(side, str(doc["counts"][side]), str(doc["counts"][f"{side}_ids"]), str(doc["dims"]),
                          ", ".join(doc["forms"]))
        console.print(table)
        console.print(f"wrote {out}; protocols: {', '.join(doc['protocols'])}; cache {doc['cache']}; "
                      f"model sha256 {doc['model_sha256'][:12]}")
        for note in doc["notes"]:
            console.print(f"note: {note}")

    emit(ctx, doc, human)
