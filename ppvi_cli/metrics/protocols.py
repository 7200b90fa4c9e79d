"""Evaluation protocols (market, sysu-all, sysu-indoor, regdb-v2t, regdb-t2v) and their trials.

Each protocol says which gallery items are junk for a query, whether CMC counts each gallery id
once, and how a trial's gallery is drawn. Exact rules (docs/architecture.md, "Evaluation"):
- market: junk = same pid and same camera as the query; pid 0 distractors stay; one trial.
- sysu-all / sysu-indoor: per trial, `random.seed(trial)` then one random RGB image per (id, camera)
  for ids in ascending order and cameras 1,2,4,5 / 1,2 in that order, each drawn with
  `random.choice` from that id's images of that camera sorted by path (by row order when the file
  has no paths): the same draws as mangye16/Cross-Modal-Re-ID-baseline `process_gallery_sysu`.
  Junk: for a query from camera 3, every gallery image of camera 2, whatever its id -- as that
  baseline's `eval_sysu` code does (`remove = (q_camid == 3) & (g_camids == 2)`; its comment about
  "same pid" is stale). CMC counts each gallery id at its first occurrence; mAP/mINP use the list
  with every image. 10 trials by default.
- regdb-v2t / regdb-t2v: no junk; the features file holds one trial's query and gallery.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from ppvi_cli.errors import PPVIError
from ppvi_cli.metrics.rank import over_trials, query_metrics, summarize
from ppvi_cli.metrics.retrieval import JunkRule, rank_positives
from ppvi_cli.metrics.scorers import make_scorer
from ppvi_cli.progress import Progress, Tracker
from ppvi_cli.registry import Registry


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    junk: JunkRule | None = None
    junk_within_pid: bool = True  # the junk rule only marks items of the query's own pid
    dedup_ids: bool = False  # CMC on the first occurrence of each gallery id
    gallery_cams: tuple[int, ...] | None = None  # single-shot gallery drawn per trial from these cameras
    default_trials: int = 1

    def trial_count(self, trials: int | None) -> int:
        if trials is None:
            return self.default_trials
        if self.gallery_cams is None and trials != 1:
            raise PPVIError(f"--trials does not apply to protocol {self.name}: its features file holds one "
                            "trial's query and gallery (evaluate one file per trial)")
        if trials < 1:
            raise PPVIError(f"--trials must be at least 1, got {trials}")
        return trials

    def trial_gallery(self, pids: np.ndarray, camids: np.ndarray, paths: np.ndarray | None,
                      trial: int) -> np.ndarray | None:
        """Rows of the gallery pool used in `trial` (in gallery order), or None for the whole gallery."""
        if self.gallery_cams is None:
            return None
        return single_shot_gallery(pids, camids, paths, self.gallery_cams, trial)


def single_shot_gallery(pids: np.ndarray, camids: np.ndarray, paths: np.ndarray | None,
                        cams: tuple[int, ...], trial: int) -> np.ndarray:
    """One random row per (id, camera), ids ascending, cameras in `cams` order, seeded by `trial`."""
    rng = random.Random(trial)  # same stream as random.seed(trial)
    tiebreak = np.arange(len(pids)) if paths is None else np.asarray(paths)
    order = np.lexsort((tiebreak, camids, pids))
    p, c = pids[order], camids[order]
    cuts = np.flatnonzero((p[1:] != p[:-1]) | (c[1:] != c[:-1])) + 1
    groups = {(int(p[s]), int(c[s])): order[s:e] for s, e in zip(np.r_[0, cuts], np.r_[cuts, len(order)])}
    chosen = []
    for pid in np.unique(pids):
        for cam in cams:
            if (int(pid), cam) in groups:
                chosen.append(rng.choice(list(groups[int(pid), cam])))
    return np.asarray(chosen, dtype=np.int64)


def _same_pid_same_cam(qp, qc, gp, gc):
    return (qp == gp) & (qc == gc)


def _cam3_drops_cam2(qp, qc, gp, gc):
    return (qc == 3) & (gc == 2)


protocols: Registry[Protocol] = Registry("protocol")
SYSU_TRIALS = 10  # galleries drawn per evaluation (seeds 0..9), as the VI baseline
_SYSU = dict(junk=_cam3_drops_cam2, junk_within_pid=False, dedup_ids=True, default_trials=SYSU_TRIALS)
for _p in (
    Protocol("market", "Market-1501: junk = same pid and camera", junk=_same_pid_same_cam),
    Protocol("sysu-all", "SYSU-MM01 all-search: single-shot RGB gallery of cams 1,2,4,5", gallery_cams=(1, 2, 4, 5),
             **_SYSU),
    Protocol("sysu-indoor", "SYSU-MM01 indoor-search: single-shot RGB gallery of cams 1,2", gallery_cams=(1, 2),
             **_SYSU),
    Protocol("regdb-v2t", "RegDB visible to thermal, no junk"),
    Protocol("regdb-t2v", "RegDB thermal to visible, no junk"),
):
    protocols.register(_p.name)(_p)


def _check_inputs(qf, gf, qp, qc, gp, gc) -> None:
    for name, feats, ids in (("query", qf, (qp, qc)), ("gallery", gf, (gp, gc))):
        if np.ndim(feats) != 2 or len(feats) == 0:
            raise PPVIError(f"{name} features must be a non-empty [rows, dims] array, got shape {np.shape(feats)}")
        for label, arr in zip(("pids", "camids"), ids):
            if np.ndim(arr) != 1 or len(arr) != len(feats):
                raise PPVIError(f"{name}_{label} has shape {np.shape(arr)} but {name} features have {len(feats)} rows")
    if qf.shape[1] != gf.shape[1]:
        raise PPVIError(f"query features have {qf.shape[1]} dims but gallery features {gf.shape[1]}")


def evaluate(
    query_feats: np.ndarray,
    gallery_feats: np.ndarray,
    query_pids: np.ndarray,
    query_camids: np.ndarray,
    gallery_pids: np.ndarray,
    gallery_camids: np.ndarray,
    protocol: str = "market",
    *,
    trials: int | None = None,
    backend: str = "auto",
    device: str = "cpu",
    chunk_size: int = 8192,
    query_block: int = 512,
    per_query: bool = False,
    topk: int = 0,
    gallery_paths: np.ndarray | None = None,
    on_progress: Progress | None = None,
) -> dict:
    """rank-1/5/10/20, mAP, mINP (percent; mean and population std over trials) of one setting.

    Args: features [Q, D] / [G, D] (normalised here), pids/camids [Q] / [G] ints, a registered
    `protocol`, `trials` (SYSU only; default 10), `backend` auto|faiss|torch, `device` auto|cpu|cuda[:N].
    Returns a dict with the metrics, "std", "trials", "valid_queries", "backend" (the one that ran:
    faiss-cpu, faiss-gpu or torch), "device" (where it ran), "notes"; with
    `per_query`, "per_query" rows (trial, query, pid, camid, positives, first_rank, cmc_rank, AP, INP
    in percent, None when the query has no positive); with `topk`, "ranked" (trial 0): per query the
    gallery rows (of the full gallery), scores and match flags of its top-k kept items.
    Progress: stage "eval <protocol>", gallery rows ranked over all trials (total unknown when the
    protocol draws a per-trial gallery).
    """
    proto = protocols.get(protocol)
    _check_inputs(query_feats, gallery_feats, query_pids, query_camids, gallery_pids, gallery_camids)
    n_trials = proto.trial_count(trials)
    if chunk_size < 1 or query_block < 1:
        raise PPVIError("chunk_size and query_block must be positive")
    scorer, notes = make_scorer(backend, device)
    query_pids, gallery_pids = np.asarray(query_pids, np.int64), np.asarray(gallery_pids, np.int64)
    query_camids, gallery_camids = np.asarray(query_camids, np.int64), np.asarray(gallery_camids, np.int64)
    per_trial, rows, ranked = [], [], None
    tracker = Tracker(on_progress, f"eval {protocol}", _eval_total(proto, n_trials, len(gallery_pids)))
    for trial in range(n_trials):
        pool = proto.trial_gallery(gallery_pids, gallery_camids, gallery_paths, trial)
        take = (lambda a: a) if pool is None else (lambda a: a[pool])  # noqa: E731
        if pool is not None and len(pool) == 0:
            raise PPVIError(f"protocol {protocol}: the gallery has no image of cameras {proto.gallery_cams}")
        ranking = rank_positives(
            query_feats, take(gallery_feats), query_pids, query_camids, take(gallery_pids), take(gallery_camids),
            junk=proto.junk, junk_within_pid=proto.junk_within_pid, scorer=scorer, chunk_size=chunk_size,
            query_block=query_block, topk=topk if trial == 0 else 0, dedup_ids=proto.dedup_ids,
            on_progress=tracker.part())
        metrics = query_metrics(ranking.offsets, ranking.ranks, ranking.id_ranks)
        per_trial.append(summarize(metrics))
        if per_query:
            rows.extend(_query_rows(trial, metrics, query_pids, query_camids))
        if topk and trial == 0:
            local = ranking.top_index
            index = np.where(local >= 0, local if pool is None else pool[np.maximum(local, 0)], -1)
            ranked = {"trial": 0, "topk": topk, "gallery": index, "score": ranking.top_score,
                      "match": (index >= 0) & (gallery_pids[np.maximum(index, 0)] == query_pids[:, None])}
    result = over_trials(per_trial)
    result["backend"] = scorer.name
    result["device"] = str(scorer.device)
    result["notes"] = notes
    if per_query:
        result["per_query"] = rows
    if ranked is not None:
        result["ranked"] = ranked
    return result


def _query_rows(trial, m, pids, camids) -> list[dict]:
    pct = lambda v: None if np.isnan(v) else float(100.0 * v)  # noqa: E731
    return [{"trial": trial, "query": i, "pid": int(pids[i]), "camid": int(camids[i]),
             "positives": int(m.positives[i]), "first_rank": int(m.first_rank[i]) or None,
             "cmc_rank": int(m.cmc_rank[i]) or None, "AP": pct(m.ap[i]), "INP": pct(m.inp[i])}
            for i in range(len(pids))]


def _eval_total(proto, n_trials: int, gallery: int) -> int | None:
    """Gallery rows ranked over `n_trials`; unknown (None) when each trial draws its own gallery."""
    return None if proto.gallery_cams else n_trials * gallery


def evaluate_settings(features, protocol: str, settings: list[str], on_progress: Progress | None = None,
                      **options) -> dict:
    """`evaluate` for each setting of a `FeatureSet`: {"protocol", "results": {setting: result}}.

    Progress: stage "eval <protocol>", gallery rows ranked over every setting and trial."""
    proto = protocols.get(protocol)
    pairs = {name: features.setting(name) for name in settings}  # check every setting before any work
    n_trials = proto.trial_count(options.get("trials"))
    total = _eval_total(proto, n_trials, len(features.gallery_pids))
    tracker = Tracker(on_progress, f"eval {protocol}", None if total is None else len(pairs) * total)
    results = {}
    for name, (q, g) in pairs.items():
        results[name] = evaluate(q, g, features.query_pids, features.query_camids, features.gallery_pids,
                                 features.gallery_camids, protocol, gallery_paths=features.gallery_paths,
                                 on_progress=tracker.part(), **options)
    return {"protocol": protocol, "results": results}
