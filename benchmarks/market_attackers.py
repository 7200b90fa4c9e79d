"""Stronger attackers on real pedestrians: does a protection's privacy survive attacks past the papers'?

    python benchmarks/market_attackers.py [--work /tmp/ppvi_market_attackers] [--public-ids 24] [--test-ids 24]
                                          [--model-size 64x32] [--model-epochs 20] [--pixelfade-steps 50] [--quick]

Everything runs through the `ppvi` CLI and every stage is resumable (a stage whose JSON exists is skipped):
1. split: `market_real.py`'s held-out split of the Market-1501 subset (300 train / 201 test ids) as a
   Market-1501 tree under WORK/market.
2. the authorized model: `ppvi train reid` (AGW, single-stream MobileNetV2 from the shared ImageNet weights,
   --model-size, --model-epochs) on the 300 train ids, unless --model names one.
3. a CPU-sized subset WORK/subset_<P>_<T>/market: the first P train ids (bounding_box_train/: the attackers'
   public set) and the first T test ids (their query/ and bounding_box_test/ images).
4. per method (mosaic block 12, blur radius 6, noise sigma 0.5 at the subset's 128x64; PixelFade against the
   authorized model, --pixelfade-steps): `ppvi anonymize`, `ppvi eval --setting all` (market protocol, the
   authorized model) and `ppvi attack --attacker l1,gan,identity,linkage --model` at --size (recovery UNets
   for --attack-epochs; the linkage attacker's MobileNetV2 from the shared ImageNet weights for
   --linkage-epochs on the public ids' raw + protected images; the identity attacker refines each recovery
   with --refine-steps steps at rate 0.01, and its network's scores before them are kept too).
5. `ppvi report` over the per-method RUN_DIRs.

The table gives, per method, the authorized model's utility (raw2anon and anon2anon mAP), each recovery
attacker's SSIM, the worst case over them, and the linkage (protected query -> raw gallery) rank-1/mAP
beside chance and beside the authorized model's anon2raw on the same query and gallery. The
references are measured in this run. Results (seed, parameters, versions) go to WORK/subset_<P>_<T>/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from market_real import DEFAULT_DATA, PARAMS, SETTINGS, SHARED_MOBILENET, build_split, cached, ppvi  # noqa: E402

METHODS = ("mosaic", "blur", "noise", "pixelfade")
RECOVERY = ("l1", "gan", "identity")


def subset_tree(market: Path, target: Path, public_ids: int, test_ids: int) -> dict:
    """Link the first `public_ids` train pids and the first `test_ids` test pids (query/ and
    bounding_box_test/, pid 0 distractors left out) into a Market-1501 tree at `target`."""
    counts = {}
    for folder, ids in (("bounding_box_train", public_ids), ("query", test_ids), ("bounding_box_test", test_ids)):
        source = "query" if folder == "bounding_box_test" else folder  # the test ids are those with queries
        pids = sorted({int(p.name[:4]) for p in (market / source).glob("*.jpg")} - {0})[:ids]
        chosen = [p for p in sorted((market / folder).glob("*.jpg")) if int(p.name[:4]) in set(pids)]
        (target / folder).mkdir(parents=True, exist_ok=True)
        for path in chosen:
            if not (target / folder / path.name).exists():
                os.link(path, target / folder / path.name)
        counts[folder] = {"ids": len(pids), "images": len(chosen)}
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Market-1501 root (bounding_box_train/).")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ppvi_market_attackers"))
    parser.add_argument("--model", type=Path, default=None, help="an authorized ReID checkpoint (default: train one)")
    parser.add_argument("--model-size", default="64x32")
    parser.add_argument("--model-epochs", type=int, default=20)
    parser.add_argument("--public-ids", type=int, default=24)
    parser.add_argument("--test-ids", type=int, default=24)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--pixelfade-steps", type=int, default=50)
    parser.add_argument("--size", default="64x32", help="the attackers' working size")
    parser.add_argument("--attack-epochs", type=int, default=15)
    parser.add_argument("--attack-ngf", type=int, default=16)
    parser.add_argument("--linkage-epochs", type=int, default=60)
    parser.add_argument("--refine-steps", type=int, default=10, help="identity: test-time refinement steps (the "
                        "JSON keeps the network's scores before them too)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="1 epoch each, 12 PixelFade steps: the pipeline only")
    args = parser.parse_args()
    if args.quick:
        args.model_epochs = args.attack_epochs = args.linkage_epochs = 1
        args.pixelfade_steps = 12  # PixelFade replaces nothing in its last 5 steps (nor before its 5 init steps)
    methods = [m for m in args.methods.split(",") if m]
    if not set(methods) <= set(METHODS):
        sys.exit(f"--methods: choose from {', '.join(METHODS)}")
    if not (args.data / "bounding_box_train").is_dir() or not SHARED_MOBILENET.is_file():
        sys.exit(f"needs the Market-1501 subset at {args.data} and {SHARED_MOBILENET} (see ../shared/data/README.md)")
    work = args.work.resolve()
    common = ["--device", args.device, "--seed", str(args.seed)]
    began = time.perf_counter()
    build_split(args.data.resolve(), work / "market", 201)
    model = args.model
    if model is None:
        train = cached(work / "train_agw.json", "train", "reid", "--recipe", "agw", "--data", str(work / "market"),
                       "--format", "market1501", "--out", str(work / "reid_agw"), "--backbone", "mobilenetv2",
                       "--pretrained", str(SHARED_MOBILENET), "--single-stream", "--size", args.model_size,
                       "--epochs", str(args.model_epochs), "--resume", *common)
        model = Path(train["checkpoint"])
    here = work / f"subset_{args.public_ids}_{args.test_ids}"
    data = here / "market"
    counts = subset_tree(work / "market", data, args.public_ids, args.test_ids)
    rows = {}
    for name in methods:
        anon, run_dir = here / "anon" / name, here / "runs" / name
        params = PARAMS[name] if name != "pixelfade" else ["--model", str(model), "--steps", str(args.pixelfade_steps)]
        cached(run_dir / "anonymize.json", "anonymize", "--method", name, *params, "--input", str(data),
               "--output", str(anon), "--format", "market1501", *common)
        dataset = f"Market-1501 subset ({args.public_ids} public / {args.test_ids} test ids)"
        (run_dir / "run.json").write_text(json.dumps({"method": name, "dataset": dataset, "raw": str(data),
                                                      "anon": str(anon)}) + "\n")
        ev = cached(run_dir / "eval.json", "eval", "--model", str(model), "--data", str(data), "--format", "market1501",
                    "--protocol", "market", "--anon", str(anon), "--setting", "all", "--device", args.device)
        privacy = cached(run_dir / "privacy.json", "privacy", "--raw", str(data), "--anon", str(anon),
                         "--format", "market1501")
        if not (run_dir / "attack.json").is_file():  # written by the attack itself, when it finishes
            ppvi("attack", "--raw", str(data), "--anon", str(anon), "--format", "market1501", "--out", str(run_dir),
                 "--attacker", "l1,gan,identity,linkage", "--model", str(model), "--size", args.size,
                 "--epochs", str(args.attack_epochs), "--ngf", str(args.attack_ngf), "--refine-steps",
                 str(args.refine_steps), "--refine-lr", "0.01", "--linkage-epochs",
                 str(args.linkage_epochs), "--linkage-backbone", "mobilenetv2", "--linkage-pretrained",
                 str(SHARED_MOBILENET), "--resume", *common)
        attack = json.loads((run_dir / "attack.json").read_text(encoding="utf-8"))
        rows[name] = {"eval": {s: {k: ev["results"][s][k] for k in ("rank1", "mAP", "mINP")} for s in SETTINGS},
                      "protected_ssim": privacy["mean"]["visible"]["ssim"],
                      "attackers": {a: s["overall"] for a, s in attack["attackers"].items() if a != "linkage"},
                      "identity_before_refinement": {k: attack["attackers"]["identity"]["overall"].get(f"network_{k}")
                                                     for k in ("ssim", "psnr")},
                      "linkage": {k: attack["attackers"]["linkage"][k] for k in ("overall", "chance", "authorized")},
                      "worst": attack["overall"], "worst_by": attack["worst_by"]["all"]}
    report = ppvi("report", *[str(here / "runs" / m) for m in methods], "--out", str(here / "report"))

    from ppvi_cli.runinfo import stamp

    results = {"run": stamp(args.seed, {k: str(v) for k, v in vars(args).items()}), "subset": counts,
               "model": str(model), "methods": rows, "report": report.get("html"),
               "seconds": round(time.perf_counter() - began, 1)}
    (here / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    public = counts["bounding_box_train"]
    print(f"Market-1501 subset: {public['ids']} public ids ({public['images']} images), {args.test_ids} test ids "
          f"({counts['query']['images']} queries, {counts['bounding_box_test']['images']} gallery); authorized model "
          f"{model}; attackers at {args.size}, "
          f"{args.attack_epochs} epochs (ngf {args.attack_ngf}), linkage {args.linkage_epochs} epochs; "
          f"PixelFade T={args.pixelfade_steps}; seed {args.seed}")
    ref = next(iter(rows.values()))["eval"]["raw2raw"]
    print(f"reference raw2raw (authorized model, same subset): rank-1 {ref['rank1']:.1f} mAP {ref['mAP']:.1f}")
    print("utility: the authorized model's mAP (raw2anon, anon2anon); recovery: SSIM/PSNR of recovered vs raw; "
          "linkage: protected query -> raw gallery, %")
    head = ["method", "r2a mAP", "a2a mAP", "prot.SSIM", *(f"{a} SSIM/PSNR" for a in RECOVERY), "unrefined",
            "worst SSIM (by)",
            "linkage R1/mAP", "chance R1/mAP", "auth. a2r R1/mAP"]
    lines = [head]
    for name, row in rows.items():
        link, chance = row["linkage"]["overall"], row["linkage"]["chance"]["overall"]
        auth, unrefined = row["linkage"]["authorized"]["overall"], row["identity_before_refinement"]
        lines.append([name, f"{row['eval']['raw2anon']['mAP']:.1f}", f"{row['eval']['anon2anon']['mAP']:.1f}",
                      f"{row['protected_ssim']:.3f}",
                      *(f"{row['attackers'][a]['ssim']:.3f}/{row['attackers'][a]['psnr'] or float('inf'):.2f}"
                        for a in RECOVERY),
                      "-" if unrefined["ssim"] is None else f"{unrefined['ssim']:.3f}/{unrefined['psnr']:.2f}",
                      f"{row['worst']['ssim']:.3f} ({row['worst_by']['ssim']})",
                      *(f"{f['rank1']:.1f}/{f['mAP']:.1f}" for f in (link, chance, auth))])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for line in lines:
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))))
    print(f"report: {report.get('html')}; results: {here / 'results.json'}; {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
