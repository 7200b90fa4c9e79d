"""PixelFade on real pedestrians, beside mosaic, blur and noise: the four settings, SSIM/PSNR, AD.

    python benchmarks/market_pixelfade.py [--work /tmp/ppvi_market_real] [--ids 50] [--steps 100]
                                          [--methods mosaic,blur,noise,pixelfade] [--eps 0.03,auto,energy:0.5]
                                          [--attack-epochs 0]

Runs after `benchmarks/market_real.py` and reuses its WORK folder: the Market-1501 split it built
(WORK/market) and the AGW MobileNetV2 model it fine-tuned (WORK/reid_agw/last.pt), PixelFade's
authorized model. PixelFade's T=100 forward+backward passes per image make the whole 3,054-image
test split hours of a 2-core CPU, so by default the table is computed on the first `--ids` test ids
(ascending pid): their query/ and bounding_box_test/ images are linked into WORK/pixelfade_<ids>/market,
and every method, raw2raw included, is protected and evaluated on that same subset (market
protocol), so the rows compare. `--ids 0` takes every test id (a GPU job). The reference is the
same model's raw2raw on the subset, measured in this run. Results go to WORK/pixelfade_<ids>/results.json.

`--eps` runs PixelFade once per feature constraint: a number is the paper's absolute eps, `auto` the
calibrated one, `energy:R` a fraction R of each image's feature energy (`--eps R --eps-scale energy`);
each row also gives the share of files that met their eps at the end, the share whose loss met it at
some step (the constraint bound, so replacement went on after the warm-up) and the median final
feature MSE.
`--attack-epochs N` adds `ppvi attack` (the papers' L1 recovery UNet, 128x64) on every method: the
subset has no train split, so it trains on a seeded half of its ids and recovers the other half.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from market_real import PARAMS, SETTINGS, cached, ppvi  # noqa: E402  (the sibling benchmark's steps)


def subset_tree(market: Path, target: Path, ids: int) -> dict:
    """Link query/ and bounding_box_test/ images of the first `ids` test pids (0: all) into `target`."""
    folders = ("query", "bounding_box_test")
    pids = sorted({int(p.name[:4]) for p in (market / "query").glob("*.jpg")})
    keep = set(pids if ids == 0 else pids[:ids])
    counts = {}
    for folder in folders:
        (target / folder).mkdir(parents=True, exist_ok=True)
        chosen = [p for p in sorted((market / folder).glob("*.jpg")) if int(p.name[:4]) in keep]
        for path in chosen:
            dest = target / folder / path.name
            if not dest.exists():
                os.link(path, dest)
        counts[folder] = len(chosen)
    return {"ids": len(keep), **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/ppvi_market_real"))
    parser.add_argument("--ids", type=int, default=50, help="first N test ids (0: all 201)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="mosaic,blur,noise,pixelfade")
    parser.add_argument("--eps", default="0.03", help="PixelFade constraints, comma list: 0.03, auto, energy:0.5")
    parser.add_argument("--attack-epochs", type=int, default=0, help="ppvi attack epochs per method (0: no attack)")
    args = parser.parse_args()
    work = args.work.resolve()
    model = work / "reid_agw" / "last.pt"
    if not model.is_file() or not (work / "market" / "query").is_dir():
        sys.exit(f"{work} holds no market_real run (reid_agw/last.pt, market/query): run "
                 "benchmarks/market_real.py --work {work} first")
    here = work / f"pixelfade_{args.ids}"
    data = here / "market"
    counts = subset_tree(work / "market", data, args.ids)
    common = ["--device", args.device, "--seed", str(args.seed)]
    evaluate = ["eval", "--model", str(model), "--data", str(data), "--format", "market1501", "--protocol", "market",
                "--device", args.device]
    began = time.perf_counter()
    params = {}
    for name in args.methods.split(","):
        if name != "pixelfade":
            params[name] = (name, PARAMS[name])
            continue
        for eps in args.eps.split(","):
            scale, _, value = eps.rpartition(":")
            params[f"pixelfade[{eps}]"] = ("pixelfade", ["--model", str(model), "--steps", str(args.steps),
                                                         "--batch-size", str(args.batch_size), "--eps", value,
                                                         *(["--eps-scale", scale] if scale else [])])
    rows = {}
    for name, (method, method_params) in params.items():
        anon, out = here / "anon" / name, here / "runs" / name
        done = cached(out / "anonymize.json", "anonymize", "--method", method, *method_params, "--input", str(data),
                      "--output", str(anon), "--format", "market1501", *common)
        privacy = cached(out / "privacy.json", "privacy", "--raw", str(data), "--anon", str(anon),
                         "--format", "market1501")
        chaos = cached(out / "chaos.json", "chaos", str(anon), "--format", "market1501")
        ev = cached(out / "eval.json", *evaluate, "--anon", str(anon), "--setting", "all")
        rows[name] = {"ssim": privacy["mean"]["visible"]["ssim"], "psnr": privacy["mean"]["visible"]["psnr"],
                      "ad": chaos["mean"]["visible"], "seconds": done.get("seconds"),
                      "constraint": done["stats"].get("constraint"),
                      **{s: {k: ev["results"][s][k] for k in ("rank1", "mAP", "mINP")} for s in SETTINGS}}
        if args.attack_epochs:
            if not (out / "attack.json").is_file():  # written by the attack itself, when it finishes
                ppvi("attack", "--raw", str(data), "--anon", str(anon), "--format", "market1501", "--out", str(out),
                     "--size", "128x64", "--epochs", str(args.attack_epochs), "--resume", *common)
            rows[name]["attack"] = json.loads((out / "attack.json").read_text(encoding="utf-8"))["mean"]["visible"]
    raw_ad = cached(here / "raw_chaos.json", "chaos", str(data), "--format", "market1501")["mean"]["visible"]

    from ppvi_cli.runinfo import stamp

    results = {"run": stamp(args.seed, {k: str(v) for k, v in vars(args).items()}), "subset": counts,
               "model": str(model), "raw_ad": raw_ad, "methods": rows, "seconds": round(time.perf_counter() - began)}
    (here / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    ref = next(iter(rows.values()))["raw2raw"]
    print(f"Market-1501 subset: {counts['ids']} test ids, {counts['query']} queries, {counts['bounding_box_test']} "
          f"gallery; model {model}; PixelFade T={args.steps}; seed {args.seed}")
    print(f"reference raw2raw (same model, same subset): rank-1 {ref['rank1']:.2f} mAP {ref['mAP']:.2f} "
          f"mINP {ref['mINP']:.2f}; raw AD {raw_ad:.1f}")
    print(f"{'method':<26}" + "".join(f"{s:>21}" for s in SETTINGS) + "   SSIM   PSNR     AD  a2a/r2r mAP"
          "  met eps  bound  median MSE  rec.SSIM rec.PSNR")
    for name, row in rows.items():
        cells = "".join(f"{row[s]['rank1']:7.2f}/{row[s]['mAP']:5.2f}/{row[s]['mINP']:5.2f}".rjust(21) for s in SETTINGS)
        met = row["constraint"]
        met_cells = (f"{met['share_met']:7.1%} {met['bound'] / met['files']:6.1%}  {met['distance']['median']:10.4f}"
                     if met else f"{'':7} {'':6}  {'':10}")
        attack = row.get("attack")
        attack_cells = f"{attack['ssim']:8.3f} {attack['psnr']:8.2f}" if attack else ""
        print(f"{name:<26}{cells}  {row['ssim']:.3f}  {row['psnr']:5.2f}  {row['ad']:5.1f}  "
              f"{row['anon2anon']['mAP'] / ref['mAP']:11.3f}  {met_cells}  {attack_cells}")
    print(f"results: {here / 'results.json'}; {results['seconds']} s")


if __name__ == "__main__":
    main()
