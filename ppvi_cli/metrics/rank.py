"""CMC, mAP and mINP from the ranks of each query's positives (no scores, no gallery needed).

Definitions (docs/architecture.md, "Evaluation"; mangye16/Cross-Modal-Re-ID-baseline `eval_metrics.py`):
- AP = mean over a query's positives of (positives ranked at or before it) / (its rank);
- INP = (number of positives) / (rank of the last positive);
- rank-k = 1 when the query's first positive is within the top k (or, for SYSU, when the query's id
  is within the top k of the list with each gallery id kept at its first occurrence);
- queries without any positive are skipped: they count neither in the mean nor as zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CMC_RANKS = (1, 5, 10, 20)
METRICS = tuple(f"rank{k}" for k in CMC_RANKS) + ("mAP", "mINP")


@dataclass
class QueryMetrics:
    """Per-query results, [Q] each. `ap`/`inp` are NaN and `first_rank`/`cmc_rank` 0 for queries
    without a positive."""

    positives: np.ndarray
    first_rank: np.ndarray
    cmc_rank: np.ndarray
    ap: np.ndarray
    inp: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        return self.positives > 0


def query_metrics(offsets: np.ndarray, ranks: np.ndarray, cmc_rank: np.ndarray | None = None) -> QueryMetrics:
    """AP, INP and first-positive rank per query.

    Args:
        offsets: [Q+1] int; query q's positives are `ranks[offsets[q]:offsets[q+1]]`.
        ranks: 1-based ranks, ascending within each query.
        cmc_rank: [Q] rank used for CMC when it differs from the first positive's (SYSU id dedup).

    Example:
        >>> m = query_metrics(np.array([0, 2]), np.array([1, 4]))
        >>> float(m.ap[0]), float(m.inp[0])   # (1/1 + 2/4) / 2, 2/4
        (0.75, 0.5)
    """
    offsets, ranks = np.asarray(offsets, np.int64), np.asarray(ranks, np.int64)
    n = np.diff(offsets)
    valid = n > 0
    ap = np.full(len(n), np.nan)
    inp = np.full(len(n), np.nan)
    first = np.zeros(len(n), np.int64)
    if valid.any():
        position = np.arange(len(ranks)) - np.repeat(offsets[:-1], n) + 1  # i-th positive of its query
        starts = offsets[:-1][valid]
        ap[valid] = np.add.reduceat(position / ranks, starts) / n[valid]
        inp[valid] = n[valid] / ranks[offsets[1:][valid] - 1]
        first[valid] = ranks[starts]
    cmc = first if cmc_rank is None else np.where(valid, np.asarray(cmc_rank, np.int64), 0)
    return QueryMetrics(n, first, cmc, ap, inp)


def summarize(metrics: QueryMetrics) -> dict:
    """rank-1/5/10/20, mAP and mINP in percent over the valid queries, and their count.

    With no valid query every metric is NaN (printed as null in JSON) rather than an error, so one
    empty setting does not hide the others.
    """
    valid = metrics.valid
    out = {}
    for k in CMC_RANKS:
        out[f"rank{k}"] = float(100.0 * np.mean(metrics.cmc_rank[valid] <= k)) if valid.any() else float("nan")
    out["mAP"] = float(100.0 * np.mean(metrics.ap[valid])) if valid.any() else float("nan")
    out["mINP"] = float(100.0 * np.mean(metrics.inp[valid])) if valid.any() else float("nan")
    out["valid_queries"] = int(valid.sum())
    return out


def over_trials(per_trial: list[dict]) -> dict:
    """Mean of each metric over trials, with the population std (ddof 0) under "std"."""
    out = {name: float(np.mean([t[name] for t in per_trial])) for name in METRICS}
    out["std"] = {name: float(np.std([t[name] for t in per_trial])) for name in METRICS}
    out["trials"] = len(per_trial)
    counts = [t["valid_queries"] for t in per_trial]
    out["valid_queries"] = int(min(counts))
    if len(per_trial) > 1:
        out["valid_queries_per_trial"] = counts
    return out
