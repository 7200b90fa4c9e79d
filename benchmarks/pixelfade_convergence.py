"""How close PixelFade gets to the original features on a given model, against eps and the step count.

    python benchmarks/pixelfade_convergence.py --model CKPT --data DIR [--images 16] [--steps 100,300]
    OMP_NUM_THREADS=1 python benchmarks/pixelfade_convergence.py --model /tmp/market_real/reid_agw/last.pt \\
        --data /tmp/market_real/market --images 16 --steps 100,300

PixelFade's eps (0.03) is a mean squared difference of eval-mode BNNeck features, the feature the
authors' code uses too, so its scale is the model's BNNeck output (per-element mean square ~1). Whether
the constraint is ever met, and hence whether replacement continues after the warm-up, depends on how
close the optimisation gets on the model at hand. This runs `ppvi anonymize --method pixelfade` (paper
constants otherwise) on the first --images query images of DIR for each step count and prints, per run,
the stored files' feature MSE (min / mean / max), the share of files under eps and the mean number of
steps that met eps, next to the reference eps. Work goes to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="Market-1501 root (query/ is sampled)")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--steps", default="100,300")
    parser.add_argument("--eps", type=float, default=0.03)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    chosen = sorted((args.data / "query").glob("*.jpg"))[:args.images]
    if not chosen:
        sys.exit(f"no query/*.jpg under {args.data}")
    ppvi = str(Path(sys.executable).parent / "ppvi")
    with tempfile.TemporaryDirectory(prefix="ppvi-pf-conv-") as tmp:
        subset = Path(tmp) / "data"  # a plain <pid>/<image> folder
        for path in chosen:
            target = subset / path.name[:4] / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
        print(f"reference eps {args.eps:g} (mean squared BNNeck-feature difference); {len(chosen)} images; "
              f"model {args.model}")
        print(f"{'steps':>6} {'mse min':>9} {'mean':>8} {'max':>8} {'under eps':>10} {'steps met':>10} {'s/img':>7}")
        for steps in [int(s) for s in args.steps.split(",") if s]:
            out = Path(tmp) / f"out_{steps}"
            began = time.perf_counter()
            done = subprocess.run([ppvi, "--json", "--quiet", "--seed", str(args.seed), "anonymize", "--method",
                                   "pixelfade", "--model", str(args.model), "--steps", str(steps), "--eps",
                                   str(args.eps), "--input", str(subset), "--output", str(out),
                                   "--format", "folder", "--device", args.device],
                                  stdout=subprocess.PIPE, text=True)
            if done.returncode != 0:
                sys.exit(f"ppvi anonymize failed (exit {done.returncode})")
            seconds = (time.perf_counter() - began) / len(chosen)
            files = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["files"].values()
            mse = np.array([f["stats"]["mse_stored"] for f in files])
            met = np.array([f["stats"]["steps_met"] for f in files])
            print(f"{steps:6d} {mse.min():9.4f} {mse.mean():8.4f} {mse.max():8.4f} {np.mean(mse < args.eps):10.2%} "
                  f"{met.mean():10.1f} {seconds:7.1f}")


if __name__ == "__main__":
    main()
