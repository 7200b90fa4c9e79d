"""Dataset readers: layouts, pid/camid/modality rules, metadata, detection and every error message."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from ppvi_cli.data.readers import detect_format, load_dataset, read_regdb_split, read_sysu_ids
from ppvi_cli.data.records import INFRARED, VISIBLE
from ppvi_cli.errors import PPVIError

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _image(path: Path) -> None:
    """A tiny 8x4 image; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 8), (120, 60, 30)).save(path)


def _rows(dataset, split):
    return [(r.relpath, r.pid, r.camid, r.modality) for r in dataset.splits[split]]


# ---------------------------------------------------------------- market1501

@pytest.fixture
def market(tmp_path):
    root = tmp_path / "market"
    for name in ("0002_c1s1_000451_03.jpg", "0002_c3s2_000551_01.jpg", "0007_c2s1_000100_01.jpg",
                 "-1_c1s1_000001_00.jpg", "0000_c5s1_000002_00.jpg", "bad_name.jpg"):
        _image(root / "bounding_box_train" / name)
    (root / "bounding_box_train" / "Thumbs.db").write_bytes(b"not an image")
    _image(root / "query" / "0007_c6s1_000300_01.jpg")
    return root


def test_market_records_junk_distractor_and_notes(market):
    ds = load_dataset(market, "market1501")
    assert ds.format == "market1501" and set(ds.splits) == {"train", "query"}
    assert _rows(ds, "train") == [
        ("bounding_box_train/0000_c5s1_000002_00.jpg", 0, 5, VISIBLE),
        ("bounding_box_train/0002_c1s1_000451_03.jpg", 2, 1, VISIBLE),
        ("bounding_box_train/0002_c3s2_000551_01.jpg", 2, 3, VISIBLE),
        ("bounding_box_train/0007_c2s1_000100_01.jpg", 7, 2, VISIBLE),
    ]
    assert _rows(ds, "query") == [("query/0007_c6s1_000300_01.jpg", 7, 6, VISIBLE)]
    assert all(r.path.is_file() for r in ds.records())
    assert ds.metadata == []
    assert "bounding_box_test/ not present" in ds.notes
    assert "bounding_box_train/: dropped 1 junk images (pid -1)" in ds.notes
    assert "bounding_box_train/: kept 1 distractor images as pid 0" in ds.notes
    assert any("skipped 1 images" in n and "'bad_name.jpg'" in n for n in ds.notes)
    assert ds.summary()["splits"]["train"] == {"ids": 3, "images": 4, "cameras": [1, 2, 3, 5],
                                               "modalities": {VISIBLE: 4}}


def test_market_gallery_split_and_detection(market):
    _image(market / "bounding_box_test" / "0009_c4s3_000010_02.jpg")
    assert detect_format(market) == "market1501"
    ds = load_dataset(market)
    assert _rows(ds, "gallery") == [("bounding_box_test/0009_c4s3_000010_02.jpg", 9, 4, VISIBLE)]
    assert not any("not present" in n for n in ds.notes)


def test_market_errors(tmp_path):
    (tmp_path / "other").mkdir()
    with pytest.raises(PPVIError, match=r"market1501 layout at .*: none of bounding_box_train/, query/, "
                                        r"bounding_box_test/ found; expected"):
        load_dataset(tmp_path, "market1501")
    (tmp_path / "query").mkdir()
    _image(tmp_path / "query" / "holiday.jpg")
    with pytest.raises(PPVIError, match=r"market1501 dataset at .* contains no images; expected .*"
                                        r"skipped 1 images"):
        load_dataset(tmp_path, "market1501")


# ---------------------------------------------------------------- sysu

@pytest.fixture
def sysu(tmp_path):
    root = tmp_path / "sysu"
    for pid in (1, 2, 3, 4, 5, 6):
        for cam in (1, 3, 6):
            _image(root / f"cam{cam}" / f"{pid:04d}" / "0001.jpg")
    _image(root / "cam1" / "0001" / "0002.png")
    exp = root / "exp"
    exp.mkdir()
    (exp / "train_id.txt").write_text(" 2, 1,\n")
    (exp / "val_id.txt").write_text("3")
    (exp / "test_id.txt").write_text("4,5 ,9\n")
    (exp / "available_id.txt").write_text("1,2,3,4,5")
    (root / "keypoints.json").write_text("{}")
    return root


