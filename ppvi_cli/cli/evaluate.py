"""`ppvi eval`: CMC / mAP / mINP of saved features under a protocol, for one or all four settings."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import typer
from rich.table import Table

from ppvi_cli.cli.app import app
from ppvi_cli.cli.common import effective_device, emit, progress

PER_QUERY_COLUMNS = ("setting", "trial", "query", "path", "pid", "camid", "positives", "first_rank", "cmc_rank",
                     "AP", "INP")


@app.command("eval")
def eval_command(
    ctx: typer.Context,
    features: Path = typer.Option(..., "--features", help="Saved features (.npz): query_raw, gallery_raw, "
                                  "query/gallery pids and camids; optionally query_anon, gallery_anon, paths."),
    protocol: str = typer.Option(..., "--protocol", "-p",
                                 help="market, sysu-all, sysu-indoor, regdb-v2t or regdb-t2v."),
    setting: str = typer.Option(..., "--setting", "-s", help="raw2raw, raw2anon, anon2raw, anon2anon or all."),
    trials: int = typer.Option(None, "--trials", min=1, help="SYSU: galleries drawn, seeds 0..N-1 (default 10)."),
    backend: str = typer.Option("faiss", "--backend", help="faiss or torch (both exact)."),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (default: the global --device)."),
    per_query: Path = typer.Option(None, "--per-query", help="Write one CSV row per query and trial here (AP, INP in percent)."),
    ranked: Path = typer.Option(None, "--ranked", help="Write the top-k ranked lists (trial 0) as JSON here."),
    figure: Path = typer.Option(None, "--figure", help="Draw ranked lists to this PNG (one per setting)."),
    topk: int = typer.Option(10, "--topk", min=1, help="Length of the ranked lists."),
    figure_queries: int = typer.Option(8, "--figure-queries", min=1, help="Queries (rows) in the figure."),
    image_root: Path = typer.Option(None, "--image-root", help="Folder the features file's paths are relative to."),
    chunk_size: int = typer.Option(8192, "--chunk-size", min=1, help="Gallery rows per streamed chunk."),
    query_block: int = typer.Option(512, "--query-block", min=1, help="Queries per product."),
) -> None:
    """Evaluate saved features exactly, streaming the gallery (memory does not grow as queries x gallery).

    Metrics are percentages over the queries that have a true match: mean and population std over trials.
    Similarity is the inner product of L2-normalised features; ties are broken by gallery index.
    """
    from ppvi_cli.metrics.features import load_features, resolve_settings
    from ppvi_cli.metrics.protocols import evaluate_settings, protocols
    from ppvi_cli.runinfo import stamp

    proto = protocols.get(protocol)
    settings = resolve_settings(setting)
    feats = load_features(features)
    for name in settings:
        feats.setting(name)
    want_lists = ranked is not None or figure is not None
    options = dict(trials=trials, backend=backend, device=effective_device(ctx, device), chunk_size=chunk_size,
                   query_block=query_block, per_query=per_query is not None, topk=topk if want_lists else 0)
    n_trials = proto.trial_count(trials)
    total = None if proto.gallery_cams else len(settings) * n_trials * len(feats.gallery_pids)
    with progress(ctx, f"eval {protocol}", total) as bar:
        doc = evaluate_settings(feats, protocol, settings, on_chunk=bar.advance, **options)
    outputs = _write_outputs(doc, feats, per_query, ranked, figure, topk, figure_queries, image_root)
    doc["params"] = {k: v for k, v in options.items() if k != "per_query"} | {"trials": n_trials}
    doc["outputs"] = outputs
    doc["run"] = stamp(None, doc["params"])

    def human(console):
        table = Table(title=f"ppvi eval {features.name} --protocol {protocol}")
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
        console.print(f"trials {first['trials']}, backend {first['backend']}; percent over queries with a true match")
        for note in first["notes"]:
            console.print(f"note: {note}")
        for kind, paths in outputs.items():
            console.print(f"{kind}: {', '.join(paths)}")

    emit(ctx, doc, human)


def _write_outputs(doc, feats, per_query, ranked, figure, topk, figure_queries, image_root) -> dict:
    """Write the optional files and strip their bulky parts from `doc` (which stays JSON-sized)."""
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
            drawn.append(str(draw_ranked_figure(out, entries, image_root, figure_queries,
                                                title=f"{doc['protocol']} {name}: top-{topk}, trial 0")))
        outputs["figure"] = drawn
    return outputs
