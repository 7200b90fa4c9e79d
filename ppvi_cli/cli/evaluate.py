"""`ppvi eval`: CMC / mAP / mINP under a protocol, for one or all four settings.

The features come from a saved file (`--features F.npz`) or from a checkpoint run over a dataset
(`--model CKPT --data DIR`, extracted as `ppvi features` does, cached by checkpoint and image checksums).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import typer
from rich.table import Table

from ppvi_cli.cli.root import app
from ppvi_cli.cli.choices import Backend, Format, Protocol, SettingOrAll, choice_option
from ppvi_cli.cli.common import effective_device, effective_seed, emit, progress
from ppvi_cli.cli.options import device_option, format_option, seed_option
from ppvi_cli.cli.features import CACHE_HELP, TEST_IDS_HELP, TRIAL_HELP, model_features, source_summary
from ppvi_cli.errors import PPVIError
from ppvi_cli.metrics.features import SETTINGS
from ppvi_cli.runfolder import check_outside_inputs

PER_QUERY_COLUMNS = ("setting", "trial", "query", "path", "pid", "camid", "positives", "first_rank", "cmc_rank",
                     "AP", "INP")


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
    trial: int = typer.Option(None, "--trial", min=1, max=10, help=f"With --model. {TRIAL_HELP} (default 1)"),
    test_ids: int = typer.Option(None, "--test-ids", min=1, help=f"With --model. {TEST_IDS_HELP} (default 201)"),
    pattern: str = typer.Option(None, "--pattern", help="With --model, folder: regex with groups camid/modality."),
    batch_size: int = typer.Option(None, "--batch-size", min=1,
                                   help="With --model: images per forward pass (default 64)."),
    workers: int = typer.Option(None, "--workers", min=0, help="With --model: image-decoding processes (default 0)."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help=f"With --model. {CACHE_HELP}"),
    no_cache: bool = typer.Option(False, "--no-cache", help="With --model: neither read nor write the feature cache."),
    protocol: Protocol = choice_option(..., "--protocol", "-p", help="Evaluation protocol: junk rule, gallery "
                                       "draws and trials (README, \"Evaluation\")."),
    setting: SettingOrAll = choice_option(..., "--setting", "-s", help="Query form 2 gallery form, or all four."),
    trials: int = typer.Option(None, "--trials", min=1, help="SYSU: galleries drawn, seeds 0..N-1 (default 10)."),
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
    from ppvi_cli.metrics.features import load_features, resolve_settings
    from ppvi_cli.metrics.protocols import evaluate_settings, protocols
    from ppvi_cli.runinfo import stamp

    proto = protocols.get(protocol)
    settings = resolve_settings(setting)
    if figure is not None:  # never draw raw images where the setting shows protected ones
        anon_side = [name for name in settings if "anon" in SETTINGS[name]]
        if anon_side and anon_image_root is None and anon is None:
            raise PPVIError(f"--figure for {anon_side[0]} shows protected images: pass --anon-image-root DIR "
                            "(the anonymized mirror), or draw --setting raw2raw only")
    written = {"--per-query": per_query, "--ranked": ranked, "--figure": figure}
    read = {"--features": features, "--model": model, "--data": data, "--anon": anon, "--image-root": image_root,
            "--anon-image-root": anon_image_root}
    for option, target in written.items():
        if target is not None:
            check_outside_inputs(target, read, option=option, folder=False)
    n_trials = proto.trial_count(trials)
    if (features is None) == (model is None):
        raise PPVIError("pass exactly one source of features: --features F.npz, or --model CKPT --data DIR")
    source = None
    if features is not None:
        model_only = {"--data": data, "--format": fmt, "--anon": anon, "--trial": trial, "--test-ids": test_ids,
                      "--pattern": pattern, "--batch-size": batch_size, "--workers": workers,
                      "--cache-dir": cache_dir, "--no-cache": no_cache or None}
        given = [name for name, value in model_only.items() if value is not None]
        if given:
            raise PPVIError(f"{', '.join(given)} only go with --model; --features {features} already holds "
                            "the features")
        feats = load_features(features)
    else:
        source, model_params = _from_model(ctx, model, protocol, settings, device, data=data, fmt=fmt, anon=anon,
                                           trial=trial, test_ids=test_ids, pattern=pattern, batch_size=batch_size,
                                           workers=workers, cache_dir=cache_dir, no_cache=no_cache)
        feats = source.features
        image_root = image_root or data
        anon_image_root = anon_image_root or anon
    for name in settings:
        feats.setting(name)
    dp = None
    if dp_epsilon is not None:
        dp = _privatize(feats, dp_epsilon, dp_delta, effective_seed(ctx, seed))
    want_lists = ranked is not None or figure is not None
    options = dict(trials=trials, backend=backend, device=effective_device(ctx, device), chunk_size=chunk_size,
                   query_block=query_block, per_query=per_query is not None, topk=topk if want_lists else 0)
    total = None if proto.gallery_cams else len(settings) * n_trials * len(feats.gallery_pids)
    with progress(ctx, f"eval {protocol}", total) as bar:
        doc = evaluate_settings(feats, protocol, settings, on_chunk=bar.advance, **options)
    outputs = _write_outputs(doc, feats, per_query, ranked, figure, topk, figure_queries,
                             {"raw": image_root, "anon": anon_image_root})
    doc["params"] = {k: v for k, v in options.items() if k != "per_query"} | {"trials": n_trials}
    if source is not None:
        doc["params"]["features"] = model_params
        doc["source"] = source_summary(source)
    doc["outputs"] = outputs
    if dp is not None:
        doc["dp"] = dp
    doc["run"] = stamp(dp["seed"] if dp else None, doc["params"] | ({"dp": dp} if dp else {}))

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


def _privatize(feats, epsilon: float, delta: float, seed: int) -> dict:
    """Replace every gallery form by its Gaussian-mechanism copy (same noise draw for raw and anon)."""
    from ppvi_cli.metrics.dp import SENSITIVITY, gaussian_sigma, privatize_gallery

    sigma = gaussian_sigma(epsilon, delta)
    for form, gallery in feats.gallery.items():
        feats.gallery[form] = privatize_gallery(gallery, epsilon, delta, seed)
    return {"epsilon": epsilon, "delta": delta, "sensitivity": SENSITIVITY, "sigma": sigma, "seed": seed}


def _from_model(ctx, model, protocol, settings, device, *, data, fmt, anon, trial, test_ids, pattern, batch_size,
                workers, cache_dir, no_cache):
    """Features of --data from --model, after the checks that need no model: `(ModelFeatures, params)`."""
    from ppvi_cli.metrics.model_features import DEFAULT_TEST_IDS

    if data is None:
        raise PPVIError(f"--model {model} needs --data DIR, the dataset to extract features from")
    needs_anon = [name for name in settings if "anon" in SETTINGS[name]]
    if anon is None and needs_anon:
        raise PPVIError(f"--setting {needs_anon[0]} needs anonymized features: pass --anon DIR (the output of "
                        "`ppvi anonymize` on --data) or use --setting raw2raw")
    return model_features(ctx, model=model, data=data, fmt=fmt or "auto", anon=anon, protocol=protocol,
                          trial=trial or 1, test_ids=test_ids or DEFAULT_TEST_IDS, pattern=pattern,
                          batch_size=batch_size or 64, workers=workers or 0, device=device, cache_dir=cache_dir,
                          no_cache=no_cache)


def _write_outputs(doc, feats, per_query, ranked, figure, topk, figure_queries, roots: dict) -> dict:
    """Write the optional files and strip their bulky parts from `doc` (which stays JSON-sized).

    `roots` maps a form ("raw", "anon") to the folder its images are read from for the figure: each
    side of a setting is drawn from its own form's folder, so a protected side shows protected images.
    """
    from ppvi_cli.data.imageio import write_text_atomic
    from ppvi_cli.report.ranked import draw_ranked_figure, ranked_entries, write_ranked_json

    outputs, rows, lists = {}, [], {}
    for name, res in doc["results"].items():
        for row in res.pop("per_query", []):
            path = None if feats.query_paths is None else str(feats.query_paths[row["query"]])
            rows.append({"setting": name, "path": path, **row})
        if "ranked" in res:
            lists[name] = ranked_entries(feats, res.pop("ranked"))
    if per_query is not None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=PER_QUERY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
        write_text_atomic(per_query, buf.getvalue())
        outputs["per_query"] = [str(per_query)]
    if ranked is not None:
        write_ranked_json(ranked, doc["protocol"], topk, lists)
        outputs["ranked"] = [str(ranked)]
    if figure is not None:
        figure = Path(figure)
        drawn = []
        for name, entries in lists.items():
            out = figure if len(lists) == 1 else figure.with_name(f"{figure.stem}.{name}{figure.suffix or '.png'}")
            query_form, gallery_form = SETTINGS[name]
            drawn.append(str(draw_ranked_figure(out, entries, roots[query_form], figure_queries,
                                                gallery_root=roots[gallery_form],
                                                title=f"{doc['protocol']} {name}: top-{topk}, trial 0")))
        outputs["figure"] = drawn
    return outputs
