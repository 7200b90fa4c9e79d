"""Is the synthetic VI dataset a real ReID task? Rank-1 of handcrafted features against chance.

    python benchmarks/synth_separability.py [--ids 60] [--images-per-camera 4] [--seed 0] [--split all]

Synthesizes a dataset, then retrieves by nearest neighbour (whole image, background included):
visible->visible across cameras (a visible query against the visible images of the other visible
cameras), infrared->visible (an infrared query against every visible image) and infrared->infrared
(camera 3 against camera 6 and back), with
  - mean colour: the 3-d mean RGB (L2),
  - colour histogram: 4x4x4 joint RGB bins (cosine of square roots, i.e. Hellinger),
  - grey profile: mean grey level of 16 horizontal bands, centred (cosine),
  - grey histogram: 16 grey-level bins (Hellinger),
  - centre profile: the grey profile in 32 bands over the middle half of the columns, where the
    person stands, centred (cosine): the cross-modal feature, since silhouette, garment
    boundaries, patterns and a loose lightness order are what survive the infrared rendering.
Reference: chance = 1/ids, and the same features with the gallery's labels shuffled (control).
Targets: the ids are learnable (V->V colour histogram > 3x chance, IR->V centre profile > 3x
chance) but not trivially separable (V->V mean colour < 90 %, every IR->V feature < 30 %).
Prints a table, then `ratio_to_chance`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ppvi_cli.data.imageio import list_images, read_image
from ppvi_cli.data.synth import SynthConfig, split_ids, synthesize
from ppvi_cli.data.synth.model import INFRARED_CAMERAS

_PATH = re.compile(r"^cam(\d+)/(\d+)/\d+\.jpg$")


def load(root: Path, pids: set[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images of a synthetic dataset: `(pixels [N, H, W, 3] float32 in [0, 1], pid [N], cam [N])`."""
    images, pid, cam = [], [], []
    for rel in list_images(root):
        match = _PATH.match(rel)
        if match and (pids is None or int(match.group(2)) in pids):
            images.append(read_image(root / rel))
            cam.append(int(match.group(1)))
            pid.append(int(match.group(2)))
    return np.stack(images).astype(np.float32) / 255.0, np.array(pid), np.array(cam)


def _hellinger(hist: np.ndarray) -> np.ndarray:
    return np.sqrt(hist / np.maximum(hist.sum(1, keepdims=True), 1e-12))


def _profile(grey: np.ndarray, bands: int) -> np.ndarray:
    """Mean grey level of `bands` horizontal bands of `grey [N, H, W]`, centred per image."""
    rows = np.array_split(np.arange(grey.shape[1]), bands)
    profile = np.stack([grey[:, r].mean(axis=(1, 2)) for r in rows], axis=1)
    return profile - profile.mean(1, keepdims=True)


