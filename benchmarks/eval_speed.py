"""`ppvi eval` speed and memory against a dense reference, measured in the same run.

Market-size: 3,368 queries x 15,913 gallery x 2,048-d (751 ids, pid 0 distractors, 6 cameras).
  ppvi:      `ppvi_cli.metrics.protocols.evaluate(..., "market")` (streamed, exact).
  reference: torchreid's Python path (`compute_distance_matrix` cosine + `eval_market1501`): the full
             distance matrix with torch, `np.argsort(distmat, axis=1)`, then a per-query loop whose AP
             is accumulated element by element; mINP added as in Cross-Modal-Re-ID-baseline. The
             same loop with a vectorised AP is timed too (same matrix and argsort), for context.
Scale: 3,000 queries x 1,000,000 gallery x 256-d in a subprocess (its own peak RSS, read from
  VmHWM): ppvi only; the dense matrix alone would need 12 GB.

Features are synthetic ReID-like vectors (id centre + noise), float32. Prints the breakdown, then on
its last line `speedup: X` (Market-size, ppvi vs the torchreid-path reference).

    python benchmarks/eval_speed.py            # full sizes (about 4 minutes on 2 cores)
    python benchmarks/eval_speed.py --quick    # smaller sizes, a few seconds
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")


def synthetic(rng, n, ids, centres, noise, pid_low=1, distractors=0):
    """[n, D] features of random ids (pid 0 = distractors drawn without a centre), ids, cameras."""
    pids = rng.integers(pid_low, ids + 1, n)
    pids[:distractors] = 0
    feats = centres[pids] + noise * rng.standard_normal((n, centres.shape[1]), dtype=np.float32)
    feats[:distractors] = rng.standard_normal((distractors, centres.shape[1]), dtype=np.float32)
    return feats, pids, rng.integers(1, 7, n)


def reference_torchreid(qf, gf, qp, qc, gp, gc, vectorised=False, timings=None):
    """Dense evaluation as torchreid's Python path does it (cosine distmat, argsort, per-query loop)."""
    import torch
    import torch.nn.functional as F

    t0 = time.perf_counter()
    distmat = 1 - torch.mm(F.normalize(torch.from_numpy(qf)), F.normalize(torch.from_numpy(gf)).t())
    distmat = distmat.numpy()
    t1 = time.perf_counter()
    indices = np.argsort(distmat, axis=1)
    t2 = time.perf_counter()
    results = {}
    for vec in ([False, True] if vectorised else [False]):
        t3 = time.perf_counter()
        matches = (gp[indices] == qp[:, None]).astype(np.int32)
        all_cmc, all_ap, all_inp, ap_by_query = [], [], [], {}
        for q in range(len(qp)):
            order = indices[q]
            keep = ~((gp[order] == qp[q]) & (gc[order] == qc[q]))
            raw = matches[q][keep]
            if not raw.any():
                continue
            cmc = raw.cumsum()
            last = np.flatnonzero(raw)[-1]
            all_inp.append(cmc[last] / (last + 1.0))
            cmc[cmc > 1] = 1
            all_cmc.append(cmc[:50])
            hits = raw.cumsum()
            if vec:
                precision = hits / np.arange(1, len(hits) + 1)
            else:  # torchreid: one Python division per gallery item
                precision = np.asarray([x / (i + 1.0) for i, x in enumerate(hits)])
            all_ap.append((precision * raw).sum() / raw.sum())
            ap_by_query[q] = all_ap[-1]
        cmc = np.asarray(all_cmc, np.float64).sum(0) / len(all_cmc)  # torchreid: float32 (1e-5 % off)
        metrics = {f"rank{k}": 100 * float(cmc[k - 1]) for k in (1, 5, 10, 20)}
        metrics.update(mAP=100 * float(np.mean(all_ap)), mINP=100 * float(np.mean(all_inp)), ap=ap_by_query)
        results["vectorised" if vec else "torchreid"] = (metrics, t1 - t0 + t2 - t1 + time.perf_counter() - t3)
    if timings is not None:
        timings.update(distmat=t1 - t0, argsort=t2 - t1)
    return results


