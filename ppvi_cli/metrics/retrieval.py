"""Exact ranks of every positive, streamed over the gallery in chunks (no query x gallery matrix).

Ranking rule (docs/architecture.md, "Evaluation"): for a query, the gallery minus its junk items, ordered by
descending similarity, ties broken by ascending gallery index. Similarity is the inner product of
L2-normalised float32 features.

How it stays exact without the dense matrix:
- Every (score, gallery index) pair becomes one int64 *key* whose integer order is the ranking
  order: the float32 score's bits mapped to a monotone int32 in the high half, `2**32 - 1 - index`
  in the low half. Keys are unique, so "item j ranks before item p" is just `key_j > key_p`.
- Queries are grouped in blocks sorted by pid. A block's *own* gallery items (those whose pid is
  one of the block's pids, hence every positive and, for market, every junk item) are scored first,
  in one product; that gives each query's positives, sorted (their scores and keys are the
  thresholds). The rest of the gallery is then streamed in chunks; each item is bucketed by the
  number of thresholds it beats (`searchsorted` on the float scores, the key deciding exact ties)
  into a per-query histogram. Rank of a positive = 1 + number of kept items that beat it.
  Only items at or above a query's lowest positive can beat one: when they are few (a good model)
  just those are bucketed.
- Each score is computed once and every decision uses that one value. A positive's score compared
  with its neighbours' from another product could differ in the last bit (BLAS kernels round a dot
  product differently by the shape and position of the block: we measured 7% of entries differing
  with OpenBLAS between block shapes), which would break ties the wrong way. Own items are dropped
  from the streamed chunks, so nothing is scored twice for a decision. Exact ties (duplicated rows)
  are honoured whenever the kernel gives the two duplicates the same value.

Memory: O(query_block x chunk_size) per step, plus per query its positive keys and a histogram.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ppvi_cli.metrics.scorers import Scorer, duplicate_rows, exact_scores, l2_normalize, make_scorer
from ppvi_cli.progress import Progress, Tracker

SPARSE_FRACTION = 0.125  # below this share of candidates a block is counted item by item (faster)
_LOW = 2**32 - 1  # the low half of a key holds LOW - gallery index: smaller index, larger key

# junk(query_pids, query_camids, gallery_pids, gallery_camids) -> bool tensor: tensors shaped [B,1] and
# [1,C] give [B,C]; 1-D tensors of equal length give the flags of those pairs
JunkRule = Callable[[Any, Any, Any, Any], Any]


def score_keys(scores, gallery_index):
    """Unique int64 ranking keys: larger key = ranked earlier. `scores` [B, C] float32, `gallery_index` [C]."""
    import torch

    bits = (scores + 0.0).contiguous().view(torch.int32)  # + 0.0 turns -0.0 into +0.0 (they tie)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
    return ordered * 2**32 + (_LOW - gallery_index)


def decode_keys(keys) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `score_keys`: (scores float32, gallery indices int64), numpy."""
    import torch

    ordered = torch.div(keys, 2**32, rounding_mode="floor")
    index = _LOW - (keys - ordered * 2**32)
    bits = ordered.to(torch.int32)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return bits.view(torch.float32).cpu().numpy(), index.cpu().numpy()


@dataclass
class Ranking:
    """What the metrics need, per query (Q queries).

    offsets [Q+1] and ranks [sum of positives]: query q's positives ranked at
      `ranks[offsets[q]:offsets[q+1]]`, ascending, 1-based, among its kept gallery items;
    id_ranks [Q] or None: 1-based rank of the query's pid in the ranked list with each gallery id
      kept only at its first occurrence (0 when no positive);
    top_index, top_score [Q, k]: the k best kept gallery items (index -1 and score NaN pad short lists).
    """

    offsets: np.ndarray
    ranks: np.ndarray
    id_ranks: np.ndarray | None
    top_index: np.ndarray
    top_score: np.ndarray


class _Block:
    """One block of queries sharing a pass over the gallery, and its running state."""

    def __init__(self, rows, own, group):
        self.rows, self.own, self.group = rows, own, group  # query rows, own gallery indices, pid group


