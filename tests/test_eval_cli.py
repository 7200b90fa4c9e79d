"""`ppvi eval` from a features file: JSON shape, settings, outputs, and errors that name the key."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import run_cli, textured_image
from ppvi_cli.cli.app import app
from ppvi_cli.errors import PPVIError
from ppvi_cli.evaluation.store import load_features
from ppvi_cli.metrics.protocols import evaluate

runner = CliRunner()


def features_file(tmp_path, anon=True, paths=True, sysu=False, **override):
    rng = np.random.default_rng(0)
    nq, ng, dim = 12, 40, 16
    centers = rng.standard_normal((6, dim))
    qp, gp = rng.integers(1, 6, nq), rng.integers(1, 6, ng)
    qc = rng.choice([3, 6], nq) if sysu else rng.integers(1, 4, nq)
    gc = rng.choice([1, 2, 4, 5], ng) if sysu else rng.integers(1, 4, ng)
    arrays = {"query_raw": (centers[qp] + rng.standard_normal((nq, dim))).astype(np.float32),
              "gallery_raw": (centers[gp] + rng.standard_normal((ng, dim))).astype(np.float32),
              "query_pids": qp, "query_camids": qc, "gallery_pids": gp, "gallery_camids": gc}
    if anon:
        arrays["query_anon"] = rng.standard_normal((nq, dim)).astype(np.float32)
        arrays["gallery_anon"] = rng.standard_normal((ng, dim)).astype(np.float32)
    if paths:
        arrays["query_paths"] = np.array([f"query/{i:03d}.png" for i in range(nq)])
        arrays["gallery_paths"] = np.array([f"gallery/{i:03d}.png" for i in range(ng)])
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = tmp_path / "feats.npz"
    np.savez(path, **arrays)
    return path, arrays


def test_json_all_settings_match_library(tmp_path):
    path, a = features_file(tmp_path)
    result = runner.invoke(app, ["--json", "eval", "--features", str(path), "--protocol", "market",
                                 "--setting", "all", "--backend", "torch", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["protocol"] == "market" and list(doc["results"]) == ["raw2raw", "raw2anon", "anon2raw", "anon2anon"]
    for setting, (qk, gk) in {"raw2raw": ("query_raw", "gallery_raw"), "anon2raw": ("query_anon", "gallery_raw"),
                              "raw2anon": ("query_raw", "gallery_anon")}.items():
        res = doc["results"][setting]
        assert set(res) >= {"rank1", "rank5", "rank10", "rank20", "mAP", "mINP", "std", "trials", "valid_queries"}
        lib = evaluate(a[qk], a[gk], a["query_pids"], a["query_camids"], a["gallery_pids"], a["gallery_camids"])
        assert res["mAP"] == pytest.approx(lib["mAP"], abs=1e-9) and res["trials"] == 1
        assert 0 < res["mINP"] <= 100 and 0 < res["mAP"] <= 100
    assert doc["results"]["raw2raw"]["mAP"] > doc["results"]["anon2raw"]["mAP"]  # anon features are noise here


def test_sysu_trials_in_json(tmp_path):
    path, _ = features_file(tmp_path, sysu=True)
    result = runner.invoke(app, ["--json", "eval", "--features", str(path), "-p", "sysu-indoor", "-s", "raw2raw",
                                 "--trials", "3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)["results"]["raw2raw"]
    assert res["trials"] == 3 and len(res["valid_queries_per_trial"]) == 3 and set(res["std"]) >= {"mAP", "rank1"}


def test_per_query_ranked_and_figure(tmp_path):
    path, a = features_file(tmp_path)
    root = tmp_path / "images"
    rng = np.random.default_rng(1)
    for rel in list(a["query_paths"]) + list(a["gallery_paths"])[:-5]:  # the last 5 gallery images are missing
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(textured_image(rng)).save(root / rel)
    (root / a["gallery_paths"][0]).write_bytes(b"not an image")
    out = tmp_path / "out"
    result = runner.invoke(app, ["--quiet", "eval", "--features", str(path), "-p", "market", "-s", "raw2raw",
                                 "--device", "cpu", "--per-query", str(out / "pq.csv"), "--ranked", str(out / "r.json"),
                                 "--figure", str(out / "fig.png"), "--topk", "5", "--image-root", str(root)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(out / "pq.csv")))
    assert len(rows) == 12 and rows[0]["path"] == "query/000.png" and rows[0]["setting"] == "raw2raw"
    lib = evaluate(a["query_raw"], a["gallery_raw"], a["query_pids"], a["query_camids"], a["gallery_pids"],
                   a["gallery_camids"], per_query=True)
    for row, ref in zip(rows, lib["per_query"]):
        assert (row["AP"] == "") == (ref["AP"] is None)
        if ref["AP"] is not None:
            assert float(row["AP"]) == pytest.approx(ref["AP"])
    doc = json.load(open(out / "r.json"))
    first = doc["settings"]["raw2raw"][0]
    assert first["path"] == "query/000.png" and len(first["top"]) == 5
    for item in first["top"]:
        assert item["match"] == (item["pid"] == first["pid"])
        assert not (item["pid"] == first["pid"] and item["camid"] == first["camid"])  # junk hidden
    assert [t["score"] for t in first["top"]] == sorted((t["score"] for t in first["top"]), reverse=True)
    with Image.open(out / "fig.png") as im:
        im.load()
        assert im.size[0] > 5 * 64 and im.size[1] > 128
        pixels = np.asarray(im.convert("RGB"))
    assert ((pixels == (20, 160, 40)).all(-1)).any()  # green frames drawn


def test_missing_key_and_mismatch_name_the_key(tmp_path):
    path, _ = features_file(tmp_path, gallery_camids=None)
    with pytest.raises(PPVIError, match="'gallery_camids'"):
        load_features(path)
    result = runner.invoke(app, ["eval", "--features", str(path), "-p", "market", "-s", "raw2raw"])
    assert isinstance(result.exception, PPVIError) and "gallery_camids" in str(result.exception)
    proc = run_cli("eval", "--features", str(path), "-p", "market", "-s", "raw2raw")
    assert proc.returncode == 2 and "gallery_camids" in proc.stderr

    (tmp_path / "text.npz").write_text("not numpy")
    with pytest.raises(PPVIError, match="not a readable .npz"):
        load_features(tmp_path / "text.npz")

    path, _ = features_file(tmp_path, query_pids=np.arange(5))
    with pytest.raises(PPVIError, match="'query_pids' has 5 rows but query_raw has 12"):
        load_features(path)


def test_setting_without_anon_arrays_exits_2(tmp_path):
    path, _ = features_file(tmp_path, anon=False)
    proc = run_cli("eval", "--features", str(path), "-p", "market", "-s", "all")
    assert proc.returncode == 2 and "needs gallery_anon" in proc.stderr
    proc = run_cli("eval", "--features", str(path), "-p", "regdb-v2t", "-s", "raw2raw", "--trials", "3")
    assert proc.returncode == 2 and "--trials does not apply" in proc.stderr
    proc = run_cli("eval", "--features", str(path), "-p", "sysu", "-s", "raw2raw")
    assert proc.returncode == 2 and "'sysu' is not one of" in proc.stderr and "'sysu-all'" in proc.stderr
