"""Dataset-level privacy and chaos reports, their JSON shapes and gates."""

import json
import shutil

import numpy as np
import pytest
from scipy import stats
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from conftest import run_cli
from ppvi_cli.anonymize.methods import build_method
from ppvi_cli.anonymize.runner import anonymize_dataset
from ppvi_cli.data.imageio import list_images, read_image
from ppvi_cli.errors import PPVIError
from ppvi_cli.measure import chaos_report, privacy_report


@pytest.fixture
def blurred(image_tree, tmp_path):
    anonymize_dataset(build_method("blur", radius=3), image_tree, tmp_path / "blur")
    return tmp_path / "blur"


def test_privacy_report_matches_skimage_per_image(image_tree, blurred):
    report = privacy_report(image_tree, blurred)
    assert [r["path"] for r in report["images"]] == list_images(image_tree)
    for row in report["images"]:
        raw, anon = read_image(image_tree / row["path"]), read_image(blurred / row["path"])
        colour = {"channel_axis": -1} if raw.ndim == 3 else {}
        assert row["ssim"] == pytest.approx(structural_similarity(raw, anon, data_range=255, **colour), abs=1e-4)
        assert row["psnr"] == pytest.approx(peak_signal_noise_ratio(raw, anon, data_range=255), abs=1e-4)
    assert report["mean"]["visible"]["ssim"] == pytest.approx(np.mean([r["ssim"] for r in report["images"]]))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # scipy 1.17 asks for method=; the statistic is unchanged
def test_chaos_report_matches_scipy_per_image(image_tree):
    report = chaos_report(image_tree)
    for row in report["images"]:
        pixels = read_image(image_tree / row["path"]).ravel().astype(float)
        assert row["ad"] == pytest.approx(stats.anderson(pixels, "norm").statistic, rel=1e-7)


def test_missing_twin_is_an_error_naming_it(image_tree, blurred):
    (blurred / "a" / "0002.png").unlink()
    with pytest.raises(PPVIError, match=r"lacks 1 of 6 images .*a/0002.png"):
        privacy_report(image_tree, blurred)


def test_privacy_cli_json_gate_and_null_for_identical(image_tree, blurred, tmp_path):
    ok = run_cli("--json", "privacy", "--raw", str(image_tree), "--anon", str(blurred), "--max-ssim", "1.0")
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert set(doc["images"][0]) == {"path", "modality", "ssim", "psnr"}
    assert set(doc["mean"]["visible"]) == {"ssim", "psnr"} and doc["gate"]["passed"] is True

    strict = run_cli("--json", "privacy", "--raw", str(image_tree), "--anon", str(blurred), "--max-ssim", "0.01")
    assert strict.returncode == 1 and "mean ssim" in strict.stderr
    assert json.loads(strict.stdout)["gate"]["passed"] is False

    copy = tmp_path / "copy"
    shutil.copytree(image_tree, copy)
    same = run_cli("--json", "privacy", "--raw", str(image_tree), "--anon", str(copy))
    doc = json.loads(same.stdout)  # strict JSON: infinite PSNR is null
    assert doc["mean"]["visible"] == {"ssim": 1.0, "psnr": None}


def test_chaos_cli_json_and_gate(image_tree):
    ok = run_cli("--json", "chaos", str(image_tree))
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert set(doc["images"][0]) == {"path", "modality", "ad"} and set(doc["mean"]) == {"visible"}
    gate = run_cli("chaos", str(image_tree), "--max-ad", "0.001")
    assert gate.returncode == 1 and "mean ad" in gate.stderr
    missing = run_cli("chaos", str(image_tree / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
