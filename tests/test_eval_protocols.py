"""Every protocol against an independent dense reference (full similarity, stable argsort, per query).

Most inputs are *dyadic*: integer rows whose squared norm is a power of 4, so normalised values,
products and partial sums are exact in float32 and any kernel gives bit-identical similarities --
ties (many of them) are then true ties, and both sides must break them by gallery index.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from ppvi_cli.errors import PPVIError
from ppvi_cli.metrics.protocols import evaluate, protocols, single_shot_gallery
from ppvi_cli.metrics.rank import query_metrics

TOL = 1e-6


# ---------------------------------------------------------------- independent reference
def unit(x):
    x = np.asarray(x, np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n == 0, 1, n)


def similarity(qf, gf):
    """float64 cosine similarities, each pair summed on its own so identical rows tie exactly."""
    return (unit(qf)[:, None, :] * unit(gf)[None, :, :]).sum(-1)


def reference(qf, gf, qp, qc, gp, gc, protocol, gallery_paths=None, trials=1):
    """Dense per-query evaluation written from the protocol text; metrics in percent + per-query AP."""
    per_trial, per_query = [], []
    for trial in range(trials):
        rows = np.arange(len(gp))
        if protocol.startswith("sysu"):
            cams = (1, 2, 4, 5) if protocol == "sysu-all" else (1, 2)
            random.seed(trial)
            rows = []
            for pid in sorted(set(gp.tolist())):
                for cam in cams:
                    cand = [i for i in range(len(gp)) if gp[i] == pid and gc[i] == cam]
                    if cand:
                        key = (lambda i: gallery_paths[i]) if gallery_paths is not None else (lambda i: i)
                        rows.append(random.choice(sorted(cand, key=key)))
            rows = np.array(rows)
        sim = similarity(qf, gf[rows])
        tgp, tgc = gp[rows], gc[rows]
        aps, inps, cmc, apq = [], [], [], {}
        for i in range(len(qp)):
            order = np.argsort(-sim[i], kind="stable")
            if protocol == "market":
                junk = (tgp[order] == qp[i]) & (tgc[order] == qc[i])
            elif protocol.startswith("sysu"):
                junk = (qc[i] == 3) & (tgc[order] == 2)
            else:
                junk = np.zeros(len(order), bool)
            order = order[~junk]
            match = tgp[order] == qp[i]
            if not match.any():
                continue
            ranks = np.flatnonzero(match) + 1
            ap = np.mean(np.arange(1, len(ranks) + 1) / ranks)
            aps.append(ap)
            inps.append(len(ranks) / ranks[-1])
            apq[i] = ap
            if protocol.startswith("sysu"):
                ids = tgp[order]
                seen = []
                for pid in ids:
                    if pid not in seen:
                        seen.append(pid)
                cmc.append(seen.index(qp[i]) + 1)
            else:
                cmc.append(ranks[0])
        cmc = np.array(cmc)
        per_trial.append({**{f"rank{k}": 100 * np.mean(cmc <= k) for k in (1, 5, 10, 20)},
                          "mAP": 100 * np.mean(aps), "mINP": 100 * np.mean(inps), "valid": len(aps)})
        per_query.append(apq)
    mean = {k: np.mean([t[k] for t in per_trial]) for k in per_trial[0]}
    std = {k: np.std([t[k] for t in per_trial]) for k in per_trial[0]}
    return mean, std, per_trial, per_query


def assert_matches(got, ref, per_query_ref=None):
    mean, std, per_trial, _ = ref
    for key in ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP"):
        assert got[key] == pytest.approx(mean[key], abs=TOL), key
        assert got["std"][key] == pytest.approx(std[key], abs=TOL), key
    assert got["valid_queries"] == min(t["valid"] for t in per_trial)
    if per_query_ref is not None:
        for row in got["per_query"]:
            expected = per_query_ref[row["trial"]].get(row["query"])
            if expected is None:
                assert row["AP"] is None and row["positives"] == 0
            else:
                assert row["AP"] == pytest.approx(100 * expected, abs=TOL)


# ---------------------------------------------------------------- inputs
def dyadic(rng, n, dim, norm_exp):
    """[n, dim] int rows with squared norm 4**norm_exp: exact float32 arithmetic after normalising."""
    out = np.zeros((n, dim), np.float32)
    target = 4 ** norm_exp
    for r in range(n):
        while True:
            rem, vals = target, []
            while rem:
                a = int(rng.integers(1, math.isqrt(rem) + 1))
                vals.append(a)
                rem -= a * a
            if len(vals) <= dim:
                break
        pos = rng.choice(dim, len(vals), replace=False)
        # a power-of-two scale per row: normalising must undo it exactly
        out[r, pos] = np.array(vals) * rng.choice([-1, 1], len(vals)) * 2.0 ** int(rng.integers(-3, 4))
    return out


def market_case(seed=0, nq=50, ng=300, dim=16, norm_exp=4, n_ids=6):
    rng = np.random.default_rng(seed)
    qp = rng.integers(1, n_ids + 1, nq)
    qp[:2] = 99  # no match in the gallery
    gp = rng.integers(0, n_ids + 1, ng)  # pid 0: distractors
    qc, gc = rng.integers(1, 7, nq), rng.integers(1, 7, ng)
    # all junk: pid 50's only gallery images share query 2's camera
    qp[2], qc[2] = 50, 4
    gp[:3], gc[:3] = 50, 4
    qf, gf = dyadic(rng, nq, dim, norm_exp), dyadic(rng, ng, dim, norm_exp)
    gf[10:20] = gf[30:40]  # duplicated gallery rows: exact ties across ids
    gf[50:55] = qf[5]  # items equal to a query
    gf[60] = 0  # a zero feature (similarity 0 to everything)
    return qf, gf, qp, qc, gp, gc


def sysu_case(seed=0, n_ids=8, per_cam=3, nq=40, dim=16):
    rng = np.random.default_rng(seed)
    gp, gc, paths = [], [], []
    for pid in range(1, n_ids + 1):
        for cam in (1, 2, 4, 5):
            for k in range(int(rng.integers(0, per_cam + 1)) if pid % 3 == 0 else per_cam):
                gp.append(pid)
                gc.append(cam)
                paths.append(f"cam{cam}/{pid:04d}/{int(rng.integers(0, 10**4)):04d}_{k}.jpg")
    gp, gc, paths = np.array(gp), np.array(gc), np.array(paths)
    perm = rng.permutation(len(gp))  # pool rows in no particular order
    gp, gc, paths = gp[perm], gc[perm], paths[perm]
    qp = rng.integers(1, n_ids + 2, nq)  # id n_ids+1: no RGB image
    qc = rng.choice([3, 6], nq)
    qf, gf = dyadic(rng, nq, dim, 3), dyadic(rng, len(gp), dim, 3)
    return qf, gf, qp, qc, gp, gc, paths


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.parametrize("chunk,block", [(7, 5), (64, 512), (100000, 3)])
def test_market_matches_reference(backend, chunk, block):
    case = market_case()
    got = evaluate(*case, "market", backend=backend, chunk_size=chunk, query_block=block, per_query=True)
    ref = reference(*case, "market")
    assert_matches(got, ref, ref[3])
    assert got["trials"] == 1 and got["std"]["mAP"] == 0


@pytest.mark.parametrize("norm_exp", [1, 2, 6])  # 1: very few distinct similarities (ties everywhere)
def test_market_ties(norm_exp):
    case = market_case(seed=norm_exp, norm_exp=norm_exp, dim=8)
    ref = reference(*case, "market")
    for backend in ("faiss", "torch"):
        got = evaluate(*case, "market", backend=backend, chunk_size=11, query_block=4, per_query=True)
        assert_matches(got, ref, ref[3])


@pytest.mark.parametrize("protocol", ["regdb-v2t", "regdb-t2v"])
def test_regdb_matches_reference(protocol):
    qf, gf, qp, qc, gp, gc = market_case(seed=3)
    got = evaluate(qf, gf, qp, qc, gp, gc, protocol, backend="torch", chunk_size=13, query_block=8, per_query=True)
    ref = reference(qf, gf, qp, qc, gp, gc, protocol)
    assert_matches(got, ref, ref[3])
    with pytest.raises(PPVIError, match="--trials does not apply"):
        evaluate(qf, gf, qp, qc, gp, gc, protocol, trials=10)


@pytest.mark.parametrize("protocol", ["sysu-all", "sysu-indoor"])
@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_sysu_matches_reference(protocol, backend):
    qf, gf, qp, qc, gp, gc, paths = sysu_case()
    got = evaluate(qf, gf, qp, qc, gp, gc, protocol, trials=4, backend=backend, chunk_size=5, query_block=6,
                   per_query=True, gallery_paths=paths)
    ref = reference(qf, gf, qp, qc, gp, gc, protocol, gallery_paths=paths, trials=4)
    assert_matches(got, ref, ref[3])
    assert got["trials"] == 4 and len(got["valid_queries_per_trial"]) == 4
    assert got["std"]["mAP"] > 0  # the trials really draw different galleries


def test_sysu_default_trials_and_row_order_draw():
    qf, gf, qp, qc, gp, gc, _ = sysu_case(seed=5)
    got = evaluate(qf, gf, qp, qc, gp, gc, "sysu-all")
    assert got["trials"] == 10
    assert_matches(got, reference(qf, gf, qp, qc, gp, gc, "sysu-all", trials=10))


def test_single_shot_draw_is_the_baselines():
    """Same stream as `random.seed(trial)` + `random.choice(sorted(files))` per id and camera."""
    _, _, _, _, gp, gc, paths = sysu_case(seed=2)
    for trial in (0, 7):
        rows = single_shot_gallery(gp, gc, paths, (1, 2, 4, 5), trial)
        random.seed(trial)
        expected = []
        for pid in sorted(set(gp.tolist())):
            for cam in (1, 2, 4, 5):
                files = sorted(paths[(gp == pid) & (gc == cam)].tolist())
                if files:
                    expected.append(random.choice(files))
        assert paths[rows].tolist() == expected


def test_one_image_gallery_and_no_valid_query():
    rng = np.random.default_rng(0)
    qf, gf = dyadic(rng, 4, 8, 2), dyadic(rng, 1, 8, 2)
    qp, qc = np.array([1, 1, 2, 1]), np.array([1, 2, 1, 1])
    gp, gc = np.array([1]), np.array([1])
    got = evaluate(qf, gf, qp, qc, gp, gc, "market", chunk_size=1, query_block=1)
    assert got["valid_queries"] == 1 and got["rank1"] == 100 and got["mAP"] == 100
    none = evaluate(qf, gf, qp, qc, np.array([7]), gc, "market")
    assert none["valid_queries"] == 0 and math.isnan(none["mAP"])


def continuous_without_near_ties(nq, ng, dim, duplicate=lambda g: None):
    """Gaussian features (after `duplicate` copies some gallery rows) whose distinct similarities are
    all more than 1e-6 apart (10x float32 rounding), so float32 and float64 rank them alike."""
    for seed in range(100):
        rng = np.random.default_rng(seed)
        qf = rng.standard_normal((nq, dim)).astype(np.float32)
        gf = rng.standard_normal((ng, dim)).astype(np.float32)
        duplicate(gf)
        gaps = np.diff(np.sort(similarity(qf, gf), axis=1), axis=1)
        if gaps[gaps > 0].min() > 1e-6:
            return rng, qf, gf
    pytest.fail("no seed without near-ties")


def test_continuous_features_without_near_ties():
    """Plain float features: exact as long as no two similarities are closer than float32 rounding."""
    rng, qf, gf = continuous_without_near_ties(30, 150, 32)
    qp, gp = rng.integers(0, 5, 30), rng.integers(0, 5, 150)
    qc, gc = rng.integers(1, 4, 30), rng.integers(1, 4, 150)
    ref = reference(qf, gf, qp, qc, gp, gc, "market")
    for backend in ("faiss", "torch"):
        assert_matches(evaluate(qf, gf, qp, qc, gp, gc, "market", backend=backend, chunk_size=16,
                                query_block=7, per_query=True), ref, ref[3])


@pytest.mark.parametrize("collapsed", [False, True])
def test_duplicated_float_rows_tie_exactly(collapsed):
    """Bit-identical gallery rows (copies; or an anonymiser that maps most images to one feature)
    must tie and be ordered by index, although BLAS rounds copies at different positions differently."""
    def duplicate(g):
        if collapsed:
            keep = np.arange(0, len(g), 10)
            g[np.setdiff1d(np.arange(len(g)), keep)] = g[1]
        else:
            g[100:140] = g[0:40]
            g[150:160] = g[5]

    rng, qf, gf = continuous_without_near_ties(30, 200, 64, duplicate)
    qp, gp = rng.integers(0, 4, 30), rng.integers(0, 4, 200)
    qc, gc = rng.integers(1, 4, 30), rng.integers(1, 4, 200)
    for protocol in ("market", "regdb-t2v"):
        ref = reference(qf, gf, qp, qc, gp, gc, protocol)
        for backend in ("faiss", "torch"):
            got = evaluate(qf, gf, qp, qc, gp, gc, protocol, backend=backend, chunk_size=16, query_block=7,
                           per_query=True, topk=15)
            assert_matches(got, ref, ref[3])
            sim = similarity(qf, gf)
            for i in range(30):
                order = np.argsort(-sim[i], kind="stable")
                if protocol == "market":
                    order = order[~((gp[order] == qp[i]) & (gc[order] == qc[i]))]
                assert got["ranked"]["gallery"][i].tolist() == order[:15].tolist()


def test_topk_ranked_lists_hide_junk_and_break_ties_by_index():
    qf, gf, qp, qc, gp, gc = market_case(seed=4, norm_exp=1, dim=8)
    got = evaluate(qf, gf, qp, qc, gp, gc, "market", topk=12, chunk_size=9, query_block=4)
    ranked = got["ranked"]
    sim = similarity(qf, gf)
    for i in range(len(qp)):
        order = np.argsort(-sim[i], kind="stable")
        order = order[~((gp[order] == qp[i]) & (gc[order] == qc[i]))][:12]
        assert ranked["gallery"][i].tolist() == order.tolist()
        assert np.allclose(ranked["score"][i], sim[i, order], atol=1e-6)
        assert ranked["match"][i].tolist() == (gp[order] == qp[i]).tolist()


def test_topk_longer_than_gallery_pads():
    rng = np.random.default_rng(1)
    qf, gf = dyadic(rng, 3, 8, 2), dyadic(rng, 4, 8, 2)
    got = evaluate(qf, gf, np.array([1, 2, 3]), np.array([1, 1, 1]), np.array([1, 1, 2, 3]),
                   np.array([1, 2, 2, 2]), "market", topk=6)
    assert (got["ranked"]["gallery"][0] >= 0).sum() == 3  # gallery 0 is junk for query 0
    assert (got["ranked"]["gallery"][0][3:] == -1).all() and np.isnan(got["ranked"]["score"][0][3:]).all()


def test_rank_metrics_by_hand():
    m = query_metrics(np.array([0, 3, 3, 4]), np.array([1, 3, 10, 2]))
    assert m.ap[0] == pytest.approx((1 / 1 + 2 / 3 + 3 / 10) / 3)
    assert m.inp[0] == pytest.approx(3 / 10) and m.first_rank[0] == 1
    assert np.isnan(m.ap[1]) and m.first_rank[1] == 0
    assert m.ap[2] == pytest.approx(0.5) and m.inp[2] == pytest.approx(0.5)


def test_bad_inputs_raise_ppvi_error():
    qf, gf, qp, qc, gp, gc = market_case()
    with pytest.raises(PPVIError, match="unknown protocol 'markte'; did you mean 'market'"):
        evaluate(qf, gf, qp, qc, gp, gc, "markte")
    with pytest.raises(PPVIError, match="query_camids"):
        evaluate(qf, gf, qp, qc[:-1], gp, gc)
    with pytest.raises(PPVIError, match="dims"):
        evaluate(qf, gf[:, :8], qp, qc, gp, gc)
    bad = gf.copy()
    bad[3, 0] = np.nan
    with pytest.raises(PPVIError, match="NaN"):
        evaluate(qf, bad, qp, qc, gp, gc)
    with pytest.raises(PPVIError, match="--backend"):
        evaluate(qf, gf, qp, qc, gp, gc, backend="annoy")
    assert set(protocols.names()) == {"market", "sysu-all", "sysu-indoor", "regdb-v2t", "regdb-t2v"}


@pytest.mark.parametrize("fraction", [0.0, 2.0])  # counting always dense / always item by item
@pytest.mark.parametrize("separated", [False, True])
def test_both_counting_paths(monkeypatch, fraction, separated):
    """Positives on top (a good model) or anywhere: both ways of counting give the reference's ranks."""
    import ppvi_cli.metrics.retrieval as retrieval

    monkeypatch.setattr(retrieval, "SPARSE_FRACTION", fraction)
    rng = np.random.default_rng(7)
    protos = dyadic(rng, 8, 16, 3)
    qp, gp = rng.integers(0, 8, 40), rng.integers(0, 8, 400)
    qf, gf = (protos[qp].copy(), protos[gp].copy()) if separated else (dyadic(rng, 40, 16, 2), dyadic(rng, 400, 16, 2))
    gf[::3] = dyadic(rng, len(gf[::3]), 16, 3)  # a third of the gallery is off-prototype
    qc, gc = rng.integers(1, 4, 40), rng.integers(1, 4, 400)
    for protocol in ("market", "regdb-v2t"):
        ref = reference(qf, gf, qp, qc, gp, gc, protocol)
        got = evaluate(qf, gf, qp, qc, gp, gc, protocol, chunk_size=50, query_block=10, per_query=True)
        assert_matches(got, ref, ref[3])