def _query_blocks(query_pids, gallery_pids, query_block, budget) -> list[_Block]:
    """Queries sorted by pid, cut into blocks of at most `query_block` whose own-item product
    (queries x own gallery items) stays under `budget` elements (a single pid may exceed it: its
    positives must all be held)."""
    order = np.argsort(query_pids, kind="stable")
    g_order = np.argsort(gallery_pids, kind="stable")
    g_sorted = gallery_pids[g_order]
    uniq, starts = np.unique(query_pids[order], return_index=True)
    lo, hi = np.searchsorted(g_sorted, uniq, "left"), np.searchsorted(g_sorted, uniq, "right")
    bounds = np.append(starts, len(order))
    blocks, group, count, own = [], [], 0, 0

    def close():
        rows = np.concatenate([order[bounds[i]:bounds[i + 1]] for i in group])
        members = np.sort(np.concatenate([g_order[lo[i]:hi[i]] for i in group]))
        for s in range(0, len(rows), query_block):  # a pid with more queries than a block: split its rows
            blocks.append(_Block(rows[s:s + query_block], members, group[0]))

    for i in range(len(uniq)):
        n, extra = bounds[i + 1] - bounds[i], hi[i] - lo[i]
        if group and (count + n > query_block or (count + n) * (own + extra) > budget):
            close()
            group, count, own = [], 0, 0
        group.append(i)
        count, own = count + n, own + extra
    if group:
        close()
    return blocks


def rank_positives(
    query: np.ndarray,
    gallery: np.ndarray,
    query_pids: np.ndarray,
    query_camids: np.ndarray,
    gallery_pids: np.ndarray,
    gallery_camids: np.ndarray,
    *,
    junk: JunkRule | None = None,
    junk_within_pid: bool = True,
    scorer: Scorer | None = None,
    chunk_size: int = 8192,
    query_block: int = 512,
    topk: int = 0,
    dedup_ids: bool = False,
    on_progress: Progress | None = None,
) -> Ranking:
    """Rank every positive of every query exactly, streaming `gallery` in chunks.

    Args:
        query: [Q, D] features (any float dtype; normalised here). gallery: [G, D], normalised per chunk
            (a read-only memory map is fine: it is only read chunk by chunk).
        query_pids, query_camids: [Q] ints. gallery_pids, gallery_camids: [G] ints.
        junk: rule marking gallery items removed from a query's list (see protocols); None = no junk.
        junk_within_pid: the rule only ever marks items of the query's own pid (streamed chunks skip it).
        scorer: from `make_scorer` (default: faiss on the CPU).
        chunk_size: gallery rows per streamed chunk; query_block: queries per product.
        topk: also keep the k best kept items per query (ranked lists).
        dedup_ids: also rank the query's id with each gallery id counted once (SYSU CMC).
        on_progress: stage "rank", gallery rows done (of G) after each chunk.

    Example:
        >>> r = rank_positives(q, g, qp, qc, gp, gc, junk=None)        # doctest: +SKIP
        >>> r.ranks[r.offsets[0]:r.offsets[1]]  # ranks of query 0's positives
    """
    import torch

    scorer = scorer or make_scorer("faiss", "cpu")[0]
    ctx = _Context(scorer, junk, junk_within_pid, topk, dedup_ids, gallery_pids, gallery_camids)
    query_pids, query_camids = np.asarray(query_pids, np.int64), np.asarray(query_camids, np.int64)
    blocks = _query_blocks(query_pids, ctx.gallery_pids, query_block, query_block * chunk_size)
    item_group = np.full(len(gallery), -1)  # which block group's own items a gallery row is
    for b in blocks:
        item_group[b.own] = b.group
    qn = l2_normalize(query)
    ctx.duplicates(gallery)
    for b in blocks:
        b.q, b.qt = scorer.queries(qn[b.rows]), ctx.t(qn[b.rows])
        b.qp, b.qc = ctx.t(query_pids[b.rows])[:, None], ctx.t(query_camids[b.rows])[:, None]
        if len(b.own):
            _first_pass(ctx, b, scorer.gallery(l2_normalize(gallery[b.own])), ctx.tied(gallery, b.own))
        else:
            _no_own_items(ctx, b)

    tracker = Tracker(on_progress, "rank", len(gallery))
    for start in range(0, len(gallery), chunk_size):
        stop = min(start + chunk_size, len(gallery))
        g = scorer.gallery(l2_normalize(gallery[start:stop]))
        index = torch.arange(start, stop, device=ctx.device)
        gp, gc, groups = ctx.gp[start:stop][None], ctx.gc[start:stop][None], ctx.t(item_group[start:stop])
        tied = ctx.tied(gallery, np.arange(start, stop))
        for b in blocks:
            if b.counting or topk:
                dropped = _Dropped(ctx, b, gp, gc, own=groups == b.group)
                _update(ctx, b, _scores(ctx, b, g, tied), index, dropped)
        tracker.to(stop)
    return _collect(blocks, len(query), topk, dedup_ids)


