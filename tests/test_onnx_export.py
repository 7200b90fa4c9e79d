"""`ppvi export --onnx`: the authorized ReID model as ONNX, equal to PyTorch's features under onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from conftest import run_cli
from ppvi_cli.data.readers import load_dataset
from ppvi_cli.data.synth import SynthConfig, synthesize
from ppvi_cli.data.torch_dataset import RecordImages
from ppvi_cli.errors import PPVIError
from ppvi_cli.models.checkpoint import load_checkpoint, save_checkpoint
from ppvi_cli.models.config import ModelConfig
from ppvi_cli.models.extract import extract_features
from ppvi_cli.models.reid import build_model

onnxruntime = pytest.importorskip("onnxruntime")  # in ppvi[test]; skipped only outside `make test`

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A dual-stream ResNet-18 checkpoint with non-trivial BatchNorm statistics, exported once."""
    root = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    config = ModelConfig(num_classes=6, backbone="resnet18", dual_stream=True, input_size=(64, 32))
    model = build_model(config).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():  # running statistics away from (0, 1), as after training
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.running_mean.uniform_(-0.2, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
    checkpoint = root / "reid.pt"
    save_checkpoint(checkpoint, model, config, {})
    proc = run_cli("--json", "export", "--onnx", "--checkpoint", str(checkpoint), "--out", str(root / "reid.onnx"))
    assert proc.returncode == 0, proc.stderr
    return root, checkpoint, json.loads(proc.stdout)


def test_export_reports_its_own_check(exported):
    root, _, summary = exported
    check = summary["check"]
    assert summary["inputs"] == ["pixels", "modality"] and summary["feat_dim"] == 512
    assert check["max_abs_feature"] > 0.1  # features of real magnitude, so the difference means something
    assert 0 <= check["max_abs_diff"] <= 1e-4 * check["max_abs_feature"]
    assert (root / "reid.onnx").stat().st_size == summary["bytes"]


def test_onnxruntime_matches_pytorch_on_decoded_images(exported, tmp_path):
    """Independent of the export's check: real images through ppvi's own extraction vs the ONNX file,
    a batch size the export never saw, visible and infrared mixed."""
    root, checkpoint, summary = exported
    data = tmp_path / "synth"
    synthesize(data, SynthConfig(ids=4, images_per_camera=1, height=64, width=32, seed=2))
    everything = load_dataset(data).records()
    records = [r for r in everything if r.modality == "visible"][:4] + [r for r in everything
                                                                         if r.modality == "infrared"][:3]
    model, config, meta = load_checkpoint(checkpoint)
    expected = extract_features(model, records, "cpu", batch_size=3)
    items = [RecordImages(records, config.input_size)[i] for i in range(len(records))]
    pixels = torch.stack([item[0] for item in items]).numpy()
    modality = np.array([item[2] for item in items], np.int64)
    assert set(modality) == {0, 1}
    session = onnxruntime.InferenceSession(str(root / "reid.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["feature"], {"pixels": pixels, "modality": modality})[0]
    diff = np.abs(got - expected).max()
    print(f"onnxruntime vs PyTorch on {len(records)} decoded images: max abs diff {diff:.3g}, "
          f"max |feature| {np.abs(expected).max():.3g}")
    assert got.shape == expected.shape and diff <= 1e-4 * np.abs(expected).max()
    props = session.get_modelmeta().custom_metadata_map
    assert props["source_sha256"] == meta["sha256"] and props["input_size"] == "64x32"


def test_export_refusals_are_one_line(exported, tmp_path, monkeypatch):
    root, checkpoint, _ = exported
    half = run_cli("export", "--onnx", "--half", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "a.onnx"))
    assert half.returncode == 2 and "--half applies to generator exports" in half.stderr
    generator = run_cli("export", "--onnx", "--checkpoint", "weights/demo_securereid.pt",
                        "--out", str(tmp_path / "b.onnx"))
    assert generator.returncode == 2 and "not a ppvi ReID checkpoint" in generator.stderr
    assert not (tmp_path / "b.onnx").exists()
    import importlib.util

    from ppvi_cli.models import onnx_export

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(PPVIError, match=r"needs onnxruntime, not installed: pip install 'ppvi\[onnx\]'"):
        onnx_export.export_onnx(checkpoint, tmp_path / "c.onnx")
