"""`ppvi data synth`: the embedded synthetic visible-infrared ReID dataset, in the SYSU-MM01 layout.

Writes `cam{1..6}/{pid:04d}/{n:04d}.jpg` (cameras 3 and 6 infrared, stored as three equal
channels), `exp/{train,val,test}_id.txt`, `keypoints.json` (17 COCO keypoints per image, pixels of
the written image) and `synth.json` (config, seed, versions, counts). Every identity, camera and
image draws from its own seed `derived_seed(seed, key)`, so an image does not depend on the order
of generation and the same config gives the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ppvi_cli.data.imageio import write_image_atomic, write_text_atomic
from ppvi_cli.data.synth.model import (COCO_KEYPOINTS, INFRARED_CAMERAS, VISIBLE_CAMERAS, sample_camera,
                                       sample_identity, sample_shot)
from ppvi_cli.data.synth.scene import make_backdrop, render_image
from ppvi_cli.errors import PPVIError
from ppvi_cli.progress import Progress, Tracker
from ppvi_cli.runinfo import derived_seed, stamp

CAMERAS = tuple(sorted(VISIBLE_CAMERAS + INFRARED_CAMERAS))
SPLIT_FRACTIONS = {"val": 0.1, "test": 0.4}  # the rest is train


@dataclass
class SynthConfig:
    """How much to draw. The default (60 ids x 6 cameras x 4 images at 128x64) takes about 8 s on 2 CPU cores."""

    ids: int = 60
    images_per_camera: int = 4
    height: int = 128
    width: int = 64
    seed: int = 0

    def total_images(self) -> int:
        return self.ids * len(CAMERAS) * self.images_per_camera

    def validate(self) -> None:
        for name, value, least in (("ids", self.ids, 4), ("images_per_camera", self.images_per_camera, 1),
                                   ("height", self.height, 32), ("width", self.width, 16)):
            if value < least:
                raise PPVIError(f"synth: {name}={value} is too small; use at least {least}")


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng(derived_seed(seed, key))


def split_ids(ids: int, seed: int) -> dict[str, list[int]]:
    """pids 1..ids shuffled into train/val/test (about 50/10/40%); val and test get at least 2 ids
    where that leaves a train id (with 4 ids: 1 train, 1 val, 2 test)."""
    order = [int(p) for p in _rng(seed, "split").permutation(np.arange(1, ids + 1))]
    n_test = max(2, round(SPLIT_FRACTIONS["test"] * ids))
    n_val = min(max(2, round(SPLIT_FRACTIONS["val"] * ids)), ids - n_test - 1)
    return {"train": sorted(order[n_test + n_val:]), "val": sorted(order[n_test:n_test + n_val]),
            "test": sorted(order[:n_test])}


def synthesize(out: Path, config: SynthConfig, on_progress: Progress | None = None) -> dict:
    """Draw the dataset into `out` (which must not exist or be empty); returns a summary dict.

    Progress: stage "synthesizing", images drawn of `config.total_images()`."""
    config.validate()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PPVIError(f"synth: {out} exists and is not an empty folder; pass a new or empty output folder")
    seed, h, w = config.seed, config.height, config.width
    identities = {pid: sample_identity(_rng(seed, f"id/{pid}")) for pid in range(1, config.ids + 1)}
    keypoints: dict[str, list] = {}
    tracker = Tracker(on_progress, "synthesizing", config.total_images())
    for cam in CAMERAS:
        camera = sample_camera(_rng(seed, f"cam/{cam}"), cam)
        backdrop = make_backdrop(camera, h, w)
        for pid, identity in identities.items():
            for n in range(config.images_per_camera):
                relpath = f"cam{cam}/{pid:04d}/{n:04d}.jpg"
                rng = _rng(seed, f"image/{relpath}")
                shot = sample_shot(rng, camera, identity, h, w, backdrop.margin(h, w))
                pixels, kps = render_image(identity, camera, backdrop, shot, rng, h, w)
                write_image_atomic(out / relpath, pixels)
                keypoints[relpath] = [[round(float(x), 2), round(float(y), 2), int(v)] for x, y, v in kps]
                tracker.advance()

    splits = split_ids(config.ids, seed)
    for name, pids in splits.items():
        write_text_atomic(out / "exp" / f"{name}_id.txt", ",".join(map(str, pids)) + "\n")
    write_text_atomic(out / "keypoints.json", json.dumps(
        {"format": "coco17", "keypoint_names": list(COCO_KEYPOINTS), "images": keypoints}, separators=(",", ":")))
    counts = {"images": len(keypoints), "ids": config.ids, "cameras": len(CAMERAS),
              "split_ids": {k: len(v) for k, v in splits.items()}}
    info = {**stamp(seed, asdict(config)), "config": asdict(config), "counts": counts,
            "modalities": {f"cam{c}": "infrared" if c in INFRARED_CAMERAS else "visible" for c in CAMERAS}}
    write_text_atomic(out / "synth.json", json.dumps(info, indent=2) + "\n")
    return {"images": counts["images"], "ids": config.ids, "split_ids": counts["split_ids"],
            "config": asdict(config), "out": str(out)}
