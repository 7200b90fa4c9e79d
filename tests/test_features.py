"""`ppvi features` and `ppvi eval --model`: features equal a direct forward pass, splits, cache, errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import run_cli, textured_image
from ppvi_cli.anonymize.conventional import Mosaic
from ppvi_cli.anonymize.runner import anonymize_dataset
from ppvi_cli.cli.app import app
from ppvi_cli.data.readers import load_dataset
from ppvi_cli.data.synth import SynthConfig, synthesize
from ppvi_cli.errors import PPVIError
from ppvi_cli.evaluation.features import dataset_features
from ppvi_cli.evaluation.split import UNKNOWN_CAMID, eval_split, held_out_split
from ppvi_cli.evaluation.store import load_features, save_features
from ppvi_cli.models.checkpoint import save_checkpoint
from ppvi_cli.models.config import ModelConfig
from ppvi_cli.models.extract import extract_features
from ppvi_cli.models.reid import build_model

runner = CliRunner()
MARKET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "market1501" / "Market-1501-v15.09.15"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """8 synthetic ids (3 test ids: 6 infrared queries, 12 visible gallery images) at the model's input
    size (64x32), a mosaic mirror, and a dual-stream ResNet-18 checkpoint (random weights, moved BN statistics)."""
    root = tmp_path_factory.mktemp("features")
    data, anon = root / "data", root / "anon"
    synthesize(data, SynthConfig(ids=8, images_per_camera=1, height=64, width=32, seed=0))
    anonymize_dataset(Mosaic(block=8), data, anon, fmt="sysu")
    torch.manual_seed(0)
    config = ModelConfig(num_classes=4, backbone="resnet18", dual_stream=True, non_local=False,
                         input_size=(64, 32))
    model = build_model(config).train()
    with torch.no_grad():  # BN statistics off their initial values, so eval features depend on the stream
        for _ in range(3):
            model(torch.rand(8, 3, 64, 32) * 2 - 1, torch.tensor([0, 1] * 4))
    model.eval()
    ckpt = root / "reid.pt"
    save_checkpoint(ckpt, model, config, {"note": "random init, test only"})
    return {"root": root, "data": data, "anon": anon, "model": model, "config": config, "ckpt": ckpt}


def reference_features(model, config, paths, modalities) -> np.ndarray:
    """PIL decode, /255, the config's mean/std (no ppvi transforms), one `model.extract` per modality."""
    mean, std = np.array(config.mean, np.float32), np.array(config.std, np.float32)
    images = []
    for path in paths:
        pixels = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
        assert pixels.shape[:2] == tuple(config.input_size)  # no resize involved in the reference
        images.append(torch.from_numpy((pixels - mean) / std).permute(2, 0, 1))
    rows = np.zeros((len(paths), config.feat_dim), np.float32)
    with torch.no_grad():
        for stream, name in enumerate(("visible", "infrared")):
            pick = [i for i, m in enumerate(modalities) if m == name]
            if pick:
                x = torch.stack([images[i] for i in pick])
                rows[pick] = model.extract(x, torch.full((len(pick),), stream)).numpy()
    return rows