def near_tie_gap(query, gallery, positive, junk) -> float:
    """Smallest float64 similarity gap between one of the query's positives and a kept negative
    (the only swaps that change AP)."""
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    sim = unit(gallery.astype(np.float64)) @ unit(query.astype(np.float64))
    negatives = sim[~positive & ~junk]
    return float(min(np.abs(negatives - sim[p]).min() for p in np.flatnonzero(positive & ~junk)))


def market_case(args) -> float:
    from ppvi_cli.metrics.protocols import evaluate

    nq, ng, dim = (800, 4000, 512) if args.quick else (3368, 15913, 2048)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((752, dim), dtype=np.float32)
    qf, qp, qc = synthetic(rng, nq, 751, centres, args.noise)
    gf, gp, gc = synthetic(rng, ng, 751, centres, args.noise, distractors=ng * 2793 // 15913)
    print(f"Market-size: {nq} queries x {ng} gallery x {dim}-d float32, backend {args.backend}, device cpu",
          flush=True)

    # warm up libraries and thread pools for both sides (each query's own features as a match)
    warm = (qf[:64], qf[:256], qp[:64], qc[:64], qp[:256], qc[:256] % 6 + 1)
    evaluate(*warm, backend=args.backend, device="cpu")
    reference_torchreid(*warm)

    t0 = time.perf_counter()
    ours = evaluate(qf, gf, qp, qc, gp, gc, "market", backend=args.backend, device="cpu", per_query=True)
    t_ours = time.perf_counter() - t0
    other = "torch" if args.backend == "faiss" else "faiss"
    t0 = time.perf_counter()
    theirs = evaluate(qf, gf, qp, qc, gp, gc, "market", backend=other, device="cpu")
    t_other = time.perf_counter() - t0
    timings = {}
    refs = reference_torchreid(qf, gf, qp, qc, gp, gc, vectorised=True, timings=timings)
    (ref, t_ref), (ref_vec, t_vec) = refs["torchreid"], refs["vectorised"]
    print(f"  {'ppvi (' + ours['backend'] + ')':33s} {t_ours:8.2f} s")
    print(f"  {'ppvi (' + theirs['backend'] + ')':33s} {t_other:8.2f} s  (max metric difference to "
          f"{ours['backend']}: {max(abs(ours[k] - theirs[k]) for k in KEYS):.1e})")
    print(f"  dense reference (torchreid path): {t_ref:8.2f} s  (distmat {timings['distmat']:.2f} s, "
          f"argsort {timings['argsort']:.2f} s, per-query loop {t_ref - sum(timings.values()):.2f} s)")
    print(f"  dense, vectorised AP loop:        {t_vec:8.2f} s  (same distmat and argsort; "
          f"ratio {t_vec / t_ours:.2f}x)")
    diff = max(abs(ours[k] - ref[k]) for k in KEYS)
    diff_vec = max(abs(ours[k] - ref_vec[k]) for k in KEYS)
    print("  metrics   " + "  ".join(f"{k} {ours[k]:.4f}" for k in KEYS) + f"  valid {ours['valid_queries']}")
    print("  reference " + "  ".join(f"{k} {ref[k]:.4f}" for k in KEYS))
    differ = [r["query"] for r in ours["per_query"]
              if r["AP"] is not None and abs(r["AP"] - 100 * ref["ap"][r["query"]]) > 1e-9]
    gaps = [near_tie_gap(qf[q], gf, gp == qp[q], (gp == qp[q]) & (gc == qc[q])) for q in differ]
    explained = all(g < 1e-6 for g in gaps)
    verdict = "identical" if diff <= 1e-6 else "differ only by float32 near-ties" if explained else "DIFFERENT"
    print(f"  max |ppvi - reference| over the six metrics: {diff:.2e} (vectorised loop: {diff_vec:.2e}) -> {verdict}")
    print(f"  per-query AP: {len(ref['ap']) - len(differ)} of {len(ref['ap'])} queries identical to 1e-9; "
          f"{len(differ)} differ" + (f", each with a positive whose float64 similarity is within "
                                      f"{max(gaps):.1e} of another item's (below float32 rounding: the two "
                                      "sides' BLAS kernels order them differently)" if differ and explained else ""))
    return t_ref / t_ours


def peak_rss_gib() -> float:
    """This process's peak resident memory, GiB: VmHWM, which restarts at exec.

    `ru_maxrss` is read as a fallback only: Linux carries it across exec, so a child started from a
    big parent would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20  # kB -> GiB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def scale_worker(nq: int, ng: int, dim: int, backend: str, noise: float) -> None:
    """Runs in its own process so ru_maxrss is this case's peak alone; prints one JSON line."""
    import faiss  # noqa: F401  (imported before the baseline reading, like torch below)
    import torch  # noqa: F401

    from ppvi_cli.metrics.protocols import evaluate

    rng = np.random.default_rng(1)
    ids = ng // 20
    centres = rng.standard_normal((ids + 1, dim), dtype=np.float32)
    gallery = np.empty((ng, dim), np.float32)  # 1 GB at full size, filled chunk by chunk
    gp, gc = rng.integers(1, ids + 1, ng), rng.integers(1, 7, ng)
    for s in range(0, ng, 65536):
        e = min(s + 65536, ng)
        gallery[s:e] = centres[gp[s:e]] + noise * rng.standard_normal((e - s, dim), dtype=np.float32)
    qp, qc = gp[rng.choice(ng, nq, replace=False)], rng.integers(1, 7, nq)
    qf = centres[qp] + noise * rng.standard_normal((nq, dim), dtype=np.float32)
    before = peak_rss_gib()
    t0 = time.perf_counter()
    res = evaluate(qf, gallery, qp, qc, gp, gc, "market", backend=backend, device="cpu")
    seconds = time.perf_counter() - t0
    peak = peak_rss_gib()
    print(json.dumps({"seconds": seconds, "peak_gib": peak, "peak_before_eval_gib": before,
                      **{k: res[k] for k in KEYS}, "valid": res["valid_queries"]}))


def scale_case(args) -> None:
    nq, ng, dim = (500, 100_000, 128) if args.quick else (3000, 1_000_000, 256)
    print(f"Scale: {nq} queries x {ng} gallery x {dim}-d (the dense matrix alone: {nq * ng * 4 / 1e9:.1f} GB)")
    cmd = [sys.executable, __file__, "--scale-worker", str(nq), str(ng), str(dim), "--backend", args.backend,
           "--noise", str(args.scale_noise)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"scale worker failed:\n{out.stderr}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  ppvi ({args.backend}): {res['seconds']:.1f} s, peak RSS {res['peak_gib']:.2f} GiB "
          f"(before evaluating, with features, labels and libraries loaded: {res['peak_before_eval_gib']:.2f} GiB); "
          f"limit 4 GB -> {'ok' if res['peak_gib'] * 2**30 < 4e9 else 'OVER'}")
    print("  metrics " + "  ".join(f"{k} {res[k]:.2f}" for k in KEYS) + f"  valid {res['valid']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes for a smoke run")
    parser.add_argument("--backend", default="faiss", choices=("faiss", "torch"))
    parser.add_argument("--noise", type=float, default=3.5, help="Market-size feature noise (sets mAP)")
    parser.add_argument("--scale-noise", type=float, default=1.5, help="scale-case feature noise")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--scale-worker", nargs=3, type=int, metavar=("NQ", "NG", "DIM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scale_worker:
        scale_worker(*args.scale_worker, args.backend, args.scale_noise)
        return
    speedup = market_case(args)
    if not args.skip_scale:
        scale_case(args)
    print(f"speedup: {speedup:.2f}")


if __name__ == "__main__":
    main()
