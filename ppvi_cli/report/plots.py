"""The privacy-utility figure: what the worst-case attacker gets back vs how well ReID still works.

One panel per (privacy figure, utility setting): x is a worst case over the attackers run (the
highest recovered SSIM; the highest linkage rank-1 when a linkage attacker ran), lower = more
private; y is the authorized model's mAP under raw2anon and under anon2anon, higher = more useful.
The best methods sit top-left. Axes are fitted to the points; labels are placed where they overlap
no other label, marker or the axes' edge (when no such place exists among the candidates, the
least-overlapping one is taken). Drawn with matplotlib's Agg canvas on a private Figure (no pyplot
state, no display needed).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from ppvi_cli.atomic import atomic_open

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
PRIVACY_AXES = {"ssim": ("worst-case recovered SSIM", (0.0, 1.0)),
                "rank1": ("worst-case linkage rank-1, %", (0.0, 100.0))}
UTILITY_AXES = {"raw2anon": "raw2anon mAP, %", "anon2anon": "anon2anon mAP, %"}
# Label positions tried in order (offset in points from the marker, alignment): rings of 12 directions,
# nearest ring first; a label beyond the first ring gets a thin leader line to its marker.
OFFSETS = [(r * math.cos(a), r * math.sin(a), "left" if math.cos(a) > 0.3 else "right" if math.cos(a) < -0.3
            else "center", "bottom" if math.sin(a) > 0.3 else "top" if math.sin(a) < -0.3 else "center")
           for r in (7, 14, 21, 28, 36, 44) for a in (math.radians(d) for d in (30, -30, 150, -150, 90, -90, 0, 180,
                                                                                   60, -60, 120, -120))]


def fitted_limits(values: Sequence[float], bounds: tuple[float, float], min_span: float) -> tuple[float, float]:
    """Axis limits around `values`: their range padded by 12% (at least `min_span` wide), inside `bounds`."""
    lo, hi = min(values), max(values)
    span = max(hi - lo, min_span)
    mid = (lo + hi) / 2
    lo, hi = mid - 0.62 * span, mid + 0.62 * span
    if lo < bounds[0]:
        lo, hi = bounds[0], hi + bounds[0] - lo
    if hi > bounds[1]:
        lo, hi = max(bounds[0], lo - (hi - bounds[1])), bounds[1]
    return lo, hi


def _overlap(a, b) -> float:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width * height if width > 0 and height > 0 else 0.0


def place_labels(ax, points: Sequence[tuple[float, float, str]], renderer) -> list:
    """Annotate each `(x, y, label)` at the first offset whose text box overlaps nothing placed yet, no
    marker and stays inside the axes; returns the text boxes (display pixels) as placed."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    frame = ax.get_window_extent(renderer)
    markers = []
    for x, y, _ in points:
        px, py = ax.transData.transform((x, y))
        markers.append(Bbox.from_extents(px - 5, py - 5, px + 5, py + 5))
    placed = []
    for x, y, label in points:
        best, best_cost = None, None
        for dx, dy, ha, va in OFFSETS:
            leader = {"arrowstyle": "-", "color": "0.5", "lw": 0.6} if math.hypot(dx, dy) > 10 else None
            text = ax.annotate(label, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=8, ha=ha, va=va,
                               arrowprops=leader)
            # the text alone (an Annotation's own extent spans its leader line too), with a 2-pixel gap
            text.update_positions(renderer)
            box = Text.get_window_extent(text, renderer).padded(2)
            outside = (max(0, frame.x0 - box.x0) + max(0, box.x1 - frame.x1) + max(0, frame.y0 - box.y0)
                       + max(0, box.y1 - frame.y1))
            cost = sum(_overlap(box, other) for other in placed + markers) + 100 * outside
            if best_cost is None or cost < best_cost:
                if best is not None:
                    best[0].remove()
                best, best_cost = (text, box), cost
            else:
                text.remove()
            if cost == 0:
                break
        placed.append(best[1])
    return placed


def privacy_utility_plot(points: Sequence[dict], out_png: str | Path, title: str = "privacy vs utility") -> Path:
    """Write the figure to `out_png`. Each point is `{"label", "dataset", "ssim", "rank1", "raw2anon",
    "anon2anon"}` (one per method; a figure it lacks is None). Datasets get their own marker. A panel
    appears for each privacy figure some point has; with no drawable point the figure says so."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [key for key in PRIVACY_AXES if any(p.get(key) is not None for p in points)] or ["ssim"]
    fig = Figure(figsize=(10.0, 4.2 * len(rows)), dpi=100)
    canvas = FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), len(UTILITY_AXES), squeeze=False)
    datasets = list(dict.fromkeys(p["dataset"] for p in points))
    labels = []  # (axes, its points' labels): placed once the layout is final
    for row, privacy in zip(axes, rows):
        for ax, setting in zip(row, UTILITY_AXES):
            mine = [p for p in points if p.get(privacy) is not None and p.get(setting) is not None]
            for i, dataset in enumerate(datasets):
                here = [p for p in mine if p["dataset"] == dataset]
                if here:
                    ax.scatter([p[privacy] for p in here], [p[setting] for p in here], s=45, zorder=3,
                               marker=MARKERS[i % len(MARKERS)], label=dataset)
            label, bounds = PRIVACY_AXES[privacy]
            if mine:
                ax.set_xlim(*fitted_limits([p[privacy] for p in mine], bounds, 0.05 * bounds[1]))
                ax.set_ylim(*fitted_limits([p[setting] for p in mine], (0.0, 100.0), 5.0))
            ax.set_xlabel(f"{label} (lower = more private)", fontsize=9)
            ax.set_ylabel(f"{UTILITY_AXES[setting]} (higher = more useful)", fontsize=9)
            ax.grid(True, alpha=0.3)
            if len(datasets) > 1 and mine:
                ax.legend(title="dataset", fontsize=7, title_fontsize=7, loc="best")
            labels.append((ax, [(p[privacy], p[setting], p["label"]) for p in mine]))
    if not any(mine for _, mine in labels):
        axes[0][0].text(0.5, 0.5, "no method has both a worst-case attack figure (attack.json)\nand a "
                        "raw2anon/anon2anon mAP (eval.json)", ha="center", va="center",
                        transform=axes[0][0].transAxes)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    renderer = canvas.get_renderer()
    for ax, mine in labels:
        place_labels(ax, mine, renderer)
    out_png = Path(out_png)
    with atomic_open(out_png, "wb") as fh:
        fig.savefig(fh, format="png")
    return out_png
