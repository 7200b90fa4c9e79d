"""`ppvi eval`: CMC / mAP / mINP under a protocol, for one or all four settings.

The features come from a saved file (`--features F.npz`) or from a checkpoint run over a dataset
(`--model CKPT --data DIR`, extracted as `ppvi features` does, cached by checkpoint and image checksums).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ppvi_cli.cli.root import app
from ppvi_cli.cli.choices import Backend, Format, Protocol, SettingOrAll, choice_option
from ppvi_cli.cli.common import effective_device, effective_seed, emit, progress_bars
from ppvi_cli.cli.features import CACHE_HELP, TEST_IDS_HELP, TRIAL_HELP
from ppvi_cli.cli.options import constant_note, device_option, format_option, seed_option


@app.command("eval")
def eval_command(
    ctx: typer.Context,
    features: Path = typer.Option(None, "--features", help="Saved features (.npz): query_raw, gallery_raw, "
                                  "query/gallery pids and camids; optionally query_anon, gallery_anon, paths."),
    model: Path = typer.Option(None, "--model", help="Or a ReID checkpoint: extract features of --data "
                               "(and --anon) first, as `ppvi features` does."),
    data: Path = typer.Option(None, "--data", help="With --model: the dataset root (raw images)."),
    fmt: Format = format_option(None, only="With --model."),
    anon: Path = typer.Option(None, "--anon", help="With --model: the anonymized mirror of --data "
                              "(needed by raw2anon, anon2raw, anon2anon)."),
    trial: int = typer.Option(None, "--trial", min=1, max=10, help=f"With --model. {TRIAL_HELP} {constant_note('data.regdb', 'DEFAULT_TRIAL')}"),
    test_ids: int = typer.Option(None, "--test-ids", min=1, help=f"With --model. {TEST_IDS_HELP} "
                                                                      f"{constant_note('evaluation.split', 'DEFAULT_TEST_IDS')}"),
    pattern: str = typer.Option(None, "--pattern", help="With --model, folder: regex with groups camid/modality."),
    batch_size: int = typer.Option(None, "--batch-size", min=1,
                                   help="With --model: images per forward pass "
                                        f"{constant_note('evaluation.features', 'BATCH_SIZE')}."),
    workers: int = typer.Option(None, "--workers", min=0, help="With --model: image-decoding processes (default 0)."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help=f"With --model. {CACHE_HELP}"),
    no_cache: bool = typer.Option(False, "--no-cache", help="With --model: neither read nor write the feature cache."),
    protocol: Protocol = choice_option(..., "--protocol", "-p", help="Evaluation protocol: junk rule, gallery "
                                       "draws and trials (README, \"Evaluation\")."),
    setting: SettingOrAll = choice_option(..., "--setting", "-s", help="Query form 2 gallery form, or all four."),
    trials: int = typer.Option(None, "--trials", min=1, help="SYSU: galleries drawn, seeds 0..N-1 "
                               f"{constant_note('metrics.protocols', 'SYSU_TRIALS')}."),
    backend: Backend = choice_option("auto", "--backend", help="Who computes the products (all exact): auto = faiss's "
                                     "GPU index when faiss sees the chosen GPU, else torch on that GPU, else faiss on "
                                     "the CPU (torch when faiss is not installed)."),
    device: str = device_option(),
    per_query: Path = typer.Option(None, "--per-query", help="Write one CSV row per query and trial here (AP, INP in percent)."),
    ranked: Path = typer.Option(None, "--ranked", help="Write the top-k ranked lists (trial 0) as JSON here."),
    figure: Path = typer.Option(None, "--figure", help="Draw ranked lists to this PNG (one per setting)."),
    topk: int = typer.Option(10, "--topk", min=1, help="Length of the ranked lists."),
    figure_queries: int = typer.Option(8, "--figure-queries", min=1, help="Queries (rows) in the figure."),
    image_root: Path = typer.Option(None, "--image-root", help="Folder the features file's raw image paths are "
                                    "relative to, for --figure (with --model: --data)."),
    anon_image_root: Path = typer.Option(None, "--anon-image-root", help="Folder of the protected images, for "
                                         "--figure of a setting with an anonymized side (with --model: --anon)."),
    chunk_size: int = typer.Option(8192, "--chunk-size", min=1, help="Gallery rows per streamed chunk."),
    query_block: int = typer.Option(512, "--query-block", min=1, help="Queries per product."),
    dp_epsilon: float = typer.Option(None, "--dp-epsilon", help="Differentially private gallery: Gaussian "
                                     "mechanism with this epsilon in (0, 1] (PEPR-Net); sensitivity 2 "
                                     "(L2-normalised features).", rich_help_panel="DP gallery"),
    dp_delta: float = typer.Option(1e-5, "--dp-delta", help="With --dp-epsilon: delta in (0, 1).",
                                   rich_help_panel="DP gallery"),
    seed: int = seed_option("Seed of the DP noise"),
) -> None:
    """Evaluate features exactly, streaming the gallery (memory does not grow as queries x gallery).

    Pass saved features (--features) or a checkpoint and a dataset (--model, --data), not both.
    Metrics are percentages over the queries that have a true match: mean and population std over trials.
    Similarity is the inner product of L2-normalised features; ties are broken by gallery index.
    """
    from ppvi_cli.evaluation import DPGallery, EvalOutputs, evaluate

    files = EvalOutputs(per_query, ranked, figure, topk, figure_queries, image_root, anon_image_root)
    dp_gallery = None if dp_epsilon is None else DPGallery(dp_epsilon, dp_delta, effective_seed(ctx, seed))
    with progress_bars(ctx) as on_progress:
        doc = evaluate(protocol, setting, features=features, model=model, data=data, fmt=fmt, anon=anon, trial=trial,
                       test_ids=test_ids, pattern=pattern, batch_size=batch_size, workers=workers, cache_dir=cache_dir,
                       no_cache=no_cache, dp=dp_gallery, trials=trials, backend=backend,
                       device=effective_device(ctx, device), chunk_size=chunk_size, query_block=query_block,
                       outputs=files, on_progress=on_progress)
    outputs, dp, source = doc["outputs"], doc.get("dp"), doc.get("source")

    def human(console):
        title = features.name if source is None else f"--model {model.name} --data {data}"
        table = Table(title=f"ppvi eval {title} --protocol {protocol}")
        table.add_column("setting")
        for col in ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP"):
            table.add_column(col, justify="right")
        table.add_column("valid queries", justify="right")
        for name, res in doc["results"].items():
            cells = [f"{res[c]:.2f}" + (f" ±{res['std'][c]:.2f}" if res["trials"] > 1 else "")
                     for c in ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")]
            table.add_row(name, *cells, str(res["valid_queries"]))
        console.print(table)
        first = next(iter(doc["results"].values()))
        console.print(f"trials {first['trials']}, backend {first['backend']} on {first['device']}; percent over "
                      "queries with a true match")
        for note in first["notes"]:
            console.print(f"note: {note}")
        for kind, paths in outputs.items():
            console.print(f"{kind}: {', '.join(paths)}")
        if dp is not None:
            console.print(f"DP gallery: epsilon {dp['epsilon']}, delta {dp['delta']}, sensitivity "
                          f"{dp['sensitivity']}, sigma {dp['sigma']:.4g} per coordinate, seed {dp['seed']}")
        if source is not None:
            info = doc["source"]
            console.print(f"features: {info['counts']['query']} queries, {info['counts']['gallery']} gallery, "
                          f"{info['dims']} dims; cache {info['cache']}; model sha256 {info['model_sha256'][:12]}")
            for note in info["notes"]:
                console.print(f"note: {note}")

    emit(ctx, doc, human)

