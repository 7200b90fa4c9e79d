"""Pose experts: where a person's 17 COCO keypoints are, for PPA's KPR guidance maps.

`--pose groundtruth` reads the synthetic dataset's `keypoints.json` sidecar; `--pose yolo[:WEIGHTS]`
runs an ultralytics YOLO pose model (YOLOv8n-pose by default, as PPA), frozen, and keeps the most
salient person of each image: the largest box, confidence breaking ties. Every expert returns
`[N, 17, 3]` float32 rows `(x, y, v)` in the pixels of each image as read; `v > 0` marks a
present keypoint and an image without a detection is all zeros.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from ppvi_cli.data.imageio import ImageReadError, read_image, write_image_atomic, write_text_atomic
from ppvi_cli.data.records import Record
from ppvi_cli.errors import PPVIError
from ppvi_cli.pose.maps import RADIUS, detected, guidance_maps
from ppvi_cli.progress import Progress, Tracker

NUM_KEYPOINTS = 17
DEFAULT_YOLO = "yolov8n-pose.pt"
KEYPOINTS_FILE = "keypoints.json"
POSE_HELP = "groundtruth (the synthetic data's keypoints.json), yolo, or yolo:PATH_OR_NAME (an ultralytics pose model)"


class GroundTruthExpert:
    """Keypoints from a `keypoints.json` (`{"images": {relpath: [[x, y, v] x 17]}}`) at the data root.

    `ppvi data synth` writes it; an anonymized mirror carries it along; `ppvi pose` writes one for
    any dataset from another expert. An image missing from the file counts as not detected.
    """

    spec = "groundtruth"

    def __init__(self, root: str | Path):
        path = Path(root) / KEYPOINTS_FILE
        if not path.is_file():
            raise PPVIError(f"--pose groundtruth: {path} not found; it exists for `ppvi data synth` data (or the "
                            "output of `ppvi pose`); for other data use --pose yolo")
        try:
            table = json.loads(path.read_text(encoding="utf-8"))["images"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise PPVIError(f"--pose groundtruth: {path} is not a keypoints file ({exc!r}); "
                            "expected {\"images\": {relpath: [[x, y, v], ...]}}") from None
        self.path = path
        self._table = table

    def keypoints(self, images: Sequence[np.ndarray], records: Sequence[Record]) -> np.ndarray:
        out = np.zeros((len(records), NUM_KEYPOINTS, 3), np.float32)
        for i, rec in enumerate(records):
            rows = self._table.get(rec.relpath)
            if rows is not None:
                out[i] = np.asarray(rows, np.float32).reshape(NUM_KEYPOINTS, 3)
        return out

    def describe(self) -> dict:
        return {"spec": self.spec, "file": str(self.path)}


def _offline() -> bool:
    from ultralytics.utils import ONLINE

    return os.environ.get("YOLO_OFFLINE", "").lower() in ("1", "true", "yes") or not ONLINE


def load_yolo(weights: str):
    """An ultralytics pose model from a path, a cached name, a download (online), or a `.yaml` config.

    A `.yaml` builds the architecture with random weights (tests only: it detects nothing useful).
    Offline with no file: PPVIError saying where to get the weights, without trying the network.
    """
    from ultralytics import YOLO
    from ultralytics.utils import WEIGHTS_DIR

    path = Path(weights).expanduser()
    if path.suffix in (".yaml", ".yml"):
        source = weights
    elif path.is_file():
        source = str(path)
    elif path.name == weights and (WEIGHTS_DIR / weights).is_file():
        source = str(WEIGHTS_DIR / weights)
    elif _offline():
        raise PPVIError(
            f"--pose yolo:{weights}: no such file and ultralytics is offline, so it cannot download it; fetch "
            f"https://github.com/ultralytics/assets/releases (e.g. {DEFAULT_YOLO}) on a machine with network, "
            f"then pass --pose yolo:/path/to/{path.name} or put the file in {WEIGHTS_DIR}")
    else:
        source = weights
    try:
        model = YOLO(source)
    except (OSError, ConnectionError, FileNotFoundError, RuntimeError) as exc:
        raise PPVIError(f"--pose yolo:{weights}: cannot load the model ({str(exc).strip()[:200]}); "
                        f"pass a local ultralytics pose .pt file") from None
    if model.task != "pose":
        raise PPVIError(f"--pose yolo:{weights} is a {model.task!r} model, not a pose model (use e.g. {DEFAULT_YOLO})")
    return model


class YoloExpert:
    """A frozen ultralytics pose model; keeps the largest detected person of each image.

    `conf` is the box confidence threshold (ultralytics' default 0.25); a keypoint is present
    (`v = 2`) when its own confidence reaches `keypoint_conf` (0.5, the threshold ultralytics draws
    with), else `v = 0`. `imgsz` is the letterboxed inference size.
    """

    def __init__(self, weights: str = DEFAULT_YOLO, device: str = "auto", conf: float = 0.25,
                 keypoint_conf: float = 0.5, imgsz: int = 640, batch_size: int = 32):
        from ppvi_cli.device import select_device

        self.weights, self.conf, self.keypoint_conf, self.imgsz = weights, conf, keypoint_conf, imgsz
        self.batch_size = batch_size
        self.spec = f"yolo:{weights}"
        self.device = select_device(device)
        self.model = load_yolo(weights)

    def keypoints(self, images: Sequence[np.ndarray], records: Sequence[Record]) -> np.ndarray:
        out = np.zeros((len(images), NUM_KEYPOINTS, 3), np.float32)
        bgr = [np.ascontiguousarray((np.repeat(im[..., None], 3, 2) if im.ndim == 2 else im)[..., ::-1])
               for im in images]  # ultralytics reads numpy arrays as OpenCV BGR
        for start in range(0, len(bgr), self.batch_size):
            results = self.model.predict(bgr[start:start + self.batch_size], imgsz=self.imgsz, conf=self.conf,
                                         device=str(self.device), verbose=False)
            for offset, result in enumerate(results):
                out[start + offset] = self._most_salient(result)
        return out

    def _most_salient(self, result) -> np.ndarray:
        row = np.zeros((NUM_KEYPOINTS, 3), np.float32)
        boxes, kps = result.boxes, result.keypoints
        if boxes is None or kps is None or len(boxes.xyxy) == 0:
            return row
        xyxy = boxes.xyxy.cpu().numpy()
        area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
        best = int(np.lexsort((-boxes.conf.cpu().numpy(), -area))[0])
        row[:, :2] = kps.xy[best].cpu().numpy()
        conf = kps.conf[best].cpu().numpy() if kps.conf is not None else np.ones(NUM_KEYPOINTS, np.float32)
        row[:, 2] = np.where(conf >= self.keypoint_conf, 2.0, 0.0)
        row[row[:, 2] == 0, :2] = 0.0
        return row

    def describe(self) -> dict:
        return {"spec": self.spec, "conf": self.conf, "keypoint_conf": self.keypoint_conf, "imgsz": self.imgsz,
                "device": str(self.device)}


def build_expert(spec: str, data_root: str | Path | None = None, device: str = "auto"):
    """The expert a `--pose` value names (see POSE_HELP); `data_root` is where groundtruth looks."""
    name, _, arg = spec.partition(":")
    if name == "groundtruth" and not arg:
        if data_root is None:
            raise PPVIError("--pose groundtruth needs the dataset root (--data)")
        return GroundTruthExpert(data_root)
    if name == "yolo":
        return YoloExpert(arg or DEFAULT_YOLO, device=device)
    raise PPVIError(f"unknown --pose {spec!r}; use {POSE_HELP}")


def map_path(out: Path, relpath: str) -> Path:
    """Where `render_pose_maps` writes an image's map: its relpath with a `.png` suffix."""
    return (out / relpath).with_suffix(".png")


def render_pose_maps(data: str | Path, out: str | Path, pose: str = "groundtruth", fmt: str = "auto",
                     radius: float = RADIUS, device: str = "auto", batch_size: int = 32,
                     on_progress: Progress | None = None) -> dict:
    """Write each image's guidance map (8-bit PNG, 255 within `radius` pixels of a keypoint) under `out`.

    Also writes `out/keypoints.json` (the expert's keypoints, readable by `--pose groundtruth`) and
    `out/pose.json` (this summary). Returns the reproducibility stamp (params, versions) with `{"pose",
    "radius", "images", "detection": {modality: {"images", "detected", "rate"}}, "unreadable", "out"}`;
    rate is detected / images. Progress: stage "pose <pose>", images done of the dataset's.
    """
    from ppvi_cli.data.inputs import collect_inputs
    from ppvi_cli.runinfo import stamp

    from ppvi_cli.runfolder import check_outside_inputs

    src, dst = Path(data).resolve(), check_outside_inputs(out, {"--data": data})
    inputs = collect_inputs(src, fmt)
    records, used_format = inputs.records, inputs.format
    expert = build_expert(pose, src, device)
    tracker = Tracker(on_progress, f"pose {pose}", len(records))
    tracker.start()
    table: dict[str, list] = {}
    seen, found, unreadable = Counter(), Counter(), []
    for start in range(0, len(records), batch_size):
        batch, images = [], []
        for rec in records[start:start + batch_size]:
            try:
                images.append(read_image(rec.path))
                batch.append(rec)
            except ImageReadError as exc:
                unreadable.append({"path": rec.relpath, "reason": exc.reason})
        kps = expert.keypoints(images, batch) if batch else np.zeros((0, NUM_KEYPOINTS, 3), np.float32)
        for rec, image, row, hit in zip(batch, images, kps, detected(kps)):
            mask = guidance_maps(row[None], image.shape[:2], radius)[0, 0].numpy()
            write_image_atomic(map_path(dst, rec.relpath), (mask * 255).astype(np.uint8))
            table[rec.relpath] = [[round(float(x), 2), round(float(y), 2), int(v)] for x, y, v in row]
            seen[rec.modality] += 1
            found[rec.modality] += bool(hit)
        tracker.advance(len(records[start:start + batch_size]))
    summary = {**stamp(None, {"pose": pose, "radius": radius, "format": fmt}),
               "pose": expert.describe(), "radius": radius, "format": used_format, "images": sum(seen.values()),
               "detection": {m: {"images": seen[m], "detected": found[m], "rate": found[m] / seen[m]}
                             for m in sorted(seen)},
               "unreadable": unreadable, "out": str(dst)}
    write_text_atomic(dst / KEYPOINTS_FILE, json.dumps({"format": "coco17", "expert": expert.spec, "images": table},
                                                       separators=(",", ":")))
    write_text_atomic(dst / "pose.json", json.dumps(summary, indent=2) + "\n")
    return summary
