"""Pose experts and KPR guidance maps: maps against an independent distance computation, the
ground-truth and YOLO experts' API, the most-salient choice, offline errors, `ppvi pose`."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.distance import cdist

from ppvi_cli.data.records import Record
from ppvi_cli.data.synth import SynthConfig, synthesize
from ppvi_cli.errors import PPVIError
from ppvi_cli.pose.experts import GroundTruthExpert, YoloExpert, build_expert, load_yolo, map_path, render_pose_maps
from ppvi_cli.pose.maps import detected, flip_keypoints, guidance_maps, scale_keypoints

from conftest import run_cli


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("pose") / "synth"
    synthesize(root, SynthConfig(ids=4, images_per_camera=1, height=64, width=32, seed=3))
    return root


def reference_map(kps: np.ndarray, height: int, width: int, radius: float) -> np.ndarray:
    """1 where the Euclidean distance from the pixel (col, row) to the nearest present keypoint <= R."""
    present = kps[kps[:, 2] > 0, :2]
    if len(present) == 0:
        return np.zeros((height, width), np.float32)
    rows, cols = np.mgrid[0:height, 0:width]
    pixels = np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float64)
    nearest = cdist(pixels, present.astype(np.float64)).min(axis=1)
    return (nearest <= radius).reshape(height, width).astype(np.float32)


def test_guidance_maps_match_an_independent_distance_computation():
    rng = np.random.default_rng(0)
    kps = np.zeros((4, 17, 3), np.float32)
    kps[..., 0] = rng.uniform(-8, 40, (4, 17))
    kps[..., 1] = rng.uniform(-8, 72, (4, 17))
    kps[..., 2] = rng.choice([0, 1, 2], (4, 17))
    kps[3, :, 2] = 0  # no detection: an empty map
    maps = guidance_maps(kps, (64, 32), radius=5)
    assert maps.shape == (4, 1, 64, 32) and maps.dtype == torch.float32
    for b in range(4):
        np.testing.assert_array_equal(maps[b, 0].numpy(), reference_map(kps[b], 64, 32, 5))
    assert maps[3].sum() == 0 and maps[:3].sum() > 0


def test_guidance_map_radius_is_inclusive_and_hidden_keypoints_count():
    kps = np.zeros((1, 17, 3), np.float32)
    kps[0, 0] = (10, 20, 1)  # COCO v=1: labelled but hidden still guides
    m = guidance_maps(kps, (40, 30), radius=5)[0, 0]
    assert m[20, 15] == 1 and m[25, 10] == 1  # exactly R away
    assert m[21, 15] == 0 and m[24, 14] == 0  # sqrt(26) and sqrt(32) > 5
    assert int(m.sum()) == 81  # lattice points within a radius-5 disc


def test_flipped_keypoints_give_the_flipped_map_and_scaling_keeps_edges():
    rng = np.random.default_rng(1)
    kps = np.concatenate([rng.uniform(0, 30, (2, 17, 2)), np.full((2, 17, 1), 2.0)], axis=2).astype(np.float32)
    direct = guidance_maps(flip_keypoints(kps, 32), (64, 32), 4)
    torch.testing.assert_close(direct, guidance_maps(kps, (64, 32), 4).flip(-1))
    scaled = scale_keypoints(np.array([[[-0.5, -0.5, 2], [63.5, 127.5, 1]]]), (128, 64), (256, 128))
    np.testing.assert_allclose(scaled[0, :, :2], [[-0.5, -0.5], [127.5, 255.5]])
    assert list(scaled[0, :, 2]) == [2, 1]


def test_groundtruth_expert_reads_the_synthetic_sidecar(synth):
    table = json.loads((synth / "keypoints.json").read_text())["images"]
    rel = sorted(table)[:3]
    records = [Record(r, 1, 1, "visible", synth) for r in rel] + [Record("cam1/9999/0000.jpg", 9, 1, "visible", synth)]
    expert = build_expert("groundtruth", synth)
    out = expert.keypoints([np.zeros((64, 32, 3), np.uint8)] * 4, records)
    assert out.shape == (4, 17, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[:3], np.asarray([table[r] for r in rel], np.float32))
    assert list(detected(out)) == [True, True, True, False]  # an image the file lacks is not detected


def test_groundtruth_without_sidecar_and_unknown_spec_are_usage_errors(tmp_path):
    with pytest.raises(PPVIError, match="keypoints.json not found"):
        GroundTruthExpert(tmp_path)
    with pytest.raises(PPVIError, match="unknown --pose 'openpose'"):
        build_expert("openpose", tmp_path)


def test_yolo_expert_from_config_returns_keypoint_rows():
    expert = YoloExpert("yolov8n-pose.yaml", device="cpu", imgsz=64, conf=0.001)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 32, 3), dtype=np.uint8), rng.integers(0, 255, (48, 24), dtype=np.uint8)]
    out = expert.keypoints(images, [None, None])
    assert out.shape == (2, 17, 3) and out.dtype == np.float32
    assert set(np.unique(out[..., 2])) <= {0.0, 2.0}  # random weights may find nothing: the shape is the API
    assert expert.describe()["spec"] == "yolo:yolov8n-pose.yaml"


def test_yolo_keeps_the_largest_person_confidence_breaking_ties():
    expert = YoloExpert.__new__(YoloExpert)
    expert.keypoint_conf = 0.5
    xy = torch.arange(3 * 17 * 2, dtype=torch.float32).view(3, 17, 2)
    kconf = torch.full((3, 17), 0.9)
    kconf[1, :5] = 0.2
    boxes = SimpleNamespace(xyxy=torch.tensor([[0, 0, 10, 10], [0, 0, 20, 10], [5, 5, 25, 15.0]]),
                            conf=torch.tensor([0.9, 0.3, 0.6]))
    row = expert._most_salient(SimpleNamespace(boxes=boxes, keypoints=SimpleNamespace(xy=xy, conf=kconf)))
    np.testing.assert_array_equal(row[5:, :2], xy[2, 5:].numpy())  # boxes 1 and 2 tie on area; 2 is surer
    assert (row[:, 2] == 2).all()
    kconf[2, :5] = 0.2
    row = expert._most_salient(SimpleNamespace(boxes=boxes, keypoints=SimpleNamespace(xy=xy, conf=kconf)))
    assert (row[:5] == 0).all() and (row[5:, 2] == 2).all()  # unsure keypoints are absent
    empty = SimpleNamespace(boxes=SimpleNamespace(xyxy=torch.zeros(0, 4), conf=torch.zeros(0)), keypoints=None)
    assert (expert._most_salient(empty) == 0).all()


def test_missing_yolo_weights_offline_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PPVIError, match="offline.*--pose yolo:/path/to/ppvi-no-such-pose.pt"):
        load_yolo("ppvi-no-such-pose.pt")
    assert not list(tmp_path.iterdir())  # nothing downloaded or half-written


def test_render_pose_maps_writes_maps_and_detection_rates(synth, tmp_path):
    summary = render_pose_maps(synth, tmp_path / "maps", "groundtruth", radius=3)
    table = json.loads((synth / "keypoints.json").read_text())["images"]
    assert summary["images"] == len(table) == 24
    assert set(summary["detection"]) == {"visible", "infrared"}
    assert summary["detection"]["infrared"]["images"] == 8
    for modality, row in summary["detection"].items():
        assert row["rate"] == row["detected"] / row["images"] > 0.9
    rel = sorted(table)[5]
    stored = np.asarray(Image.open(map_path(tmp_path / "maps", rel)))
    expected = reference_map(np.asarray(table[rel], np.float32), 64, 32, 3) * 255
    np.testing.assert_array_equal(stored, expected.astype(np.uint8))
    again = json.loads((tmp_path / "maps" / "keypoints.json").read_text())["images"]
    assert again[rel] == table[rel]  # the rendered folder's sidecar serves --pose groundtruth too


def test_pose_cli_reports_rates_as_json(synth, tmp_path):
    result = run_cli("--json", "pose", "--data", str(synth), "--out", str(tmp_path / "m"), "--pose", "groundtruth")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["detection"]["visible"]["images"] == 16 and doc["radius"] == 5.0
    bad = run_cli("pose", "--data", str(synth), "--out", str(synth / "inside"))
    assert bad.returncode == 2 and "must never land on an input" in bad.stderr
