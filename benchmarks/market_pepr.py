"""PEPR-Net's utility / identity-leakage trade-off on real pedestrians, against the Adv-ID weight.

    python benchmarks/market_pepr.py [--work /tmp/ppvi_market_real] [--adv-lambdas 0,0.001,1]
                                     [--epochs 40] [--epsilons 0.1,0.5,1.0]

Runs after `benchmarks/market_real.py` and reuses its WORK folder: the Market-1501 split (WORK/market)
and the AGW model's features and DP sweep (WORK/features_agw.npz, WORK/dp_sweep_agw.json), the
reference row. For each Adv-ID weight lambda_3 in --adv-lambdas it trains `ppvi train reid --recipe
pepr --pepr-lambdas 1,0.1,LAMBDA_3` with market_real's arguments (MobileNetV2 from the shared ImageNet
weights, 128x64, seed 0) into WORK/reid_pepr_adv<LAMBDA_3>, extracts the test features and runs
`ppvi leak --dp-sweep` (market protocol, raw2raw; leakage = accuracy of a softmax classifier trained
on half of each test id's gallery features). lambda_3 = 0 is De-ID alone; the paper's is 0.001.
Every stage is cached by its JSON, so an interrupted run resumes. Results go to WORK/pepr_sweep.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from market_real import SHARED_MOBILENET, cached, ppvi  # noqa: E402  (the sibling benchmark's steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/ppvi_market_real"))
    parser.add_argument("--adv-lambdas", default="0,0.001,1", help="comma list of Adv-ID weights lambda_3")
    parser.add_argument("--deid-lambda", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--epsilons", default="0.1,0.5,1.0")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = args.work.resolve()
    market, reference = work / "market", work / "dp_sweep_agw.json"
    if not (market / "query").is_dir() or not reference.is_file():
        sys.exit(f"{work} holds no finished market_real run (market/query, dp_sweep_agw.json): run "
                 f"benchmarks/market_real.py --work {work} first")
    common = ["--device", args.device, "--seed", str(args.seed)]
    began = time.perf_counter()
    rows = {"agw": json.loads(reference.read_text(encoding="utf-8"))}
    for text in [t for t in args.adv_lambdas.split(",") if t]:
        lam = float(text)
        name = f"pepr_adv{lam:g}"
        lambdas = f"1,{args.deid_lambda:g},{lam:g}"
        train = cached(work / f"train_{name}.json", "train", "reid", "--recipe", "pepr", "--pepr-lambdas", lambdas,
                       "--data", str(market), "--format", "market1501", "--out", str(work / f"reid_{name}"),
                       "--backbone", "mobilenetv2", "--pretrained", str(SHARED_MOBILENET), "--single-stream",
                       "--size", "128x64", "--epochs", str(args.epochs), "--resume", *common)
        feats = work / f"features_{name}.npz"
        if not feats.is_file():
            ppvi("features", "--model", train["checkpoint"], "--data", str(market), "--format", "market1501",
                 "--out", str(feats), "--device", args.device)
        rows[name] = cached(work / f"dp_sweep_{name}.json", "leak", "--features", str(feats), "--dp-sweep",
                            "--protocol", "market", "--setting", "raw2raw", "--epsilons", args.epsilons,
                            "--plot", str(work / f"dp_sweep_{name}.png"), *common)
        rows[name]["lambdas"] = lambdas
        rows[name]["final_losses"] = train.get("final")

    from ppvi_cli.runinfo import stamp

    doc = {"run": stamp(args.seed, {k: str(v) for k, v in vars(args).items()}), "rows": rows,
           "seconds": round(time.perf_counter() - began, 1)}
    (work / "pepr_sweep.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print("Market-1501 subset (market_real split), raw2raw, market protocol; leakage on the test ids' gallery "
          f"features (chance {rows['agw']['rows'][0]['chance']:.2f}%)")
    print(f"{'model':<18}{'epsilon':>8}{'rank-1':>8}{'mAP':>8}{'mINP':>8}{'leakage':>9}  final adversary CE")
    for name, sweep in rows.items():
        final = sweep.get("final_losses") or {}
        for point in sweep["rows"]:
            eps = "none" if point["epsilon"] is None else f"{point['epsilon']:g}"
            tail = f"  {final['adversary']:.3f}" if point["epsilon"] is None and "adversary" in final else ""
            print(f"{name:<18}{eps:>8}{point['rank1']:8.2f}{point['mAP']:8.2f}{point['mINP']:8.2f}"
                  f"{point['leakage']:9.2f}{tail}")
    print(f"{doc['seconds']:.0f} s; results: {work / 'pepr_sweep.json'}")


if __name__ == "__main__":
    main()
