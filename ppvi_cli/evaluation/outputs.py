"""The files `ppvi eval` writes beside its JSON: per-query CSV, top-k ranked lists (JSON) and their figure."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from ppvi_cli.metrics.features import SETTINGS

PER_QUERY_COLUMNS = ("setting", "trial", "query", "path", "pid", "camid", "positives", "first_rank", "cmc_rank",
                     "AP", "INP")


@dataclass(frozen=True)
class EvalOutputs:
    """Where an evaluation writes its optional files (None: not written), and how the lists are drawn.

    `image_root` / `anon_image_root`: the folders the raw / protected image paths are relative to, for
    the figure (with features from a checkpoint they default to its --data / --anon).
    """

    per_query: Path | None = None
    ranked: Path | None = None
    figure: Path | None = None
    topk: int = 10
    figure_queries: int = 8
    image_root: Path | None = None
    anon_image_root: Path | None = None

    @property
    def wants_lists(self) -> bool:
        """Whether the protocol must keep each query's top-k (for --ranked or --figure)."""
        return self.ranked is not None or self.figure is not None

    def written(self) -> dict:
        """The files written, by option name (for the outside-the-inputs check)."""
        return {"--per-query": self.per_query, "--ranked": self.ranked, "--figure": self.figure}


def write_outputs(doc, feats, outputs: EvalOutputs, roots: dict) -> dict:
    """Write the optional files and strip their bulky parts from `doc` (which stays JSON-sized).

    `roots` maps a form ("raw", "anon") to the folder its images are read from for the figure: each
    side of a setting is drawn from its own form's folder, so a protected side shows protected images.
    Returns `{kind: [paths written]}`.
    """
    from ppvi_cli.data.imageio import write_text_atomic
    from ppvi_cli.report.ranked import draw_ranked_figure, ranked_entries, write_ranked_json

    per_query, ranked, figure, topk = outputs.per_query, outputs.ranked, outputs.figure, outputs.topk
    written, rows, lists = {}, [], {}
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
        written["per_query"] = [str(per_query)]
    if ranked is not None:
        write_ranked_json(ranked, doc["protocol"], topk, lists)
        written["ranked"] = [str(ranked)]
    if figure is not None:
        figure = Path(figure)
        drawn = []
        for name, entries in lists.items():
            out = figure if len(lists) == 1 else figure.with_name(f"{figure.stem}.{name}{figure.suffix or '.png'}")
            query_form, gallery_form = SETTINGS[name]
            drawn.append(str(draw_ranked_figure(out, entries, roots[query_form], outputs.figure_queries,
                                                gallery_root=roots[gallery_form],
                                                title=f"{doc['protocol']} {name}: top-{topk}, trial 0")))
        written["figure"] = drawn
    return written