class _Context:
    """What every block update shares: the scorer, the protocol's rules and the gallery labels."""

    def __init__(self, scorer, junk, junk_within_pid, topk, dedup_ids, gallery_pids, gallery_camids):
        import torch

        self.scorer, self.device = scorer, scorer.device
        self.junk, self.junk_within_pid, self.topk = junk, junk_within_pid, topk
        self.gallery_pids = np.asarray(gallery_pids, np.int64)
        self.gp, self.gc = self.t(self.gallery_pids), self.t(np.asarray(gallery_camids, np.int64))
        self.ids = self.t(np.unique(self.gallery_pids, return_inverse=True)[1]) if dedup_ids else None
        self.n_ids = int(self.ids.max()) + 1 if dedup_ids and len(self.gallery_pids) else 0
        self.min_key = torch.iinfo(torch.int64).min

    def t(self, array):
        import torch

        return torch.as_tensor(array, device=self.device)

    def duplicates(self, gallery) -> None:
        """Find bit-identical gallery rows once (they must tie, whichever product scores them)."""
        self.dup_group, self.dup_first = duplicate_rows(gallery)

    def tied(self, gallery, cols: np.ndarray):
        """For a product over gallery rows `cols`: (columns of duplicated rows, which of the group
        representatives each is, the representatives' normalised features), or None."""
        groups = self.dup_group[cols]
        where = np.flatnonzero(groups >= 0)
        if not len(where):
            return None
        uniq, which = np.unique(groups[where], return_inverse=True)
        return self.t(where), self.t(which), self.t(l2_normalize(gallery[self.dup_first[uniq]]))


def _scores(ctx: _Context, b: _Block, g, tied):
    """A block's scores against prepared gallery rows `g`; duplicated rows get one exact shared score."""
    scores = ctx.scorer.scores(b.q, g)
    if tied is not None:
        where, which, reps = tied
        scores[:, where] = exact_scores(b.qt, reps)[:, which]
    return scores


def _no_own_items(ctx: _Context, b: _Block) -> None:
    """A block whose pids are absent from the gallery: no positive, only ranked lists to keep."""
    import torch

    nb, dev = len(b.rows), ctx.device
    b.top = torch.full((nb, ctx.topk), ctx.min_key, dtype=torch.int64, device=dev)
    b.ids = torch.full((nb, ctx.n_ids), ctx.min_key, dtype=torch.int64, device=dev) if ctx.ids is not None else None
    b.n_pos = torch.zeros(nb, dtype=torch.int64, device=dev)
    b.first = torch.full((nb, 1), ctx.min_key, dtype=torch.int64, device=dev)
    b.counting = False


def _first_pass(ctx: _Context, b: _Block, own_feats, tied) -> None:
    """Score a block against its own gallery items: positive thresholds, then their own counts."""
    import torch

    _no_own_items(ctx, b)
    nb, dev = len(b.rows), ctx.device
    own = ctx.t(b.own)
    gp, gc = ctx.gp[own][None], ctx.gc[own][None]
    dropped = _Dropped(ctx, b, gp, gc, own=None)
    scores = dropped.masked(_scores(ctx, b, own_feats, tied))
    positive = (b.qp == gp) & (scores > -np.inf)
    b.n_pos = positive.sum(1)
    m = max(int(b.n_pos.max()), 1)
    keys = score_keys(scores, own).masked_fill_(~positive, ctx.min_key)
    desc, where = keys.topk(m, dim=1)
    b.first = desc[:, :1]
    # thresholds ascending; rows with fewer positives are padded at the front (beaten by every item)
    b.thr_keys = desc.flip(1).contiguous()
    inf = torch.full((nb, 1), np.inf, device=dev)  # a sentinel so a bucket can always be gathered
    b.thr = torch.cat([scores.masked_fill(~positive, -np.inf).gather(1, where).flip(1), inf], 1).contiguous()
    b.lowest = torch.where(b.n_pos > 0, b.thr.gather(1, (m - b.n_pos).clamp(min=0)[:, None])[:, 0], np.inf)[:, None]
    b.hist = torch.zeros((nb, m + 1), dtype=torch.int64, device=dev)
    b.counting = bool((b.n_pos > 0).any())
    _update(ctx, b, scores, own, dropped)


class _Dropped:
    """The (query, item) pairs of one scored block that leave the queries' lists: junk, and in streamed
    chunks the block's own items (ranked in the first pass). Asked for in full only when needed; the
    item-by-item count asks only at its few candidates."""

    def __init__(self, ctx: _Context, b: _Block, gp, gc, own):
        self.b, self.gp, self.gc, self.own = b, gp, gc, own  # own: [C] bool, None in the first pass
        self.junk = ctx.junk if ctx.junk and not (own is not None and ctx.junk_within_pid) else None
        self._masked = None

    def masked(self, scores):
        """`scores` with dropped pairs set to -inf (computed once per block)."""
        if self._masked is None:
            self._masked = scores
            if self.own is not None:
                self._masked = self._masked.masked_fill(self.own[None], -np.inf)
            if self.junk:
                self._masked = self._masked.masked_fill(self.junk(self.b.qp, self.b.qc, self.gp, self.gc), -np.inf)
        return self._masked

    def at(self, r, c):
        """Dropped flags of the pairs (r[i], c[i]), [n] bool."""
        import torch

        out = self.own[c] if self.own is not None else torch.zeros_like(c, dtype=torch.bool)
        if self.junk:
            out = out | self.junk(self.b.qp[r, 0], self.b.qc[r, 0], self.gp[0, c], self.gc[0, c])
        return out


