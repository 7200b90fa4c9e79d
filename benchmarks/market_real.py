"""Real-data check on the Market-1501 subset: does the toolkit learn on real pedestrians, what does each
conventional protection cost in utility, and what does a recovery attack get back?

    python benchmarks/market_real.py [--data DIR] [--work DIR] [--epochs 30] [--methods mosaic,blur,noise]
                                     [--recipes agw,pepr] [--attack-epochs 3] [--quick]

Everything runs through the `ppvi` CLI, as a user would, and every stage is resumable (a stage whose
JSON exists is skipped; training and attacks resume their checkpoints):
1. split: the shared subset ships only `bounding_box_train/` (501 ids). ppvi's `held_out_split` holds out
   the last 201 ids; the benchmark writes a Market-1501 tree under WORK/market (hard links or copies,
   the original names): `bounding_box_train/` = the other 300 ids, `query/` = the first image per camera
   of each test id, `bounding_box_test/` = the rest. From then on it is an ordinary Market-1501 layout.
2. `ppvi train reid`: single-stream MobileNetV2 from the shared ImageNet weights (no network), 128x64
   (the subset's native size), Adam, the AGW schedule scaled to --epochs; once per --recipes entry:
   `agw` (the authorized model every protection is scored with) and `pepr` (PEPR-Net's objective).
3. per method: `ppvi anonymize` the whole tree (train ids too: they are the attacker's public pairs),
   with strengths scaled from 256x128 to 128x64 like the demo (mosaic block 12, blur radius 6; noise
   sigma 0.5 has no scale; PixelFade, when asked for, against the first recipe's model, paper defaults); `ppvi privacy`, `ppvi chaos`, `ppvi eval --model --anon --setting all`
   (market protocol), `ppvi attack` (UNet + L1 on the 300 public ids, recovers the 201 test ids).
4. per recipe, `ppvi features` + `ppvi leak --dp-sweep` on the raw features: identity leakage and the
   DP gallery's utility against epsilon (PEPR-Net's claim: its features leak less identity than AGW's).
5. `ppvi report` over the per-method RUN_DIRs: tables, privacy-utility plot, HTML, report.json.

The reference every protected row is compared with is the same model's raw2raw, measured in this run.
Results, with seed, parameters and versions, go to WORK/results.json; the report to WORK/report/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFAULT_DATA = SHARED / "data" / "market1501" / "Market-1501-v15.09.15"
SHARED_MOBILENET = SHARED / "weights" / "mobilenetv2_imagenet_features_torchvision.pt"
PARAMS = {"mosaic": ["--block", "12"], "blur": ["--radius", "6"], "noise": ["--sigma", "0.5"], "pixelfade": []}
SETTINGS = ("raw2raw", "raw2anon", "anon2raw", "anon2anon")


def ppvi(*args: str, out: Path | None = None, log: Path | None = None) -> dict:
    """Run `ppvi --json ARGS`; return its JSON (also saved to `out`). Exit code 1 (a gate) is not an error."""
    cmd = [str(Path(sys.executable).parent / "ppvi"), "--json", *args]
    print("$ " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
    began = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None if log is None else log.open("ab"), text=True)
    if done.returncode not in (0, 1):
        sys.exit(f"ppvi {args[0]} failed with exit {done.returncode}")
    doc = json.loads(done.stdout)
    print(f"  ({time.perf_counter() - began:.0f} s)", file=sys.stderr, flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return doc


def cached(path: Path, *args: str) -> dict:
    """`ppvi(*args, out=path)` unless `path` already holds the result of an earlier run."""
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return ppvi(*args, out=path)


def build_split(data: Path, market: Path, test_ids: int) -> dict:
    """Write the held-out split as a Market-1501 tree (links, else copies); returns its counts."""
    from ppvi_cli.data.readers import load_dataset
    from ppvi_cli.evaluation.split import held_out_split

    marker = market / "split.json"
    if marker.is_file():
        return json.loads(marker.read_text(encoding="utf-8"))
    split = held_out_split(load_dataset(data, "market1501").splits["train"], test_ids, distractor_pid=0)
    folders = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    for part, records in split.items():
        target = market / folders[part]
        target.mkdir(parents=True, exist_ok=True)
        for rec in records:
            dest = target / Path(rec.relpath).name
            if not dest.exists():
                try:
                    os.link(data / rec.relpath, dest)
                except OSError:
                    shutil.copy2(data / rec.relpath, dest)
    counts = {part: {"images": len(recs), "ids": len({r.pid for r in recs})} for part, recs in split.items()}
    doc = {"source": str(data), "test_ids": test_ids, "rule": "held_out_split: last ids held out; query = first "
           "image per camera of each test id, gallery = the rest", "counts": counts}
    marker.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Market-1501 root (bounding_box_train/).")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ppvi_market_real"))
    parser.add_argument("--test-ids", type=int, default=201)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--methods", default="mosaic,blur,noise",
                        help="comma list of mosaic, blur, noise, pixelfade (against the first recipe's model; "
                             "T=100 over all 8,642 images is hours on a 2-core CPU: a GPU job)")
    parser.add_argument("--pixelfade-steps", type=int, default=100)
    parser.add_argument("--recipes", default="agw,pepr", help="ReID objectives to train; the first scores the methods")
    parser.add_argument("--attack-epochs", type=int, default=3)
    parser.add_argument("--attack-ngf", type=int, default=32)
    parser.add_argument("--epsilons", default="0.1,0.5,1.0")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 epochs, 1 attack epoch: checks the pipeline only")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.attack_epochs = 2, 1
    if not (args.data / "bounding_box_train").is_dir():
        sys.exit(f"no Market-1501 data at {args.data} (expected bounding_box_train/); see ../shared/data/README.md")
    if not SHARED_MOBILENET.is_file():
        sys.exit(f"{SHARED_MOBILENET} is missing: the benchmark fine-tunes these ImageNet weights offline")
    methods = [m for m in args.methods.split(",") if m]
    recipes = [r for r in args.recipes.split(",") if r]
    if not recipes or not set(recipes) <= {"agw", "pepr"}:
        sys.exit(f"--recipes: give agw and/or pepr, got {args.recipes!r}")
    unknown = sorted(set(methods) - set(PARAMS))
    if unknown:
        sys.exit(f"--methods: unknown {unknown} (choices: {', '.join(PARAMS)})")
    work = args.work.resolve()
    market, runs = work / "market", work / "runs"
    common = ["--device", args.device, "--seed", str(args.seed)]
    began = time.perf_counter()

    split = build_split(args.data.resolve(), market, args.test_ids)
    trained, privacy_of = {}, {}
    for recipe in recipes:
        train = cached(work / f"train_{recipe}.json", "train", "reid", "--recipe", recipe, "--data", str(market),
                       "--format", "market1501", "--out", str(work / f"reid_{recipe}"), "--backbone", "mobilenetv2",
                       "--pretrained", str(SHARED_MOBILENET), "--single-stream", "--size", "128x64",
                       "--epochs", str(args.epochs), "--resume", *common)
        feats = work / f"features_{recipe}.npz"
        if not feats.is_file():
            ppvi("features", "--model", train["checkpoint"], "--data", str(market), "--format", "market1501",
                 "--out", str(feats), "--device", args.device)
        trained[recipe] = train
        privacy_of[recipe] = cached(work / f"dp_sweep_{recipe}.json", "leak", "--features", str(feats), "--dp-sweep",
                                    "--protocol", "market", "--setting", "raw2raw", "--epsilons", args.epsilons,
                                    "--plot", str(work / f"dp_sweep_{recipe}.png"), *common)
    model = trained[recipes[0]]["checkpoint"]
    evaluate = ["eval", "--model", model, "--data", str(market), "--format", "market1501", "--protocol", "market",
                "--device", args.device]
    raw = privacy_of[recipes[0]]["rows"][0]  # epsilon None: the released gallery is the raw one

    rows = {}
    for name in methods:
        anon, run_dir = work / "anon" / name, runs / name
        params = PARAMS[name] if name != "pixelfade" else ["--model", model, "--steps", str(args.pixelfade_steps),
                                                           "--batch-size", "64"]
        cached(run_dir / "anonymize.json", "anonymize", "--method", name, *params, "--input", str(market),
               "--output", str(anon), "--format", "market1501", *common)
        (run_dir / "run.json").write_text(json.dumps({"method": name, "dataset": "Market-1501 subset (201 test ids)",
                                                      "raw": str(market), "anon": str(anon)}) + "\n")
        privacy = cached(run_dir / "privacy.json", "privacy", "--raw", str(market), "--anon", str(anon),
                         "--format", "market1501")
        chaos = cached(run_dir / "chaos.json", "chaos", str(anon), "--format", "market1501")
        ev = cached(run_dir / "eval.json", *evaluate, "--anon", str(anon), "--setting", "all")
        if not (run_dir / "attack.json").is_file():  # written by the attack itself, when it finishes
            ppvi("attack", "--raw", str(market), "--anon", str(anon), "--format", "market1501", "--out", str(run_dir),
                 "--size", "128x64", "--epochs", str(args.attack_epochs), "--ngf", str(args.attack_ngf),
                 "--resume", *common)
        attack = json.loads((run_dir / "attack.json").read_text(encoding="utf-8"))
        rows[name] = {"privacy": privacy["mean"]["visible"], "chaos": chaos["mean"]["visible"],
                      "attack": attack["mean"]["visible"],
                      "eval": {s: {k: ev["results"][s][k] for k in ("rank1", "mAP", "mINP")} for s in SETTINGS}}

    report = ppvi("report", *[str(runs / m) for m in methods], "--out", str(work / "report"))

    from ppvi_cli.runinfo import stamp

    results = {"run": stamp(args.seed, {k: str(v) for k, v in vars(args).items()}), "split": split["counts"],
               "train": {r: {"checkpoint": t["checkpoint"], "final": t.get("final"),
                             "seconds": t.get("seconds_this_run")} for r, t in trained.items()},
               "reference_raw2raw": {k: raw[k] for k in ("rank1", "mAP", "mINP")}, "scored_with": recipes[0],
               "methods": rows, "dp_sweep": privacy_of, "report": report.get("html"),
               "seconds": round(time.perf_counter() - began, 1)}
    (work / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")

    print(f"Market-1501 subset, {split['counts']['train']['ids']} train ids / {args.test_ids} test ids "
          f"({split['counts']['query']['images']} queries, {split['counts']['gallery']['images']} gallery); "
          f"MobileNetV2 128x64, {args.epochs} epochs, seed {args.seed}")
    print(f"reference ({recipes[0]} model) raw2raw: rank-1 {raw['rank1']:.2f}  mAP {raw['mAP']:.2f}  mINP {raw['mINP']:.2f}")
    head = "method  " + "  ".join(f"{s:>20}" for s in SETTINGS) + "   SSIM  PSNR     AD  rec.SSIM rec.PSNR"
    print(head + "\n" + " " * 8 + "  ".join(f"{'R1/mAP/mINP':>20}" for _ in SETTINGS))
    for name, row in rows.items():
        cells = "  ".join(f"{row['eval'][s]['rank1']:6.2f}/{row['eval'][s]['mAP']:5.2f}/{row['eval'][s]['mINP']:5.2f}"
                          .rjust(20) for s in SETTINGS)
        pm, am = row["privacy"], row["attack"]
        print(f"{name:<8}{cells}  {pm['ssim']:.3f} {pm['psnr']:5.2f} {row['chaos']:6.1f}  "
              f"{am['ssim']:.3f}    {am['psnr']:5.2f}")
        ratio = row["eval"]["anon2anon"]["mAP"] / raw["mAP"] if raw["mAP"] else float("nan")
        print(f"        anon2anon mAP / reference raw2raw mAP: {ratio:.3f}; attack: protected SSIM "
              f"{am['protected_ssim']:.3f} -> recovered {am['ssim']:.3f}")
    for recipe, dp in privacy_of.items():
        print(f"{recipe} model, DP gallery ({dp['setting']}, Delta {dp['sensitivity']:g}, delta {dp['delta']:g}; "
              f"leakage chance {dp['rows'][0]['chance']:.2f}%):")
        for point in dp["rows"]:
            print("  " + "  ".join(f"{k} {point[k]:.4g}" if isinstance(point[k], float) else f"{k} {point[k]}"
                                   for k in ("epsilon", "sigma", "rank1", "mAP", "mINP", "leakage")))
    print(f"report: {report.get('html')}; results: {work / 'results.json'}; {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
