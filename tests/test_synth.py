"""The synthetic VI dataset: layout, splits, modalities, keypoints, determinism, and that it is a
real ReID task (handcrafted features beat chance but do not solve it; patterns and the lightness
order of clothes carry over into infrared)."""

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import REPO
from ppvi_cli.data.synth import CAMERAS, SynthConfig, split_ids, synthesize
from ppvi_cli.data.synth.draw import Canvas, draw_person
from ppvi_cli.data.synth.model import (COCO_KEYPOINTS, KP, VIEWS, sample_camera, sample_identity, sample_shot,
                                       skeleton)
from ppvi_cli.data.synth.scene import make_backdrop, render_image
from ppvi_cli.data.sysu_mm01 import read as read_sysu
from ppvi_cli.errors import PPVIError

SMALL = SynthConfig(ids=6, images_per_camera=2, height=64, width=32, seed=3)
IR_CAMS = (3, 6)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "data"
    calls = []
    summary = synthesize(out, SMALL, on_progress=calls.append)
    return out, summary, calls


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("synth_separability", REPO / "benchmarks" / "synth_separability.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_layout_counts_and_summary(small):
    out, summary, calls = small
    expected = {f"cam{c}/{p:04d}/{n:04d}.jpg" for c in range(1, 7) for p in range(1, 7) for n in range(2)}
    images = {p.relative_to(out).as_posix() for p in out.rglob("*.jpg")}
    assert images == expected
    assert summary["images"] == len(expected) == SMALL.total_images() == 72
    assert [(e.stage, e.done, e.total) for e in calls] == [("synthesizing", n, 72) for n in range(1, 73)]
    assert summary["ids"] == 6 and summary["out"] == str(out)
    assert summary["config"] == {"ids": 6, "images_per_camera": 2, "height": 64, "width": 32, "seed": 3}
    info = json.loads((out / "synth.json").read_text())
    assert info["seed"] == 3 and info["config"] == summary["config"] and info["ppvi_version"]
    assert info["counts"]["images"] == 72 and info["counts"]["split_ids"] == summary["split_ids"]
    assert [c for c in CAMERAS if info["modalities"][f"cam{c}"] == "infrared"] == list(IR_CAMS)
    # the project's own SYSU-MM01 reader takes it as it is
    dataset = read_sysu(out)
    assert sum(len(r) for r in dataset.splits.values()) == 72 and not dataset.notes
    assert {r.modality for r in dataset.records() if r.camid in IR_CAMS} == {"infrared"}


def test_split_files_are_disjoint_and_cover_every_id(small):
    out, summary, _ = small
    lines = {s: (out / "exp" / f"{s}_id.txt").read_text() for s in ("train", "val", "test")}
    assert all(text.count("\n") == 1 and text.endswith("\n") for text in lines.values())
    ids = {s: [int(t) for t in text.strip().split(",")] for s, text in lines.items()}
    assert sorted(ids["train"] + ids["val"] + ids["test"]) == list(range(1, 7))
    assert {s: len(v) for s, v in ids.items()} == summary["split_ids"]
    for n in (4, 5, 6, 12, 60, 101):
        split = split_ids(n, seed=0)
        assert sorted(sum(split.values(), [])) == list(range(1, n + 1))
        assert len(split["train"]) >= 1 and len(split["test"]) >= 2 and len(split["val"]) >= (1 if n == 4 else 2)
    big = split_ids(60, seed=0)
    assert (len(big["train"]), len(big["val"]), len(big["test"])) == (30, 6, 24)
    assert split_ids(60, seed=1) != big


def test_images_decode_infrared_is_grey_visible_is_colour(small):
    out, _, _ = small
    for path in sorted(out.rglob("*.jpg")):
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (32, 64)
            px = np.asarray(im).astype(int)
        cam = int(path.parts[-3][3:])
        spread = np.abs(px[..., 0] - px[..., 1]).mean() + np.abs(px[..., 1] - px[..., 2]).mean()
        if cam in IR_CAMS:
            assert spread == 0, path
        else:
            assert spread > 4, path  # colour everywhere: walls, floors and clothes are not grey
        assert px.std() > 10  # not blank


def test_keypoints_file(small):
    out, _, _ = small
    doc = json.loads((out / "keypoints.json").read_text())
    assert doc["format"] == "coco17" and doc["keypoint_names"] == list(COCO_KEYPOINTS) and len(COCO_KEYPOINTS) == 17
    assert set(doc["images"]) == {p.relative_to(out).as_posix() for p in out.rglob("*.jpg")}
    labelled = 0
    for rel, rows in doc["images"].items():
        kp = np.array(rows, dtype=float)
        assert kp.shape == (17, 3) and set(kp[:, 2]) <= {0, 1, 2}
        seen = kp[:, 2] > 0
        assert np.all((kp[seen, 0] >= 0) & (kp[seen, 0] < 32) & (kp[seen, 1] >= 0) & (kp[seen, 1] < 64)), rel
        assert np.all(kp[~seen] == 0), rel  # unlabelled keypoints are 0, 0, 0 as in COCO
        labelled += seen.sum()
        if seen.all():  # head above shoulders above hips above knees above ankles
            y = kp[:, 1]
            assert y[KP["nose"]] < y[KP["left_shoulder"]] < y[KP["left_hip"]] < y[KP["left_knee"]] < y[KP["left_ankle"]]
    assert labelled > 0.9 * 17 * len(doc["images"])


@pytest.mark.parametrize("view", VIEWS)
def test_keypoints_lie_on_the_drawn_figure_and_sides_follow_the_view(view):
    rng = np.random.default_rng(7)
    camera = sample_camera(rng, 1)
    for _ in range(12):
        identity = sample_identity(rng)
        shot = replace(sample_shot(rng, camera, identity, 128, 64, (0, 0)), view=view)
        xy, vis = skeleton(identity, shot)
        canvas = Canvas(np.full((128, 64, 4), -1.0, np.float32))  # -1: no shape painted here
        draw_person(canvas, identity, shot, xy)
        assert np.all((xy >= 0) & (xy < (64, 128)))  # these shots keep the whole person in frame
        for name, (x, y) in zip(COCO_KEYPOINTS, xy):
            painted = canvas.px[int(y), int(x), 3] + 1  # 0 where nothing was drawn
            # joints sit inside a limb; face points may sit on the head's outline (the ears)
            assert painted > (1.0 if KP[name] >= KP["left_shoulder"] else 0.1), (view, name)
        left, right = xy[KP["left_shoulder"], 0], xy[KP["right_shoulder"], 0]
        hidden = {COCO_KEYPOINTS[i] for i in np.flatnonzero(vis == 1)}
        if view == "front":
            assert left > right and not hidden  # the person's left is on the image right
        elif view == "back":
            assert left < right and hidden == {"nose", "left_eye", "right_eye"}
        else:  # facing image left shows the person's left side; the far side is labelled but hidden
            far = "right" if view == "left" else "left"
            assert hidden == {f"{far}_{j}" for j in ("eye", "ear", "shoulder", "elbow", "wrist", "hip", "knee",
                                                     "ankle")}
            nose_ahead = xy[KP["nose"], 0] - xy[KP["left_ear"], 0]
            assert nose_ahead < 0 if view == "left" else nose_ahead > 0


def test_deterministic_and_independent_of_generation_order(small, tmp_path):
    out, _, _ = small
    first = _files(out)
    synthesize(tmp_path / "again", SMALL)
    again = _files(tmp_path / "again")
    assert set(first) == set(again)
    assert all(first[k] == again[k] for k in first if k != "synth.json")
    meta = [json.loads(d["synth.json"]) for d in (first, again)]
    assert all(m.pop("created") and m.pop("command") is not None for m in meta) and meta[0] == meta[1]

    synthesize(tmp_path / "seven", replace(SMALL, ids=7, images_per_camera=1))  # one more id, fewer images
    seven = _files(tmp_path / "seven")
    assert all(seven[k] == first[k] for k in seven if k.endswith("/0000.jpg") and "/0007/" not in k)

    synthesize(tmp_path / "other", replace(SMALL, seed=4))
    other = _files(tmp_path / "other")
    assert all(other[k] != first[k] for k in first if k.endswith(".jpg"))


def test_refuses_a_non_empty_output_and_bad_sizes(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    with pytest.raises(PPVIError, match="not an empty folder"):
        synthesize(busy, SMALL)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    with pytest.raises(PPVIError, match="not an empty folder"):
        synthesize(busy / "keep.txt", SMALL)
    with pytest.raises(PPVIError, match="ids=2 is too small"):
        synthesize(tmp_path / "few", replace(SMALL, ids=2))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert synthesize(empty, replace(SMALL, ids=4, images_per_camera=1))["images"] == 24


def test_learnable_but_not_trivially_separable(tmp_path):
    """Fixed seed, 12 ids: the colour histogram finds people across visible cameras well above chance,
    the centre grey profile finds them from infrared to visible above chance; the mean colour, across
    cameras or across modalities, does not."""
    bench = _load_benchmark()
    synthesize(tmp_path / "s", SynthConfig(ids=12, images_per_camera=2, seed=0))
    result = bench.separability(*bench.load(tmp_path / "s"), seed=0)
    chance = result["chance"]
    assert result["ids"] == 12 and chance == pytest.approx(1 / 12)
    row = {(r["feature"], r["setting"]): r for r in result["rows"]}
    histogram = row["colour histogram", "visible->visible"]
    assert histogram["rank1"] > 2.5 * chance and histogram["rank1"] > histogram["control_rank1"] + 0.1
    assert row["mean colour", "visible->visible"]["rank1"] < 0.5
    assert row["mean colour", "infrared->visible"]["rank1"] < 0.4
    assert row["centre profile", "infrared->visible"]["rank1"] > 2.5 * chance
    assert all(r["control_rank1"] < 3 * chance for r in result["rows"])


def test_rank1_helper_against_a_hand_example():
    bench = _load_benchmark()
    gallery, pids = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]), np.array([1, 2, 3])
    query = np.array([[2.0, 0.1], [0.1, 0.9], [1.0, 0.5]])
    # the third query points along pid 3's direction but lies nearest to pid 1's vector
    assert bench.rank1(query, pids, gallery, pids, "cosine") == 1.0
    assert bench.rank1(query, pids, gallery, pids, "l2") == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="'cosine' or 'l2'"):
        bench.rank1(query, pids, gallery, pids, "dot")


