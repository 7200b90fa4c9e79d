"""How steady the demo's PixelFade rows are: the demo's PixelFade stage and its evaluation, run once per
torch thread count, and the spread of the utility figures between the runs.

    OMP_NUM_THREADS=2 python benchmarks/demo_pixelfade_threads.py [--out /tmp/ppvi_demo_threads] [--threads 1,2]
    OMP_NUM_THREADS=2 python benchmarks/demo_pixelfade_threads.py --images 12 [--pixelfade steps=20,eps=0.03]

Float32 kernels round differently with the thread count (the split of each reduction), and an
optimisation amplifies last-bit differences: the stored bytes differ between the runs. What should
not move is what the demo reports: with a feature constraint that binds, every image ends within eps
of its own feature, so retrieval sees nearly the same features whatever the rounding. Uses the
demo's own data (`DemoConfig`: 60 synthetic ids, 360 images), its PixelFade parameters and its
evaluation (sysu-all, 10 trials, the shipped dual-stream model). Prints, per thread count, the
share of files meeting eps, raw2anon / anon2raw / anon2anon rank-1, mAP and mINP, SSIM vs raw and
the seconds, then the largest difference between thread counts and the share of identical files.

`--images N` is the quick form: every k-th of the demo's test-id images (N in all), protected once per
thread count, no evaluation; it prints, per run, the share meeting eps and the median feature
distance (1 - cos) of the stored files to their raw images, and the distance between the features of
the same file made with different thread counts (median / max): what moves the retrieval rows.
`--pixelfade k=v,...` overrides the demo's PixelFade parameters (e.g. the old `steps=20,eps=0.03`).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ppvi_cli.anonymize.methods import build_method
from ppvi_cli.anonymize.pixelfade import PixelFade
from ppvi_cli.anonymize.runner import anonymize_dataset
from ppvi_cli.data.imageio import list_images
from ppvi_cli.demo import DemoConfig, _evaluate, _synth_once, method_params
from ppvi_cli.measure import privacy_report
from ppvi_cli.runinfo import stamp

SETTINGS = ("raw2anon", "anon2raw", "anon2anon")
METRICS = ("rank1", "mAP", "mINP")


def quick(data: Path, params: dict, threads: list[int], images: int, seed: int) -> None:
    """Protect `images` of the test ids once per thread count; print the feature-level spread."""
    import numpy as np
    import torch.nn.functional as F

    from ppvi_cli.data.imageio import read_image
    from ppvi_cli.data.readers import load_dataset
    from ppvi_cli.data.transforms import normalize, resize, to_tensor
    from ppvi_cli.models.dual_stream import modality_tensor
    from ppvi_cli.runinfo import derived_seed

    dataset = load_dataset(data, "sysu")
    test = sorted(dataset.splits["test"])
    chosen = test[::max(1, len(test) // images)][:images]
    pixels = [read_image(r.path) for r in chosen]
    seeds = [derived_seed(seed, r.relpath) for r in chosen]
    feats, rows = {}, {}
    for n in threads:
        torch.set_num_threads(n)
        method = build_method("pixelfade", **params)
        method.setup("cpu")
        began = time.perf_counter()
        out = method.protect_batch(pixels, chosen, seeds)
        rows[n] = {"met": np.mean([p.stats["mse_stored"] < p.stats["eps"] for p in out]),
                   "cosine": np.median([p.stats["cosine_stored"] for p in out]), "seconds": time.perf_counter() - began}
        cfg = method._config
        x = torch.stack([to_tensor(p.pixels) for p in out])
        with torch.no_grad():
            feats[n] = method._net.extract(normalize(resize(x, cfg.input_size), cfg.mean, cfg.std),
                                           modality_tensor([r.modality for r in chosen], "cpu"))
    print(f"demo data {data}; {len(chosen)} test-id images; PixelFade {params}; seed {seed}")
    for n, row in rows.items():
        print(f"threads {n}: met eps {row['met']:.0%}, median 1 - cos(stored, raw) {row['cosine']:.3f}, "
              f"{row['seconds']:.0f} s")
    first, *others = threads
    for n in others:
        spread = (1 - F.cosine_similarity(feats[first], feats[n], dim=1)).numpy()
        print(f"threads {first} vs {n}: 1 - cos between the two files' features: median {np.median(spread):.4f}, "
              f"max {spread.max():.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/ppvi_demo_threads"))
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--images", type=int, default=0, help="quick form on N test-id images (0: the whole demo)")
    parser.add_argument("--pixelfade", default="", help="overrides of the demo's PixelFade parameters, k=v,...")
    args = parser.parse_args()
    config = DemoConfig()
    data = args.out / "data"
    _synth_once(data, config)
    params = method_params("pixelfade", config)
    for item in filter(None, args.pixelfade.split(",")):
        key, _, value = item.partition("=")
        params[key] = value if key in ("eps", "eps_scale") else type(getattr(PixelFade(), key))(value)
    if args.images:
        quick(data, params, [int(t) for t in args.threads.split(",")], args.images, config.seed)
        return
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
