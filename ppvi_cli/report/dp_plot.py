"""The DP gallery's privacy-utility figure: utility and identity leakage against epsilon (PNG)."""

from __future__ import annotations

import io
from pathlib import Path

from ppvi_cli.atomic import atomic_open


def plot_dp_sweep(sweep: dict, out: str | Path, title: str | None = None) -> Path:
    """Draw a `dp_sweep` result to `out` (PNG, written atomically) and return the path.

    Left panel: rank-1 and mAP (percent) against epsilon (log axis); right panel: identity leakage
    (percent) with the chance level. The no-DP row is drawn as dashed horizontal lines.
    Uses matplotlib's object API with the Agg canvas (no pyplot state, no display needed).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = sorted((r for r in sweep["rows"] if r["epsilon"] is not None), key=lambda r: r["epsilon"])
    baseline = next((r for r in sweep["rows"] if r["epsilon"] is None), None)
    eps = [r["epsilon"] for r in rows]
    fig = Figure(figsize=(9.0, 3.6), dpi=110)
    FigureCanvasAgg(fig)
    utility, leakage = fig.subplots(1, 2)
    for ax, series, ylabel in ((utility, (("rank1", "rank-1", "C0"), ("mAP", "mAP", "C1")), "utility (%)"),
                               (leakage, (("leakage", "identity leakage", "C3"),), "identification accuracy (%)")):
        for key, label, colour in series:
            ax.plot(eps, [r[key] for r in rows], marker="o", color=colour, label=label)
            if baseline is not None:
                ax.axhline(baseline[key], color=colour, linestyle="--", linewidth=1, label=f"{label}, no DP")
        ax.set_xscale("log")
        ax.set_xticks(eps, [f"{e:g}" for e in eps])
        ax.minorticks_off()
        ax.set_xlabel("epsilon (smaller = more noise)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3)
    if rows:
        leakage.plot(eps, [r["chance"] for r in rows], color="grey", linestyle=":", label="chance")
    for ax in (utility, leakage):
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title or f"DP gallery: {sweep['protocol']} {sweep['setting']}, delta {sweep['delta']:g}, "
                 f"Delta {sweep['sensitivity']:g}, seed {sweep['seed']}", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    out = Path(out)
    with atomic_open(out, "wb") as fh:
        fh.write(buffer.getvalue())
    return out
