"""How steady the demo's PixelFade rows are: the demo's PixelFade stage and its evaluation, run once per
torch thread count, and the spread of the utility figures between the runs.

    OMP_NUM_THREADS=2 python benchmarks/demo_pixelfade_threads.py [--out /tmp/ppvi_demo_threads] [--threads 1,2]

Float32 kernels round differently with the thread count (the split of each reduction), and an
optimisation amplifies last-bit differences: the stored bytes differ between the runs. What should
not move is what the demo reports: with a feature constraint that binds, every image ends within eps
of its own feature, so retrieval sees nearly the same features whatever the rounding. Uses the
demo's own data (`DemoConfig`: 60 synthetic ids, 360 images), its PixelFade parameters and its
evaluation (sysu-all, 10 trials, the shipped dual-stream model). Prints, per thread count, the
share of files meeting eps, raw2anon / anon2raw / anon2anon rank-1, mAP and mINP, SSIM vs raw and
the seconds, then the largest difference between thread counts and the share of identical files.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ppvi_cli.anonymize.methods import build_method
from ppvi_cli.anonymize.runner import anonymize_dataset
from ppvi_cli.data.imageio import list_images
from ppvi_cli.demo import DemoConfig, _evaluate, _synth_once, method_params
from ppvi_cli.measure import privacy_report
from ppvi_cli.runinfo import stamp

SETTINGS = ("raw2anon", "anon2raw", "anon2anon")
METRICS = ("rank1", "mAP", "mINP")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/ppvi_demo_threads"))
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    config = DemoConfig()
    data = args.out / "data"
    _synth_once(data, config)
    params = method_params("pixelfade", config)
    rows = {}
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        anon = args.out / f"pixelfade_threads{threads}"
        began = time.perf_counter()
        summary = anonymize_dataset(build_method("pixelfade", **params), data, anon, fmt="sysu", seed=config.seed,
                                    device="cpu")
        seconds = time.perf_counter() - began
        evaluation = _evaluate(data, anon, config, "cpu")["results"]
        rows[threads] = {"anon": anon, "seconds": seconds, "constraint": summary["stats"].get("constraint"),
                         "ssim": privacy_report(data, anon, "sysu")["mean"],
                         **{s: {m: evaluation[s][m] for m in METRICS} for s in ("raw2raw", *SETTINGS)}}
    print(f"demo data {data} ({config.ids} ids, seed {config.data_seed}); PixelFade {params}; seed {config.seed}; "
          f"{stamp(config.seed, asdict(config))['versions']}")
    print(f"{'threads':>7} {'met eps':>8} " + " ".join(f"{s + ' R1/mAP/mINP':>26}" for s in SETTINGS)
          + "   SSIM vis/IR   seconds")
    for threads, row in rows.items():
        met = row["constraint"]
        cells = " ".join(f"{row[s]['rank1']:8.2f}/{row[s]['mAP']:6.2f}/{row[s]['mINP']:6.2f}".rjust(26)
                         for s in SETTINGS)
        ssim = "/".join(f"{v['ssim']:.3f}" for v in row["ssim"].values())
        share = met["share_met"] if met else float("nan")
        print(f"{threads:7d} {share:8.1%} {cells}   {ssim:>11}   {row['seconds']:7.0f}")
    if len(rows) > 1:
        spread = {f"{s} {m}": max(r[s][m] for r in rows.values()) - min(r[s][m] for r in rows.values())
                  for s in SETTINGS for m in METRICS}
        first, *others = rows.values()
        names = list_images(first["anon"])
        same = sum(all((first["anon"] / n).read_bytes() == (o["anon"] / n).read_bytes() for o in others) for n in names)
        print("largest difference between thread counts (points): "
              + ", ".join(f"{k} {v:.2f}" for k, v in spread.items()))
        print(f"files byte-identical across thread counts: {same} of {len(names)}")


if __name__ == "__main__":
    main()