def features(images: np.ndarray) -> dict[str, tuple[np.ndarray, str]]:
    """Handcrafted features of `images [N, H, W, 3]`: name -> (`[N, D]` float64, metric l2|cosine)."""
    n = len(images)
    grey = images.mean(axis=3)
    bins = np.minimum((images * 4).astype(int), 3)
    joint = bins[..., 0] * 16 + bins[..., 1] * 4 + bins[..., 2]
    colour_hist = np.stack([np.bincount(j.ravel(), minlength=64) for j in joint]).astype(float)
    grey_hist = np.stack([np.bincount(np.minimum((g * 16).astype(int), 15).ravel(), minlength=16)
                          for g in grey]).astype(float)
    w = grey.shape[2]
    return {
        "mean colour": (images.reshape(n, -1, 3).mean(1).astype(float), "l2"),
        "colour histogram": (_hellinger(colour_hist), "cosine"),
        "grey profile": (_profile(grey, 16), "cosine"),
        "grey histogram": (_hellinger(grey_hist), "cosine"),
        "centre profile": (_profile(grey[:, :, w // 4:w - w // 4], 32), "cosine"),
    }


def rank1(query: np.ndarray, query_pid: np.ndarray, gallery: np.ndarray, gallery_pid: np.ndarray,
          metric: str = "cosine") -> float:
    """Fraction of queries whose nearest gallery item (cosine or L2) has the query's pid."""
    if metric == "cosine":
        q = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
        g = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
        nearest = np.argmax(q @ g.T, axis=1)
    elif metric == "l2":
        dist = (query ** 2).sum(1)[:, None] - 2 * query @ gallery.T + (gallery ** 2).sum(1)[None, :]
        nearest = np.argmin(dist, axis=1)
    else:
        raise ValueError(f"metric must be 'cosine' or 'l2', got {metric!r}")
    return float(np.mean(gallery_pid[nearest] == query_pid))


SETTINGS = {  # name -> (query modality, gallery modality); True = infrared
    "visible->visible": (False, False),
    "infrared->visible": (True, False),
    "infrared->infrared": (True, True),
}


def separability(images: np.ndarray, pid: np.ndarray, cam: np.ndarray, seed: int = 0) -> dict:
    """Rank-1 per feature and setting, plus chance and a shuffled-label control.

    Each query camera is searched against the other cameras of the gallery modality (so
    visible->visible and infrared->infrared are always cross-camera), averaged over query cameras.
    """
    infrared = np.isin(cam, INFRARED_CAMERAS)
    feats = features(images)
    shuffled = np.random.default_rng(seed).permutation(pid)  # the control: labels carry no identity
    rows = []
    for name, (f, metric) in feats.items():
        for setting, (query_ir, gallery_ir) in SETTINGS.items():
            scores, control = [], []
            for qc in sorted(set(cam[infrared == query_ir])):
                q = cam == qc
                g = (infrared == gallery_ir) & (cam != qc)
                scores.append(rank1(f[q], pid[q], f[g], pid[g], metric))
                control.append(rank1(f[q], pid[q], f[g], shuffled[g], metric))
            rows.append({"feature": name, "setting": setting, "metric": metric,
                         "rank1": float(np.mean(scores)), "control_rank1": float(np.mean(control))})
    return {"ids": int(len(set(pid))), "chance": 1.0 / len(set(pid)), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ids", type=int, default=60)
    parser.add_argument("--images-per-camera", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=("all", "test"), default="all", help="which ids to retrieve among")
    parser.add_argument("--json", action="store_true", help="print the result as JSON as well")
    args = parser.parse_args(argv)
    config = SynthConfig(ids=args.ids, images_per_camera=args.images_per_camera, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        synthesize(Path(tmp) / "synth", config)
        seconds = time.perf_counter() - t0
        pids = set(split_ids(args.ids, args.seed)["test"]) if args.split == "test" else None
        result = separability(*load(Path(tmp) / "synth", pids), seed=args.seed)
    chance = result["chance"]
    print(f"synthesized {config.total_images()} images ({args.ids} ids, {config.height}x{config.width}) "
          f"in {seconds:.1f} s; retrieval among {result['ids']} ids ({args.split}), chance {chance:.1%}")
    print(f"{'feature':18} {'setting':19} {'rank-1':>7} {'x chance':>8} {'shuffled':>8}")
    for row in result["rows"]:
        print(f"{row['feature']:18} {row['setting']:19} {row['rank1']:7.1%} {row['rank1'] / chance:8.1f} "
              f"{row['control_rank1']:8.1%}")
    by = {(r["feature"], r["setting"]): r["rank1"] for r in result["rows"]}
    checks = {
        "V->V colour histogram > 3x chance": by["colour histogram", "visible->visible"] > 3 * chance,
        "V->V mean colour < 90%": by["mean colour", "visible->visible"] < 0.9,
        "IR->V centre profile > 3x chance": by["centre profile", "infrared->visible"] > 3 * chance,
        "IR->V every feature < 30%": all(by[f, "infrared->visible"] < 0.3 for f, _ in by),
    }
    for text, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {text}")
    print(f"ratio_to_chance: V->V colour histogram {by['colour histogram', 'visible->visible'] / chance:.1f}x, "
          f"IR->V centre profile {by['centre profile', 'infrared->visible'] / chance:.1f}x")
    if args.json:
        print(json.dumps({**result, "synth_seconds": seconds, "checks": checks}, indent=2))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
