"""`--backend auto` and the faiss install: which scorer runs where, decided with fake GPUs and fake faiss
builds (no GPU needed), and one clear line when faiss is missing."""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from conftest import tiny_features
from ppvi_cli.errors import PPVIError
from ppvi_cli.metrics import backends, scorers
from ppvi_cli.metrics.backends import choose_backend, faiss_notes
from ppvi_cli.metrics.protocols import evaluate


def _fake_faiss(gpus: int | None) -> types.ModuleType:
    """A faiss module: the GPU build (with `gpus` visible GPUs) or, for None, the CPU build."""
    module = types.ModuleType("faiss")
    if gpus is not None:
        module.StandardGpuResources = object
        module.get_num_gpus = lambda: gpus
    return module


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch sees two CUDA devices (nothing runs on them here)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.mark.parametrize("faiss, device, expected, note", [
    (_fake_faiss(2), "cuda:1", "faiss", None),  # faiss's GPU index on the chosen GPU
    (_fake_faiss(1), "cuda:1", "torch", "does not see that GPU"),  # faiss sees fewer GPUs than torch
    (_fake_faiss(None), "cuda:0", "torch", "does not see that GPU"),  # faiss-cpu on a GPU machine
    (None, "cuda:0", "torch", "faiss is not installed"),
    (_fake_faiss(None), "cpu", "faiss", None),  # faiss-cpu on the CPU
    (_fake_faiss(2), "cpu", "faiss", None),  # --device cpu is honoured even with GPU faiss
    (None, "cpu", "torch", "faiss is not installed"),
])
def test_auto_picks_faiss_gpu_then_torch_gpu_then_faiss_cpu(monkeypatch, faiss, device, expected, note):
    monkeypatch.setitem(sys.modules, "faiss", faiss)  # None: `import faiss` raises ImportError
    backend, notes = choose_backend(torch.device(device))
    assert backend == expected
    assert (note is None and notes == []) or (note is not None and note in notes[0])


def test_make_scorer_routes_auto_through_the_choice(monkeypatch, fake_cuda):
    monkeypatch.setitem(sys.modules, "faiss", _fake_faiss(None))
    scorer, notes = scorers.make_scorer("auto", "cuda:1")
    assert isinstance(scorer, scorers.TorchScorer) and scorer.device == torch.device("cuda:1")
    assert "scores computed by torch on cuda:1" in notes[0]
    with pytest.raises(PPVIError, match="unknown --backend 'gpu'"):
        scorers.make_scorer("gpu", "cpu")


def _features(seed=0, n=40, dim=8):
    rng = np.random.default_rng(seed)
    pids = rng.integers(0, 8, n)
    return rng.normal(size=(n, dim)).astype(np.float32), pids, rng.integers(0, 3, n)


def test_the_result_says_which_backend_ran_and_all_agree(monkeypatch):
    q, qp, qc = _features(1)
    g, gp, gc = _features(2, n=60)
    with_faiss = evaluate(q, g, qp, qc, gp, gc, "market", backend="auto")
    assert (with_faiss["backend"], with_faiss["device"], with_faiss["notes"]) == ("faiss-cpu", "cpu", [])
    monkeypatch.setitem(sys.modules, "faiss", None)
    without = evaluate(q, g, qp, qc, gp, gc, "market", backend="auto")
    assert without["backend"] == "torch" and "faiss is not installed" in without["notes"][0]
    for key in ("rank1", "rank5", "mAP", "mINP"):
        assert without[key] == with_faiss[key]
    with pytest.raises(PPVIError, match=r"needs faiss, which is not installed: pip install 'ppvi\[cpu\]'"):
        evaluate(q, g, qp, qc, gp, gc, "market", backend="faiss")


def test_missing_faiss_is_one_line_from_the_console_script(tmp_path):
    feats = tiny_features(tmp_path / "f.npz")
    code = ("import sys; sys.modules['faiss'] = None; from ppvi_cli.cli.app import main; "
            f"sys.argv = ['ppvi', 'eval', '--features', {str(feats)!r}, '-p', 'market', '-s', 'raw2raw', "
            "'--backend', 'faiss']; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # one line
    assert "pip install 'ppvi[cpu]'" in proc.stderr and "--backend torch" in proc.stderr


def test_two_faiss_wheels_are_reported(monkeypatch):
    installed = {"faiss-cpu": "1.15.1", "faiss-gpu": "1.15.1"}

    def version(name):
        if name not in installed:
            raise backends.metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(backends.metadata, "version", version)
    assert backends.installed_faiss_wheels() == ["faiss-cpu", "faiss-gpu"]
    assert "faiss-cpu and faiss-gpu are installed together" in faiss_notes()[0]
    installed.pop("faiss-gpu")
    assert faiss_notes() == []