def test_sysu_records_modalities_and_order(sysu):
    assert detect_format(sysu) == "sysu"
    ds = load_dataset(sysu)
    assert ds.format == "sysu" and list(ds.splits) == ["train", "val", "test"]
    assert _rows(ds, "train") == [
        ("cam1/0001/0001.jpg", 1, 1, VISIBLE), ("cam1/0001/0002.png", 1, 1, VISIBLE),
        ("cam3/0001/0001.jpg", 1, 3, INFRARED), ("cam6/0001/0001.jpg", 1, 6, INFRARED),
        ("cam1/0002/0001.jpg", 2, 1, VISIBLE), ("cam3/0002/0001.jpg", 2, 3, INFRARED),
        ("cam6/0002/0001.jpg", 2, 6, INFRARED),
    ]
    assert {r.pid for r in ds.splits["val"]} == {3}
    assert {r.pid for r in ds.splits["test"]} == {4, 5}
    assert ds.metadata == ["exp/available_id.txt", "exp/test_id.txt", "exp/train_id.txt", "exp/val_id.txt",
                           "keypoints.json"]
    assert "test: 1 of 3 ids listed in exp/test_id.txt have no images" in ds.notes
    assert "1 ids with images are in no exp/*_id.txt and were left out, e.g. pid 6" in ds.notes
    assert {"cam2/ not present", "cam4/ not present", "cam5/ not present"} <= set(ds.notes)
    assert read_sysu_ids(sysu) == {"train": [2, 1], "val": [3], "test": [4, 5, 9]}


def test_sysu_missing_split_file(sysu):
    (sysu / "exp" / "test_id.txt").unlink()
    message = ("sysu layout at {}: missing exp/test_id.txt; expected cam1..cam6/<pid:04d>/<n>.jpg and "
               "exp/{{train,val,test}}_id.txt").format(sysu)
    with pytest.raises(PPVIError) as err:
        load_dataset(sysu)
    assert str(err.value) == message
    with pytest.raises(PPVIError, match="missing exp/test_id.txt"):
        read_sysu_ids(sysu)


def test_sysu_without_camera_folders(tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "train_id.txt").write_text("1")
    assert detect_format(tmp_path) == "sysu"
    with pytest.raises(PPVIError, match=r"missing exp/val_id.txt, exp/test_id.txt, cam1..cam6/ "
                                        r"\(no camera folders, so no images\)"):
        load_dataset(tmp_path)


def test_sysu_bad_ids_and_empty_cameras(sysu, tmp_path):
    (sysu / "exp" / "val_id.txt").write_text("3,x4")
    with pytest.raises(PPVIError, match=r"exp/val_id.txt holds 'x4', not an id"):
        read_sysu_ids(sysu)
    empty = tmp_path / "empty"
    (empty / "cam1" / "0001").mkdir(parents=True)
    (empty / "exp").mkdir()
    for split in ("train", "val", "test"):
        (empty / "exp" / f"{split}_id.txt").write_text("1")
    with pytest.raises(PPVIError, match="the camera folders hold no images"):
        load_dataset(empty, "sysu")
    _image(empty / "cam1" / "0002" / "0001.jpg")
    with pytest.raises(PPVIError, match=r"none of the ids listed .* has images \(found image folders for 1 other"):
        load_dataset(empty, "sysu")


# ---------------------------------------------------------------- regdb

TRAIN_IDS, TEST_IDS = (10, 11), (20, 21)