def _update(ctx: _Context, b: _Block, scores, index, dropped: _Dropped) -> None:
    """Fold a [B, C] block of scores of gallery rows `index` into `b`."""
    import torch

    if b.counting:
        _count(ctx, b, scores, index, dropped)
    if ctx.topk or b.ids is not None:
        masked = dropped.masked(scores)
        keys = score_keys(masked, index).masked_fill_(masked == -np.inf, ctx.min_key)
        if ctx.topk:
            b.top = torch.cat([b.top, keys], 1).topk(ctx.topk, dim=1).values
        if b.ids is not None:
            b.ids.scatter_reduce_(1, ctx.ids[index][None].expand_as(keys), keys, reduce="amax")


def _count(ctx: _Context, b: _Block, scores, index, dropped: _Dropped) -> None:
    """hist[q, j] += number of kept items beating exactly j thresholds of query q.

    Only items at or above a query's lowest positive can beat one; when those are few (a model that
    ranks positives high) they are bucketed alone, otherwise every item is. Buckets come from float
    scores; the rare items whose score equals a positive's are settled by key (index breaks the tie).
    """
    import torch

    candidate = scores >= b.lowest
    width = b.hist.shape[1]
    if int(torch.count_nonzero(candidate)) < SPARSE_FRACTION * scores.numel():
        r, c = candidate.nonzero(as_tuple=True)
        keep = ~dropped.at(r, c)
        r, c = r[keep], c[keep]
        value, thr = scores[r, c], b.thr[r]
        bucket = torch.searchsorted(thr, value[:, None])[:, 0]
        tie = (thr.gather(1, bucket[:, None])[:, 0] == value).nonzero()[:, 0]
        if len(tie):
            key = score_keys(value[tie], index[c[tie]])
            bucket[tie] = torch.searchsorted(b.thr_keys[r[tie]], key[:, None])[:, 0]
        b.hist.view(-1).scatter_add_(0, r * width + bucket, torch.ones_like(bucket))
        return
    scores = dropped.masked(scores)
    bucket = torch.searchsorted(b.thr, scores)  # thresholds strictly below each score
    tie = (b.thr.gather(1, bucket) == scores) & (scores > -np.inf)
    if bool(tie.any()):
        r, c = tie.nonzero(as_tuple=True)
        bucket[r, c] = torch.searchsorted(b.thr_keys[r], score_keys(scores[r, c], index[c])[:, None])[:, 0]
    b.hist.scatter_add_(1, bucket, torch.ones((1, 1), dtype=torch.int64, device=ctx.device).expand_as(bucket))


def _collect(blocks, nq, topk, dedup_ids) -> Ranking:
    """Turn per-block histograms into per-query positive ranks, in query order."""
    import torch

    counts = np.zeros(nq, dtype=np.int64)
    per_query: list[np.ndarray] = [np.empty(0, np.int64)] * nq
    id_ranks = np.zeros(nq, dtype=np.int64) if dedup_ids else None
    top_index = np.full((nq, topk), -1, dtype=np.int64)
    top_score = np.full((nq, topk), np.nan, dtype=np.float32)
    min_key = torch.iinfo(torch.int64).min
    for b in blocks:
        n_pos = b.n_pos.cpu().numpy()
        counts[b.rows] = n_pos
        if b.counting:
            m = b.hist.shape[1] - 1
            beaten = b.hist.flip(1).cumsum(1).flip(1)  # [:, j] = items beating at least j thresholds
            ranks = (1 + beaten[:, m - torch.arange(m, device=b.hist.device)]).cpu().numpy()
            for i, row in enumerate(b.rows):
                per_query[row] = ranks[i, :n_pos[i]]
        if dedup_ids:
            ahead = (b.ids > b.first).sum(1).cpu().numpy() + 1
            id_ranks[b.rows] = np.where(n_pos > 0, ahead, 0)
        if topk:
            score, index = decode_keys(b.top)
            valid = (b.top != min_key).cpu().numpy()
            top_index[b.rows] = np.where(valid, index, -1)
            top_score[b.rows] = np.where(valid, score, np.nan)
    ranks = np.concatenate(per_query) if nq else np.empty(0, np.int64)
    return Ranking(np.concatenate([[0], np.cumsum(counts)]), ranks.astype(np.int64), id_ranks, top_index, top_score)