def cli_json(*args: str) -> dict:
    result = runner.invoke(app, ["--json", "--quiet", *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.stdout)


def test_extract_equals_direct_forward_pass(world):
    model, config = world["model"], world["config"]
    split = eval_split(world["data"], "sysu")
    records = split.query + split.gallery
    assert {r.modality for r in split.query} == {"infrared"} and {r.modality for r in split.gallery} == {"visible"}
    model.train()  # extraction must switch to eval and then restore the caller's mode
    feats = extract_features(model, records, "cpu", batch_size=5)
    assert model.training
    model.eval()
    ref = reference_features(model, config, [r.path for r in records], [r.modality for r in records])
    assert feats.dtype == np.float32 and feats.shape == (len(records), config.feat_dim)
    np.testing.assert_allclose(feats, ref, rtol=1e-5, atol=1e-5)
    assert feats.std(axis=0).mean() > 1e-3  # not a degenerate constant feature
    anon = extract_features(model, records, "cpu", batch_size=7, anon_root=world["anon"])
    ref_anon = reference_features(model, config, [world["anon"] / r.relpath for r in records],
                                  [r.modality for r in records])
    np.testing.assert_allclose(anon, ref_anon, rtol=1e-5, atol=1e-5)
    assert np.abs(anon - feats).max() > 1e-3  # the mirror really was read


def test_npz_round_trip_rows_aligned_by_path(world, tmp_path):
    result = dataset_features(world["model"], world["data"], "sysu", world["anon"], "cpu", batch_size=16)
    assert result.cache == "off" and result.cache_path is None
    out = save_features(tmp_path / "f.npz", result.features)
    loaded = load_features(out)
    feats = result.features
    for side in ("query", "gallery"):
        for form in ("raw", "anon"):
            np.testing.assert_array_equal(getattr(loaded, side)[form], getattr(feats, side)[form])
        for attr in ("pids", "camids", "paths"):
            np.testing.assert_array_equal(getattr(loaded, f"{side}_{attr}"), getattr(feats, f"{side}_{attr}"))
    # The split, from the id file read here directly: infrared queries and visible gallery of the test ids.
    test_ids = {int(t) for t in (world["data"] / "exp" / "test_id.txt").read_text().strip().split(",")}
    assert set(loaded.query_pids) == set(loaded.gallery_pids) == test_ids
    assert set(loaded.query_camids) <= {3, 6} and set(loaded.gallery_camids) <= {1, 2, 4, 5}
    for path, pid, cam in zip(loaded.query_paths, loaded.query_pids, loaded.query_camids):
        assert path.startswith(f"cam{cam}/{pid:04d}/")
    # Row i of the anon features is the anonymized twin of the image named by row i's path.
    config = world["config"]
    picks = [0, len(loaded.query_paths) - 1]
    twin = reference_features(world["model"], config, [world["anon"] / loaded.query_paths[i] for i in picks],
                              ["infrared"] * len(picks))
    np.testing.assert_allclose(loaded.query["anon"][picks], twin, rtol=1e-5, atol=1e-5)
    raw = reference_features(world["model"], config, [world["data"] / loaded.gallery_paths[-1]], ["visible"])
    np.testing.assert_allclose(loaded.gallery["raw"][-1:], raw, rtol=1e-5, atol=1e-5)


def test_eval_model_equals_features_then_eval(world, tmp_path):
    common = ["--model", str(world["ckpt"]), "--data", str(world["data"]), "--anon", str(world["anon"])]
    out = tmp_path / "f.npz"
    summary = cli_json("features", *common, "--out", str(out), "--device", "cpu", "--no-cache")
    assert summary["counts"]["query"] == len(load_features(out).query_pids) and summary["dims"] == 512
    assert summary["protocols"] == ["sysu-all", "sysu-indoor"] and summary["cache"] == "off"
    assert summary["run"]["versions"]["torch"] == torch.__version__.split("+")[0] and "seed" in summary["run"]
    evaluated = ["-p", "sysu-all", "-s", "all", "--trials", "3", "--backend", "torch", "--device", "cpu"]
    from_file = cli_json("eval", "--features", str(out), *evaluated)
    from_model = cli_json("eval", *common, *evaluated, "--no-cache")
    assert from_model["results"] == from_file["results"]
    assert from_model["source"]["model_sha256"] == summary["model_sha256"]
    assert from_model["results"]["raw2raw"]["valid_queries"] == summary["counts"]["query"]


def test_cache_hit_then_miss_when_an_image_changes(world, tmp_path):
    anon = tmp_path / "anon"
    shutil.copytree(world["anon"], anon)
    cache = tmp_path / "cache"
    args = ["features", "--model", str(world["ckpt"]), "--data", str(world["data"]), "--anon", str(anon),
            "--cache-dir", str(cache), "--device", "cpu"]
    first = cli_json(*args, "--out", str(tmp_path / "a.npz"))
    assert first["cache"] == "miss" and Path(first["cache_path"]).parent == cache
    assert (cache.stat().st_mode & 0o077) == 0  # identity features: the cache folder is the owner's only
    second = cli_json(*args, "--out", str(tmp_path / "b.npz"))
    assert second["cache"] == "hit" and second["cache_path"] == first["cache_path"]
    a, b = load_features(tmp_path / "a.npz"), load_features(tmp_path / "b.npz")
    np.testing.assert_array_equal(a.query["anon"], b.query["anon"])
    # The key is the bytes, not the timestamp: a touched file still hits.
    changed = anon / str(a.query_paths[0])
    os.utime(changed, ns=(1, 1))
    assert cli_json(*args, "--out", str(tmp_path / "c.npz"))["cache"] == "hit"
    Image.fromarray(textured_image(np.random.default_rng(1), 64, 32)).save(changed, format="JPEG")
    third = cli_json(*args, "--out", str(tmp_path / "d.npz"))
    assert third["cache"] == "miss" and third["cache_path"] != first["cache_path"]
    d = load_features(tmp_path / "d.npz")
    assert not np.allclose(d.query["anon"][0], a.query["anon"][0])
    np.testing.assert_allclose(d.query["anon"][1:], a.query["anon"][1:], rtol=1e-6, atol=1e-6)
    # eval --model shows the hit too, and a damaged entry is recomputed rather than trusted.
    hit = cli_json("eval", *args[1:], "-p", "sysu-all", "-s", "raw2anon", "--trials", "1")
    assert hit["source"]["cache"] == "hit"
    Path(third["cache_path"]).write_bytes(b"not an npz")
    again = dataset_features(world["model"], world["data"], "sysu", anon, "cpu", cache_dir=cache)
    assert again.cache == "miss" and any("unreadable" in n for n in again.split.notes)
    np.testing.assert_allclose(again.features.query["anon"], d.query["anon"], rtol=1e-6, atol=1e-6)


def test_errors_name_the_fault(world, tmp_path):
    anon = tmp_path / "anon"
    shutil.copytree(world["anon"], anon)
    split = eval_split(world["data"], "sysu")
    gone = split.gallery[3].relpath
    (anon / gone).unlink()
    with pytest.raises(PPVIError, match=gone):
        dataset_features(world["model"], world["data"], "sysu", anon, "cpu")
    model = ["--model", str(world["ckpt"]), "--data", str(world["data"])]
    proc = run_cli("eval", *model, "--anon", str(anon), "-p", "sysu-all", "-s", "anon2anon", "--no-cache")
    assert proc.returncode == 2 and gone in proc.stderr and "Traceback" not in proc.stderr

    data = tmp_path / "data"
    shutil.copytree(world["data"], data)
    bad = split.gallery[5].relpath
    (data / bad).write_bytes(b"not a jpeg")
    records = eval_split(data, "sysu").gallery
    with pytest.raises(PPVIError, match=bad) as caught:  # raised in a worker, reported as one line
        extract_features(world["model"], records, "cpu", batch_size=4, num_workers=1)
    assert "\n" not in str(caught.value) and "Traceback" not in str(caught.value)

    broken = tmp_path / "broken.pt"
    broken.write_bytes(world["ckpt"].read_bytes()[:5000])
    result = runner.invoke(app, ["features", "--model", str(broken), "--data", str(world["data"]),
                                 "--out", str(tmp_path / "x.npz"), "--no-cache"])
    assert isinstance(result.exception, PPVIError) and "broken.pt" in str(result.exception)
    assert not (tmp_path / "x.npz").exists()

    def error(*args: str) -> str:
        result = runner.invoke(app, ["eval", *args])
        assert isinstance(result.exception, PPVIError), result.output
        return str(result.exception)

    for fmt in (["--format", "sysu"], []):  # named, or detected from the layout
        message = error(*model, *fmt, "-p", "market", "-s", "raw2raw", "--no-cache")
        assert "market" in message and "sysu" in message
    assert "regdb" in error(*model, "--format", "sysu", "-p", "regdb-v2t", "-s", "raw2raw")
    assert "exactly one" in error("-p", "market", "-s", "raw2raw")
    assert "exactly one" in error(*model, "--features", str(tmp_path / "f.npz"), "-p", "sysu-all", "-s", "raw2raw")
    assert "--data" in error("--features", str(tmp_path / "f.npz"), "--data", "x", "-p", "market", "-s", "raw2raw")
    assert "--anon" in error(*model, "-p", "sysu-all", "-s", "raw2anon")
    assert "--data" in error("--model", str(world["ckpt"]), "-p", "sysu-all", "-s", "raw2raw")


def _market_tree(root: Path, names: list[str]) -> None:
    rng = np.random.default_rng(0)
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(textured_image(rng, 32, 16)).save(path)


def test_held_out_split_on_a_small_market_tree(tmp_path):
    names = [f"bounding_box_train/{pid:04d}_c{cam}s1_{frame:06d}_01.jpg"
             for pid in (2, 5, 7, 9) for cam in (1, 3) for frame in (10, 20)]
    names += ["bounding_box_train/0000_c2s1_000001_00.jpg", "bounding_box_train/-1_c1s1_000001_00.jpg",
              "bounding_box_train/0009_c2s1_000005_01.jpg"]
    _market_tree(tmp_path / "m", names)
    split = held_out_split(load_dataset(tmp_path / "m", "market1501").splits["train"], test_ids=2, distractor_pid=0)
    stem = lambda recs: [Path(r.relpath).name for r in recs]  # noqa: E731
    assert {r.pid for r in split["train"]} == {2, 5} and len(split["train"]) == 8
    assert stem(split["query"]) == ["0007_c1s1_000010_01.jpg", "0007_c3s1_000010_01.jpg",
                                    "0009_c1s1_000010_01.jpg", "0009_c2s1_000005_01.jpg", "0009_c3s1_000010_01.jpg"]
    assert stem(split["gallery"]) == ["0000_c2s1_000001_00.jpg", "0007_c1s1_000020_01.jpg", "0007_c3s1_000020_01.jpg",
                                      "0009_c1s1_000020_01.jpg", "0009_c3s1_000020_01.jpg"]
    via_reader = eval_split(tmp_path / "m", "market1501", protocol="market", test_ids=2)
    assert via_reader.query == split["query"] and via_reader.gallery == split["gallery"]
    assert via_reader.params["test_ids"] == 2 and via_reader.protocols == ["market"]
    assert len(held_out_split(split["train"] + split["query"], test_ids=99)["train"]) == 0  # all ids held out
    with pytest.raises(PPVIError, match="test-ids"):
        held_out_split(split["train"], test_ids=0)
    # With the official folders present they are used as they are.
    _market_tree(tmp_path / "m", ["query/0007_c1s1_000099_01.jpg", "bounding_box_test/0007_c2s1_000098_01.jpg"])
    official = eval_split(tmp_path / "m", "market1501")
    assert stem(official.query) == ["0007_c1s1_000099_01.jpg"] and len(official.gallery) == 1


def test_folder_split_without_cameras_keeps_matches(tmp_path, world):
    _market_tree(tmp_path / "f", [f"{pid}/{i}.png" for pid in ("10", "11", "12") for i in range(3)])
    split = eval_split(tmp_path / "f", "folder", protocol="market", test_ids=2)
    assert [r.relpath for r in split.query] == ["11/0.png", "12/0.png"]
    assert {r.camid for r in split.query} == {UNKNOWN_CAMID} and len(split.gallery) == 4
    assert any("camera" in note for note in split.notes)
    doc = cli_json("eval", "--model", str(world["ckpt"]), "--data", str(tmp_path / "f"), "--format", "folder",
                   "--test-ids", "2", "-p", "market", "-s", "raw2raw", "--no-cache", "--device", "cpu")
    assert doc["results"]["raw2raw"]["valid_queries"] == 2


def test_regdb_direction_swaps_query_and_gallery(tmp_path):
    names = [f"{kind}/{pid}/{kind[0].lower()}_{pid}_{i}.bmp" for kind in ("Visible", "Thermal")
             for pid in (3, 4) for i in range(2)]
    _market_tree(tmp_path / "r", names)
    idx = tmp_path / "r" / "idx"
    idx.mkdir()
    for split in ("train", "test"):
        for kind, folder in (("visible", "Visible"), ("thermal", "Thermal")):
            rows = [n for n in names if n.startswith(folder) and (n.split("/")[1] == "3") == (split == "train")]
            (idx / f"{split}_{kind}_2.txt").write_text("".join(f"{n} 0\n" for n in rows))
    v2t = eval_split(tmp_path / "r", "regdb", protocol="regdb-v2t", trial=2)
    t2v = eval_split(tmp_path / "r", "regdb", protocol="regdb-t2v", trial=2)
    assert [r.relpath for r in v2t.query] == ["Visible/4/v_4_0.bmp", "Visible/4/v_4_1.bmp"]
    assert v2t.query == t2v.gallery and v2t.gallery == t2v.query
    assert v2t.protocols == ["regdb-v2t"] and t2v.protocols == ["regdb-t2v"]


@pytest.mark.slow
def test_market_subset_split_counts():
    if not MARKET.is_dir():
        pytest.skip("../shared/data/market1501 is absent (real-data test)")
    records = load_dataset(MARKET, "market1501").splits["train"]
    split = held_out_split(records, test_ids=201, distractor_pid=0)
    train_ids, query_ids = {r.pid for r in split["train"]}, {r.pid for r in split["query"]}
    gallery_ids = {r.pid for r in split["gallery"]}
    assert len(train_ids) == 300 and len(query_ids) == 201 and gallery_ids <= query_ids
    assert not train_ids & query_ids and max(train_ids) < min(query_ids)
    test_records = [r for r in records if r.pid in query_ids]
    pairs = [(r.pid, r.camid) for r in split["query"]]
    assert len(pairs) == len(set(pairs)) and set(pairs) == {(r.pid, r.camid) for r in test_records}
    assert (len(split["train"]), len(split["query"]), len(split["gallery"])) == (5588, 898, 2156)
    assert len(records) == 8642
    # A query is scored when its id is in the gallery from another camera (the market junk rule); the 6
    # others are the only image of their id in their camera with no second one elsewhere (pid 1237 has
    # no gallery image at all), and the engine skips them.
    gallery_cams: dict[int, set[int]] = {}
    for r in split["gallery"]:
        gallery_cams.setdefault(r.pid, set()).add(r.camid)
    assert sum(bool(gallery_cams.get(pid, set()) - {cam}) for pid, cam in pairs) == 892
    assert eval_split(MARKET, "market1501", protocol="market").query == split["query"]
