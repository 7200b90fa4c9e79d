"""The privacy-utility scatter: how well an attacker recovers images vs how well ReID still works.

x: mean SSIM of the attack's recovered images vs the originals (lower = more private);
y: anon2anon mAP in percent (higher = more useful). The best methods sit top-left.
Drawn with matplotlib's Agg canvas on a private Figure (no pyplot state, no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ppvi_cli.atomic import atomic_open

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def privacy_utility_plot(points: Sequence[dict], out_png: str | Path, title: str = "privacy vs utility") -> Path:
    """Write the scatter to `out_png`; each point is `{"label", "dataset", "x", "y"}` (one per method).

    Datasets get their own marker; every point is labelled with its method. With no point, the
    figure says so (the page that embeds it stays whole).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    datasets = list(dict.fromkeys(p["dataset"] for p in points))
    for i, dataset in enumerate(datasets):
        mine = [p for p in points if p["dataset"] == dataset]
        ax.scatter([p["x"] for p in mine], [p["y"] for p in mine], marker=MARKERS[i % len(MARKERS)], s=60,
                   label=dataset, zorder=3)
        for p in mine:
            ax.annotate(p["label"], (p["x"], p["y"]), textcoords="offset points", xytext=(6, 4), fontsize=9)
    if not points:
        ax.text(0.5, 0.5, "no method has both a recovered SSIM (attack.json)\nand an anon2anon mAP (eval.json)",
                ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0.0, max([1.0] + [p["x"] * 1.05 for p in points]))
    ax.set_ylim(0.0, max([100.0] + [p["y"] * 1.05 for p in points]))
    ax.set_xlabel("recovered SSIM vs original (lower = more private)")
    ax.set_ylabel("anon2anon mAP, % (higher = more useful)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if len(datasets) > 1:
        ax.legend(title="dataset", fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_open(out_png, "wb") as fh:
        fig.savefig(fh, format="png")
    return out_png