def test_cli_synth(tmp_path):
    from ppvi_cli.cli.app import app

    out = tmp_path / "cli"
    args = ["--json", "data", "synth", str(out), "--ids", "4", "--images-per-camera", "1", "--height", "64",
            "--width", "32"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["images"] == 24 and doc["ids"] == 4 and doc["split_ids"] == {"train": 1, "val": 1, "test": 2}
    assert doc["config"]["seed"] == 0 and len(list(out.rglob("*.jpg"))) == 24
    again = CliRunner().invoke(app, args)
    assert again.exit_code != 0 and isinstance(again.exception, PPVIError)


def _same_shot_in_both_modalities(rng, identity, visible, infrared):
    """A front view of `identity` rendered by a visible and an infrared camera in the same pose:
    `(grey [2, H, W] in [0, 1], keypoints [17, 3])`."""
    shot = replace(sample_shot(rng, visible, identity, 128, 64, (0, 0)), view="front", centre_x=32.0, top_y=8.0,
                   person_px=112.0)
    grey = []
    for camera in (visible, infrared):
        backdrop = make_backdrop(camera, 128, 64)
        pixels, kp = render_image(identity, camera, backdrop, shot, np.random.default_rng(0), 128, 64)
        grey.append(pixels.mean(axis=2) / 255.0)
    return np.stack(grey), kp


def test_infrared_keeps_patterns_and_the_lightness_order_of_clothes():
    """What lets a model match across modalities: stripes and checks show in infrared where they show
    in colour, and a top much lighter than the trousers in visible light is mostly lighter in infrared
    too (not always: fabrics differ)."""
    rng = np.random.default_rng(11)
    visible, infrared = sample_camera(rng, 1), sample_camera(rng, 3)
    orders, stripes = [], []
    for _ in range(150):
        identity = sample_identity(rng)
        grey, kp = _same_shot_in_both_modalities(rng, identity, visible, infrared)
        x = int(kp[KP["nose"], 0])
        chest = slice(int(kp[KP["left_shoulder"], 1]) + 6, int(kp[KP["left_hip"], 1]) - 6)
        hip, knee = kp[KP["right_hip"]], kp[KP["right_knee"]]
        thigh = slice(int(hip[1]) + 3, int(hip[1] + 0.4 * (knee[1] - hip[1])))
        top, bottom = np.median(grey[:, chest, x], axis=1), np.median(grey[:, thigh, int(hip[0])], axis=1)
        if abs(top[0] - bottom[0]) > 0.25:
            orders.append(np.sign(top[0] - bottom[0]) == np.sign(top[1] - bottom[1]))
        if identity.top.pattern in ("stripes", "checks") and np.ptp(grey[0, chest, x]) > 0.25:
            stripes.append(np.corrcoef(grey[0, chest, x], grey[1, chest, x])[0, 1])
    assert len(orders) >= 30 and np.mean(orders) > 0.8, (len(orders), np.mean(orders))
    assert len(stripes) >= 10 and np.median(stripes) > 0.5, (len(stripes), np.median(stripes))
