"""`torchrun` past one process: anonymize and features as ranks of one job, byte-identical to one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from ppvi_cli.data.imageio import list_images
from ppvi_cli.data.synth import SynthConfig, synthesize
from ppvi_cli.distributed import World, torchrun_world
from ppvi_cli.errors import PPVIError
from ppvi_cli.models.checkpoint import save_checkpoint
from ppvi_cli.models.config import ModelConfig
from ppvi_cli.models.reid import build_model


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node N -m ppvi_cli ...` on CPU, one thread per rank."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                           str(nproc), "-m", "ppvi_cli", *args], capture_output=True, text=True, env=env, timeout=300)


def single(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "ppvi_cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("torchrun") / "synth"
    synthesize(root, SynthConfig(ids=6, images_per_camera=1, height=64, width=32, seed=3))
    return root


def images(root: Path) -> dict[str, bytes]:
    return {rel: (root / rel).read_bytes() for rel in list_images(root)}


def test_anonymize_under_torchrun_equals_one_process_and_merges_one_manifest(synth, tmp_path):
    job = torchrun("--json", "--quiet", "anonymize", "-m", "noise", "--seed", "5", "-i", str(synth), "-o",
                   str(tmp_path / "job"))
    assert job.returncode == 0, job.stderr[-3000:]
    one = single("--quiet", "anonymize", "-m", "noise", "--seed", "5", "-i", str(synth), "-o", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    assert images(tmp_path / "job") == images(tmp_path / "one")
    report = json.loads(job.stdout)  # one report for the job (rank 0), counting every rank's files
    assert report["written"] == len(list_images(synth)) and report["shard"] == "torchrun: 2 ranks"
    merged = json.loads((tmp_path / "job" / "manifest.json").read_text())
    assert merged["complete"] is True and merged["counts"]["written"] == len(list_images(synth))
    assert set(merged["files"]) == set(list_images(synth))
    for i in range(2):
        assert (tmp_path / "job" / f"manifest.shard-{i}-of-2.json").is_file()
    again = torchrun("--json", "--quiet", "anonymize", "-m", "noise", "--seed", "5", "-i", str(synth), "-o",
                     str(tmp_path / "job"))
    assert again.returncode == 0 and json.loads(again.stdout)["skipped"] == len(list_images(synth))
    both = torchrun("anonymize", "-m", "noise", "--shard", "0/2", "-i", str(synth), "-o", str(tmp_path / "x"))
    assert both.returncode != 0 and "drop --shard" in both.stderr


def test_features_under_torchrun_equal_one_process(synth, tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(num_classes=4, backbone="resnet18", dual_stream=True, non_local=False, input_size=(64, 32))
    model = build_model(config).eval()
    ckpt = tmp_path / "reid.pt"
    save_checkpoint(ckpt, model, config, {"note": "random init, test only"})
    common = ["features", "--model", str(ckpt), "--data", str(synth), "--batch-size", "4", "--no-cache", "--device",
              "cpu"]
    job = torchrun("--quiet", *common, "--out", str(tmp_path / "job.npz"))
    assert job.returncode == 0, job.stderr[-3000:]
    one = single("--quiet", *common, "--out", str(tmp_path / "one.npz"))
    assert one.returncode == 0, one.stderr
    with np.load(tmp_path / "job.npz") as a, np.load(tmp_path / "one.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            assert np.array_equal(a[key], b[key]), key


def test_torchrun_world(monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert torchrun_world() is None
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert torchrun_world() == World(3, 4, 1)
    monkeypatch.setenv("RANK", "7")
    with pytest.raises(PPVIError, match="inconsistent"):
        torchrun_world()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(PPVIError, match="start ppvi with torchrun"):
        torchrun_world()