@pytest.fixture
def regdb(tmp_path):
    """Trial 1: ids 10, 11 train and 20, 21 test; trial 2 swaps them. CRLF lines, as in the release."""
    root = tmp_path / "regdb"
    for pid in TRAIN_IDS + TEST_IDS:
        for i in range(2):
            _image(root / "Visible" / str(pid) / f"male_v_{i}_{pid}.bmp")
            _image(root / "Thermal" / str(pid) / f"male_t_{i}_{pid}.bmp")
    (root / "idx").mkdir()
    for trial, splits in ((1, (TRAIN_IDS, TEST_IDS)), (2, (TEST_IDS, TRAIN_IDS))):
        for split, ids in zip(("train", "test"), splits):
            for kind, folder, tag in (("visible", "Visible", "v"), ("thermal", "Thermal", "t")):
                lines = [f"{folder}/{pid}/male_{tag}_{i}_{pid}.bmp {label}"
                         for label, pid in enumerate(ids) for i in range(2)]
                (root / "idx" / f"{split}_{kind}_{trial}.txt").write_bytes("\r\n".join(lines).encode() + b"\r\n")
    return root


def test_regdb_split_lists(regdb):
    lists = read_regdb_split(regdb, 1)
    assert sorted(lists) == ["test_thermal", "test_visible", "train_thermal", "train_visible"]
    assert lists["train_visible"] == [("Visible/10/male_v_0_10.bmp", 0), ("Visible/10/male_v_1_10.bmp", 0),
                                      ("Visible/11/male_v_0_11.bmp", 1), ("Visible/11/male_v_1_11.bmp", 1)]
    assert read_regdb_split(regdb, 2)["train_thermal"][0] == ("Thermal/20/male_t_0_20.bmp", 0)


def test_regdb_records_use_folder_ids(regdb):
    assert detect_format(regdb) == "regdb"
    ds = load_dataset(regdb)
    assert list(ds.splits) == ["train", "test"]
    train = _rows(ds, "train")
    assert train[:2] == [("Visible/10/male_v_0_10.bmp", 10, 1, VISIBLE), ("Visible/10/male_v_1_10.bmp", 10, 1, VISIBLE)]
    assert train[4] == ("Thermal/10/male_t_0_10.bmp", 10, 2, INFRARED)
    assert {r.pid for r in ds.splits["train"]} == set(TRAIN_IDS)
    assert {r.pid for r in ds.splits["test"]} == set(TEST_IDS)
    assert [r.modality for r in ds.splits["test"]] == [VISIBLE] * 4 + [INFRARED] * 4
    assert ds.metadata == sorted(f"idx/{split}_{kind}_{trial}.txt" for split in ("train", "test")
                                 for kind in ("visible", "thermal") for trial in (1, 2))
    swapped = load_dataset(regdb, trial=2)
    assert {r.pid for r in swapped.splits["train"]} == set(TEST_IDS)


def test_regdb_missing_images(regdb):
    (regdb / "Visible" / "20" / "male_v_1_20.bmp").unlink()
    ds = load_dataset(regdb, "regdb")
    assert len(ds.splits["test"]) == 7
    assert "1 of 4 visible images listed in idx/test_visible_1.txt are missing, e.g. Visible/20/male_v_1_20.bmp" \
        in ds.notes
    for path in (regdb / "Thermal").rglob("*.bmp"):
        path.unlink()
    with pytest.raises(PPVIError) as err:
        load_dataset(regdb)
    assert str(err.value).startswith(
        f"regdb at {regdb}: no thermal images: 4 of 4 thermal images listed in idx/train_thermal_1.txt are "
        "missing, e.g. Thermal/10/male_t_0_10.bmp; 4 of 4 thermal images listed in idx/test_thermal_1.txt")


def test_regdb_errors(regdb):
    for trial in (0, 11, "x"):
        with pytest.raises(PPVIError, match=r"regdb trial must be an integer 1..10, got"):
            load_dataset(regdb, trial=trial)
    (regdb / "idx" / "train_visible_1.txt").write_text("Visible/10/male_v_0_10.bmp 0\nVisible/10 oops\n")
    with pytest.raises(PPVIError, match=r"idx/train_visible_1.txt line 2 reads 'Visible/10 oops'; expected"):
        read_regdb_split(regdb, 1)
    (regdb / "idx" / "test_thermal_1.txt").unlink()
    with pytest.raises(PPVIError, match=r"regdb at .*: missing idx/test_thermal_1.txt; expected"):
        load_dataset(regdb)


# ---------------------------------------------------------------- folder

