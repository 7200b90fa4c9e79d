"""Mosaic over 10,000 Market-size (128x64 JPEG) images, against the floor of decoding and encoding.

    python benchmarks/anonymize_speed.py [--n 10000] [--shards 2] [--repeat 3]

Reference, measured in the same run: a bare PIL loop that decodes and re-encodes every image (what
any anonymizer must at least do). Targets: the whole run under 60 s on 2 cores (foundation issue);
one process within 1.5x of the floor (issue 15: ppvi's run folder lists files by hash and fsyncs
its journal per group, not each file). Each timing is the best of --repeat runs (a fresh output
folder each), which keeps the ratio steady on a shared machine. The last line prints
`ratio_to_floor: X` and `budget: Y s of 60 s`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ppvi_cli.anonymize.methods import build_method
from ppvi_cli.anonymize.runner import anonymize_dataset


def make_images(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(64, 128, 64, 3), dtype=np.uint8)
    for i in range(n):
        pid, cam = i // 20 + 1, i % 6 + 1
        path = root / "bounding_box_train" / f"{pid:04d}_c{cam}s1_{i:06d}_00.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(base[i % 64]).save(path, quality=95)


def floor_loop(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted((src / "bounding_box_train").iterdir()):
        with Image.open(path) as im:
            im.load()
            im.save(dst / path.name, quality=95)


def run_shard(args) -> int:
    src, dst, index, count = args
    return anonymize_dataset(build_method("mosaic"), src, dst, fmt="market1501", shard=(index, count))["written"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--shards", type=int, default=2, help="processes (ppvi anonymize --shard i/n)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing; the best is kept")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_images(tmp / "market", args.n)
        floor = single = sharded = float("inf")
        for attempt in range(args.repeat):
            t0 = time.perf_counter()
            floor_loop(tmp / "market", tmp / f"floor{attempt}")
            floor = min(floor, time.perf_counter() - t0)

            t0 = time.perf_counter()
            written = run_shard((tmp / "market", tmp / f"single{attempt}", 0, 1))
            single = min(single, time.perf_counter() - t0)

            t0 = time.perf_counter()
            jobs = [(tmp / "market", tmp / f"sharded{attempt}", i, args.shards) for i in range(args.shards)]
            with mp.get_context("spawn").Pool(args.shards) as pool:
                sharded_written = sum(pool.map(run_shard, jobs))
            sharded = min(sharded, time.perf_counter() - t0)

    assert written == sharded_written == args.n
    print(f"images: {args.n} Market-size 128x64 JPEG; best of {args.repeat} runs each")
    print(f"reference (bare PIL decode+encode loop, 1 process): {floor:.2f} s")
    print(f"ppvi anonymize --method mosaic, 1 process:            {single:.2f} s ({args.n / single:.0f} img/s)")
    print(f"ppvi anonymize --method mosaic, {args.shards} shards:             {sharded:.2f} s ({args.n / sharded:.0f} img/s)")
    print(f"ratio_to_floor: {single / floor:.2f}  budget: {sharded:.1f} s of 60 s")


if __name__ == "__main__":
    main()
