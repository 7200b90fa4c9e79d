"""`ppvi features`: a ReID checkpoint's query/gallery features of a dataset, saved for `ppvi eval --features`.

The work is `ppvi_cli.evaluation.extract`; `ppvi eval --model` extracts (or reuses cached) features the same way.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ppvi_cli.cli.root import app
from ppvi_cli.cli.choices import Format, Protocol, choice_option
from ppvi_cli.cli.common import effective_device, effective_seed, emit, progress_bars
from ppvi_cli.cli.options import device_option, format_option

TRIAL_HELP = "RegDB: the split trial of the idx files, 1..10."
TEST_IDS_HELP = ("market1501 without query/ and folder: hold out the last N ids (ascending) as test ids; "
                 "query = first image per camera per id.")
CACHE_HELP = "Feature cache folder (default $PPVI_CACHE_DIR or ~/.cache/ppvi/features; it holds identity features)."


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
    from ppvi_cli.evaluation import extract

    with progress_bars(ctx) as on_progress:
        doc = extract(model, data, out, fmt=fmt, anon=anon, protocol=protocol, trial=trial, test_ids=test_ids,
                      pattern=pattern, batch_size=batch_size, workers=workers, device=effective_device(ctx, device),
                      cache_dir=cache_dir, no_cache=no_cache, overwrite=overwrite, seed=effective_seed(ctx, None),
                      on_progress=on_progress)
    if doc is None:  # under torchrun, rank 0 writes the file and reports for the job
        return

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
