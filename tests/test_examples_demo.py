"""The shipped examples and the demo run end to end on small synthetic data."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO

GATE = REPO / "examples" / "privacy_gate.sh"


def run_gate(work: Path, **env):
    ppvi = f"{sys.executable} -m ppvi_cli"
    return subprocess.run(["bash", str(GATE), str(work)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PPVI": ppvi, **env})


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
def test_privacy_gate_passes_strong_noise_and_fails_an_identity_mosaic(tmp_path):
    passed = run_gate(tmp_path, METHOD="noise")
    assert passed.returncode == 0, passed.stderr
    assert "privacy gate passed (noise)" in passed.stdout
    # block 1 leaves the pixels as they are; only the JPEG re-encode (quality 95) moves them
    failed = run_gate(tmp_path, METHOD="mosaic", PARAMS="--block 1")
    assert failed.returncode == 1 and "privacy gate failed" in failed.stderr
    privacy = json.loads((tmp_path / "privacy.json").read_text())
    assert privacy["mean"]["visible"]["ssim"] > 0.95 and privacy["mean"]["infrared"]["psnr"] > 35


def test_library_example(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "examples" / "library_api.py"), str(tmp_path)],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["written"] == 6 * 6 and set(doc["privacy"]) == {"visible", "infrared"}
    assert all(0 <= v["ssim"] < 1 for v in doc["privacy"].values())


def test_demo_writes_tables_and_a_decodable_grid(tmp_path):
    from ppvi_cli.demo import DemoConfig, run_demo

    config = DemoConfig(ids=4, images_per_camera=1, height=64, width=32, pixelfade={"steps": 12}, trials=2,
                        attack_epochs=1, attack_ngf=4)
    results = run_demo(tmp_path / "demo", config, device="cpu")
    protected = ("mosaic", "blur", "noise", "pixelfade", "securereid", "ppa")
    assert set(results["methods"]) == {"raw", *protected}
    for name in protected:
        assert set(results["methods"][name]["eval"]) == {"raw2raw", "raw2anon", "anon2raw", "anon2anon"}
        attack, worst = results["methods"][name]["attack"], results["methods"][name]["attack_worst"]
        assert list(attack) == ["l1", "gan", "identity"] if name == "pixelfade" else ["l1", "gan"]
        assert all(set(means) == {"visible", "infrared"} for means in attack.values())
        assert worst["infrared"]["ssim"] == max(means["infrared"]["ssim"] for means in attack.values())
    for name in ("securereid", "ppa"):  # the shipped generators ran, per modality
        assert results["methods"][name]["params"]["checkpoint"].endswith(f"demo_{name}.pt")
        assert all(0 <= v["ssim"] < 0.9 for v in results["methods"][name]["privacy"].values())
    recovery = results["methods"]["securereid"]["recovery"]  # the authorized reversal undoes part of it
    assert recovery["images"] == 4 * 6
    assert recovery["ssim"] > max(v["ssim"] for v in results["methods"]["securereid"]["privacy"].values())
    assert "recovery" not in results["methods"]["ppa"]
    html = Path(results["report"]).read_text(encoding="utf-8")
    assert "pixelfade" in html and "data:image/png;base64," in html
    for name in ("mosaic", "blur", "noise"):
        assert set(results["methods"][name]["privacy"]) == {"visible", "infrared"}
    # the papers' ordering: noise is far more chaotic (lower AD) than blur and mosaic
    chaos = {k: v["chaos"]["visible"] for k, v in results["methods"].items()}
    assert chaos["noise"] < chaos["blur"] and chaos["noise"] < chaos["mosaic"]
    with Image.open(results["grid"]) as grid:
        grid.load()
        assert grid.size[0] > 4 * 16 and grid.size[1] > 6 * 32
    saved = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert saved["images"] == 4 * 6
    again = run_demo(tmp_path / "demo", config, device="cpu")
    assert again["methods"]["noise"]["privacy"] == results["methods"]["noise"]["privacy"]