def test_folder_int_ids_nested_files_and_notes(tmp_path):
    for rel in ("3/a.jpg", "3/sub/b.png", "12/c.bmp", "loose.jpg"):
        _image(tmp_path / rel)
    (tmp_path / "empty").mkdir()
    assert detect_format(tmp_path) == "folder"
    ds = load_dataset(tmp_path)
    assert _rows(ds, "all") == [("12/c.bmp", 12, 0, VISIBLE), ("3/a.jpg", 3, 0, VISIBLE),
                                ("3/sub/b.png", 3, 0, VISIBLE)]
    assert "1 folders hold no images" in ds.notes
    assert "skipped 1 images at the root, outside any id folder" in ds.notes


def test_folder_names_mapped_to_ids(tmp_path):
    for rel in ("bob/1.jpg", "alice/1.jpg", "7/1.jpg"):
        _image(tmp_path / rel)
    ds = load_dataset(tmp_path, "folder")
    assert {r.relpath: r.pid for r in ds.splits["all"]} == {"7/1.jpg": 0, "alice/1.jpg": 1, "bob/1.jpg": 2}
    assert any("not all integers" in n and "'7' -> 0" in n for n in ds.notes)


def test_folder_pattern(tmp_path):
    for rel in ("1/p_c1_rgb.jpg", "1/p_c2_IR.jpg", "2/p_c3_nir.png", "2/p_c4_t.png", "2/readme.jpg"):
        _image(tmp_path / rel)
    ds = load_dataset(tmp_path, "folder", pattern=r"_c(?P<camid>\d+)_(?P<modality>[A-Za-z]+)\.")
    assert _rows(ds, "all") == [("1/p_c1_rgb.jpg", 1, 1, VISIBLE), ("1/p_c2_IR.jpg", 1, 2, INFRARED),
                                ("2/p_c3_nir.png", 2, 3, INFRARED), ("2/p_c4_t.png", 2, 4, INFRARED)]
    assert any("skipped 1 images" in n and "'2/readme.jpg'" in n for n in ds.notes)
    only_cam = load_dataset(tmp_path, "folder", pattern=r"_c(?P<camid>\d)")
    assert {r.modality for r in only_cam.splits["all"]} == {VISIBLE}


def test_folder_pattern_errors(tmp_path):
    _image(tmp_path / "1" / "p_c1_xyz.jpg")
    with pytest.raises(PPVIError, match=r"modality 'xyz' for 1/p_c1_xyz.jpg, neither visible"):
        load_dataset(tmp_path, "folder", pattern=r"_c(?P<camid>\d+)_(?P<modality>[a-z]+)")
    with pytest.raises(PPVIError, match=r"camid 'c1' for 1/p_c1_xyz.jpg, not an integer"):
        load_dataset(tmp_path, "folder", pattern=r"_(?P<camid>c\d)")
    with pytest.raises(PPVIError, match=r"is not a valid regex"):
        load_dataset(tmp_path, "folder", pattern="(")
    with pytest.raises(PPVIError, match=r"unknown named groups cam; the groups it may name are camid, modality"):
        load_dataset(tmp_path, "folder", pattern=r"_c(?P<cam>\d)")
    with pytest.raises(PPVIError, match=r"none of the 1 images matches pattern '_rgb', e.g. '1/p_c1_xyz.jpg'"):
        load_dataset(tmp_path, "folder", pattern="_rgb")


# ---------------------------------------------------------------- load_dataset

def test_root_and_format_errors(tmp_path, market):
    with pytest.raises(PPVIError, match=r"dataset root .*nowhere does not exist"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(PPVIError, match=r"dataset root .*file.txt is not a directory"):
        load_dataset(tmp_path / "file.txt")
    with pytest.raises(PPVIError, match=r"unknown dataset format 'sysy'; did you mean 'sysu'\?"):
        load_dataset(market, "sysy")
    with pytest.raises(PPVIError, match=r"dataset format 'market1501' takes no option 'trial' \(its options: none\)"):
        load_dataset(market, trial=2)
    assert load_dataset(market, "MARKET1501").format == "market1501"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PPVIError, match=r"no dataset found at .*empty: no images in <pid>/ folders"):
        load_dataset(empty)
    with pytest.raises(PPVIError, match=r"folder dataset at .*empty contains no images; expected <pid>/"):
        load_dataset(empty, "folder")


