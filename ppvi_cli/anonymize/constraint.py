"""PixelFade's feature constraint over a run: the share of files that met eps, how far the features of
all files ended, and the gate on that share.

A file meets the constraint when the feature of its stored bytes lies within its eps (the manifest's
per-file `eps`, mean squared difference) of the raw image's feature: an image whose feature drifted
further is a utility failure, whatever its privacy, and the user should see how many there are.
"""

from __future__ import annotations

import math

import numpy as np

from ppvi_cli.errors import PPVIError

QUANTILES = {"min": 0.0, "p10": 0.1, "median": 0.5, "p90": 0.9, "max": 1.0}


def constraint_summary(rows: list[dict]) -> dict | None:
    """Summarise the per-file stats that carry a constraint (`eps` and `mse_stored`); None when none do.

    Returns `{"files", "met", "share_met", "bound", "eps": {"min", "max"}, "distance": {"mean", "min",
    "p10", "median", "p90", "max"}}`: `met` counts files with `mse_stored < eps` (the algorithm's own
    test) at the end; `bound` files whose loss was under eps at some step (`steps_met` > 0), i.e. where
    the constraint took part in the run rather than leaving every step to the constraint operation;
    `distance` is the distribution of `mse_stored` over all of them, met or not.
    """
    rows = [r for r in rows if "eps" in r and "mse_stored" in r]
    if not rows:
        return None
    eps = np.array([r["eps"] for r in rows], dtype=np.float64)
    mse = np.array([r["mse_stored"] for r in rows], dtype=np.float64)
    met = int(np.sum(mse < eps))  # a NaN distance never meets eps
    finite = mse[np.isfinite(mse)]
    spread = {k: float(np.quantile(finite, q)) for k, q in QUANTILES.items()} if finite.size else {}
    bound = sum(r.get("steps_met", 0) > 0 for r in rows)
    return {"files": len(rows), "met": met, "share_met": met / len(rows), "bound": bound,
            "eps": {"min": float(eps.min()), "max": float(eps.max())},
            "distance": {"mean": float(finite.mean()) if finite.size else None, **spread}}


def check_min_met(min_met: float | None) -> None:
    """Refuse a `--min-met` outside [0, 1] before anything runs."""
    if min_met is not None and not 0.0 <= min_met <= 1.0:
        raise PPVIError(f"--min-met must be a fraction in [0, 1], got {min_met!r}")


def min_met_failures(summary: dict | None, min_met: float, files: int) -> list[str]:
    """The `--min-met` gate over a run's constraint summary: human lines, empty when it passes.

    `files` is how many files the run covers (written now or before, and skipped). It fails when
    fewer than `min_met` of them met eps, and when some carry no constraint record (finished by a run
    that kept no stats, or by a method without a constraint): an unknown share cannot pass.
    """
    known = summary["files"] if summary else 0
    if known < files:
        return [f"{files - known} of {files} file(s) have no constraint record (a method without eps, or files "
                "finished by a run that kept no stats): the share meeting eps is unknown"]
    if not summary["share_met"] >= min_met:
        spread = summary["distance"]
        return [f"{summary['met']} of {known} file(s) ({summary['share_met']:.1%}) met eps, fewer than --min-met "
                f"{min_met:g} (feature MSE median {spread.get('median', math.nan):.4g}, max "
                f"{spread.get('max', math.nan):.4g}; eps {summary['eps']['min']:.4g}-{summary['eps']['max']:.4g})"]
    return []