def test_products_stay_bounded_by_blocks_and_chunks():
    """No product is ever queries x gallery: each is at most query_block x max(chunk, own items)."""
    from ppvi_cli.metrics.retrieval import rank_positives
    from ppvi_cli.metrics.scorers import TorchScorer
    import torch

    qf, gf, qp, qc, gp, gc = market_case(nq=60, ng=600, n_ids=30)
    shapes = []

    class Recording(TorchScorer):
        def scores(self, q, g):
            shapes.append((len(q), len(g)))
            return super().scores(q, g)

    rank_positives(qf, gf, qp, qc, gp, gc, scorer=Recording(torch.device("cpu")), chunk_size=32, query_block=8)
    own_max = max(np.bincount(gp).max(), 3)  # a block of 8 queries has at most 8 pids' items
    assert max(r for r, _ in shapes) <= 8
    assert max(c for _, c in shapes) <= max(32, 8 * own_max)
    assert sum(r * c for r, c in shapes) < 1.3 * 60 * 600  # every score computed about once


def test_score_keys_order_and_round_trip():
    import torch

    from ppvi_cli.metrics.retrieval import decode_keys, score_keys

    scores = torch.tensor([[0.5, -0.0, 0.0, -0.25, -1.0, 1.0, 0.5, 1e-30, -1e-30]])
    index = torch.arange(9)
    keys = score_keys(scores, index)[0]
    order = torch.argsort(keys, descending=True).tolist()
    expected = sorted(range(9), key=lambda j: (-float(scores[0, j]), j))  # -0.0 ties with 0.0
    assert order == expected
    back, idx = decode_keys(keys)
    assert idx.tolist() == list(range(9))
    assert np.array_equal(back, scores[0].numpy()) and not np.signbit(back[1])  # -0.0 comes back as +0.0