# ---------------------------------------------------------------- CLI

def test_cli_check_json(market):
    from ppvi_cli.cli.app import app

    result = CliRunner().invoke(app, ["--json", "data", "check", str(market)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["format"] == "market1501"
    assert summary["splits"]["train"]["ids"] == 3 and summary["splits"]["query"]["images"] == 1
    assert "bounding_box_test/ not present" in summary["notes"]


def test_cli_check_errors(tmp_path, regdb):
    from ppvi_cli.cli.app import app

    result = CliRunner().invoke(app, ["data", "check", str(regdb), "--trial", "11"])
    assert isinstance(result.exception, PPVIError) and "1..10" in str(result.exception)
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "train_id.txt").write_text("1")
    proc = subprocess.run([sys.executable, "-c", "from ppvi_cli.cli.app import main; main()",
                           "data", "check", str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and proc.stdout == ""
    message = " ".join(proc.stderr.split())  # rich may wrap a long line at the terminal width
    assert message.startswith("error: sysu layout at") and message.count("error:") == 1
    assert "missing exp/val_id.txt, exp/test_id.txt, cam1..cam6/ (no camera folders, so no images)" in message


# ---------------------------------------------------------------- real data

def _shared(rel: str) -> Path:
    path = SHARED_DATA / rel
    if not path.exists():
        pytest.skip(f"{path} absent (real data lives only beside the project)")
    return path


@pytest.mark.slow
def test_real_market1501_subset():
    root = _shared("market1501/Market-1501-v15.09.15")
    names = [p.name for p in (root / "bounding_box_train").iterdir()]
    parsed = [m for m in map(re.compile(r"^(-?\d{1,4})_c(\d)s\d_\d{6}_\d{2}\.jpg$").match, names) if m]
    kept = [(int(m.group(1)), int(m.group(2))) for m in parsed if m.group(1) != "-1"]
    ds = load_dataset(root)
    train = ds.splits["train"]
    assert ds.format == "market1501" and list(ds.splits) == ["train"]
    assert len(train) == len(kept) == 8642
    assert len({r.pid for r in train}) == len({pid for pid, _ in kept}) == 501
    assert sorted((r.pid, r.camid) for r in train) == sorted(kept)
    assert sorted({r.camid for r in train}) == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_real_regdb_idx_and_missing_thermal():
    root = _shared("regdb/RegDB")
    for trial in range(1, 11):
        lists = read_regdb_split(root, trial)
        raw = (root / "idx" / f"test_visible_{trial}.txt").read_text().split()
        assert [p for p, _ in lists["test_visible"]] == raw[0::2]
        ids = {s: {int(p.split("/")[1]) for p, _ in lists[s]} for s in lists}
        assert len(lists["test_visible"]) == 2060 and len(ids["test_visible"]) == 206
        assert ids["train_visible"] == ids["train_thermal"] and ids["test_visible"] == ids["test_thermal"]
        assert not ids["train_visible"] & ids["test_visible"]
    with pytest.raises(PPVIError, match=r"no thermal images \(Thermal/ does not exist\): 2060 of 2060 thermal "
                                        r"images listed in idx/train_thermal_1.txt are missing"):
        load_dataset(root)


@pytest.mark.slow
def test_real_sysu_id_files_without_images():
    root = _shared("sysu_mm01/SYSU-MM01")
    ids = read_sysu_ids(root)
    raw = {s: [int(t) for t in (root / "exp" / f"{s}_id.txt").read_text().strip().split(",")] for s in ids}
    assert ids == raw
    assert not set(ids["train"]) & set(ids["val"]) and not set(ids["train"]) & set(ids["test"])
    assert not set(ids["val"]) & set(ids["test"])
    with pytest.raises(PPVIError, match=r"sysu layout at .*: missing cam1..cam6/ \(no camera folders, so no images\)"):
        load_dataset(root)
