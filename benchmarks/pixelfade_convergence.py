"""Why PixelFade's feature constraint does or does not bind on a model: how close the optimisation gets,
against the step count, the large step, the working size and the model.

    python benchmarks/pixelfade_convergence.py --model CKPT --data DIR [--images 16] [--runs SPEC ...]
    OMP_NUM_THREADS=1 python benchmarks/pixelfade_convergence.py --model /tmp/market_real/reid_agw/last.pt \\
        --data /tmp/market_real/market --images 16 \\
        --runs steps=100 steps=300 steps=1000 large_step=0.02 large_step=0.08 upscale=256x128 \\
               upscale=256x128,work_size=model

DIR is a Market-1501 tree (query/, bounding_box_test/). The first --images query images are protected
once per run SPEC, a comma list of PixelFade parameters (`steps=300,large_step=0.02`, any field of
`PixelFade`) plus `upscale=HxW` (the images are first resized to HxW with the evaluators' bilinear
resize and stored as 8-bit, as the authors' 256x128 transform does to Market's 128x64 crops). Per run
it prints the stored files' feature MSE to the raw image (min / mean / max), the same relative to
each image's feature energy mean(f^2), the share under the run's eps, the mean number of steps that
met eps and the seconds per image. Above the table: the model's feature geometry on the query images
of the first --geometry-ids test ids (energy, the MSE between an image and its mirror image, between two images of one
id, between images of different ids), the scales a constraint can be compared with.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ppvi_cli.anonymize.methods import build_method
from ppvi_cli.anonymize.pixelfade import PixelFade
from ppvi_cli.data.imageio import read_image
from ppvi_cli.data.records import Record
from ppvi_cli.data.transforms import normalize, resize, to_tensor
from ppvi_cli.errors import PPVIError
from ppvi_cli.runinfo import derived_seed, stamp
from ppvi_cli.validate import parse_size


def parse_run(spec: str) -> dict:
    """`"steps=300,large_step=0.02,upscale=256x128"` -> typed overrides (PixelFade's field types)."""
    types = {name: type(value) for name, value in vars(PixelFade()).items() if not name.startswith("_")}
    run = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key == "upscale":
            try:
                run[key] = parse_size(value, "upscale")
            except PPVIError as error:
                sys.exit(f"--runs: {error} in {spec!r}")
        elif key in types:
            run[key] = types[key](value) if types[key] is not bool else value.lower() in ("1", "true", "yes")
        else:
            sys.exit(f"--runs: unknown key {key!r} in {spec!r} (PixelFade fields or upscale)")
    return run


@torch.no_grad()
def geometry(method: PixelFade, images: list[np.ndarray], pids: list[int]) -> dict:
    """Mean feature energy, mirror-image MSE, same-id and different-id MSE of `images` under the model."""
    net, cfg = method._net, method._config
    x = torch.stack([to_tensor(im) for im in images])
    feats = net.extract(normalize(resize(x, cfg.input_size), cfg.mean, cfg.std)).float()
    mirror = net.extract(normalize(resize(x.flip(-1), cfg.input_size), cfg.mean, cfg.std)).float()
    pair = torch.cdist(feats, feats).pow(2) / feats.shape[1]
    same = torch.tensor(pids)[:, None] == torch.tensor(pids)[None, :]
    off = ~torch.eye(len(pids), dtype=torch.bool)
    return {"energy": feats.pow(2).mean().item(), "mirror": (feats - mirror).pow(2).mean().item(),
            "same_id": pair[same & off].mean().item(), "other_id": pair[~same].mean().item(),
            "per_image_energy": feats.pow(2).mean(dim=1).numpy(),
            "per_image_mirror": (feats - mirror).pow(2).mean(dim=1).numpy()}


def ratio(values: np.ndarray) -> str:
    return f"{values.mean():.3f} ({values.std() / values.mean():.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="Market-1501 root (query/ is sampled)")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--geometry-ids", type=int, default=50, help="query images of the first N test ids")
    parser.add_argument("--runs", nargs="+", default=["steps=100", "steps=300"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    queries = sorted((args.data / "query").glob("*.jpg"))
    chosen = queries[:args.images]
    if not chosen:
        sys.exit(f"no query/*.jpg under {args.data}")
    runs = {spec: parse_run(spec) for spec in args.runs}
    pid_of = {int(p.name[:4]) for p in chosen}
    geometry_ids = set(sorted({int(p.name[:4]) for p in queries})[:args.geometry_ids]) | pid_of
    same_ids = [p for p in queries if int(p.name[:4]) in geometry_ids]
    images = [read_image(p) for p in chosen]
    records = [Record(p.name, int(p.name[:4]), int(p.name[6]), "visible", p.parent) for p in chosen]
    seeds = [derived_seed(args.seed, r.relpath) for r in records]

    probe = build_method("pixelfade", model=str(args.model))
    provenance = probe.setup(args.device)
    geo = geometry(probe, [read_image(p) for p in same_ids], [int(p.name[:4]) for p in same_ids])
    print(f"model {args.model} ({provenance['config']['backbone']}, input {provenance['config']['input_size']}, "
          f"sha256 {provenance['weights_sha256'][:12]}); {len(chosen)} query images of {len(pid_of)} ids; "
          f"seed {args.seed}; torch threads {torch.get_num_threads()}; {stamp(args.seed, {})['versions']}")
    print(f"feature geometry on the {len(same_ids)} query images of {len(geometry_ids)} ids (mean squared "
          f"difference per element): energy mean(f^2) {geo['energy']:.3f}, image vs mirror {geo['mirror']:.3f}, "
          f"same id {geo['same_id']:.3f}, other ids {geo['other_id']:.3f}")
    own = [same_ids.index(p) for p in chosen]
    energy, mirror = geo["per_image_energy"][own], geo["per_image_mirror"][own]
    print("mse: the stored files' feature MSE to the raw image's; /energy, /mirror: mean (and coefficient of "
          "variation) of mse over each image's own energy or mirror MSE")
    print(f"{'run':<32} {'eps':>6} {'mse min':>8} {'mean':>7} {'max':>7} {'/energy (cv)':>13} {'/mirror (cv)':>13} "
          f"{'under':>6} {'met':>6} {'s/img':>6}")
    for spec, run in runs.items():
        size = run.pop("upscale", None)
        work = images if size is None else [
            (resize(to_tensor(im)[None], size)[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            for im in images]
        method = build_method("pixelfade", model=str(args.model), **run)
        method.setup(args.device)
        began = time.perf_counter()
        stats = [p.stats for p in method.protect_batch(work, records, seeds)]
        seconds = (time.perf_counter() - began) / len(chosen)
        mse = np.array([s["mse_stored"] for s in stats])
        met = np.array([s["steps_met"] for s in stats])
        print(f"{spec:<32} {method.eps:6.3f} {mse.min():8.4f} {mse.mean():7.4f} {mse.max():7.4f} "
              f"{ratio(mse / energy):>13} {ratio(mse / mirror):>13} {np.mean(mse < method.eps):6.0%} {met.mean():6.1f} "
              f"{seconds:6.1f}")


if __name__ == "__main__":
    main()
