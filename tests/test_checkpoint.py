"""ReID checkpoints: bit-exact round trip, and one-line PPVIErrors for every kind of bad file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from ppvi_cli import __version__
from ppvi_cli.errors import PPVIError
from ppvi_cli.models.checkpoint import load_checkpoint, save_checkpoint, state_dict_sha256
from ppvi_cli.models.config import ModelConfig
from ppvi_cli.models.reid import build_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A dual-stream MobileNetV2 with non-default BN statistics, saved once."""
    torch.manual_seed(0)
    config = ModelConfig(num_classes=5, backbone="mobilenetv2", dual_stream=True, input_size=(64, 32))
    model = build_model(config).train()
    with torch.no_grad():  # move the running statistics away from their initial values
        model(torch.randn(6, 3, 64, 32), torch.tensor([0, 1, 0, 1, 0, 1]))
    model.eval()
    path = tmp_path_factory.mktemp("ckpt") / "reid.pt"
    args = {"epochs": 3, "lr": 3.5e-4, "data": Path("/data/sysu"), "ids": (1, 2)}
    checksum = save_checkpoint(path, model, config, args, extra={"epoch": 3, "rank1": 0.5})
    return model, config, path, checksum


def _rewrite(src: Path, dst: Path, edit) -> Path:
    payload = torch.load(src, map_location="cpu", weights_only=True)
    edit(payload)
    torch.save(payload, dst)
    return dst


def test_round_trip_is_bit_exact(trained):
    model, config, path, checksum = trained
    loaded, loaded_config, meta = load_checkpoint(path)
    assert loaded_config == config and not loaded.training
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)
    x, modality = torch.randn(3, 3, 64, 32), torch.tensor([1, 0, 1])
    with torch.no_grad():
        assert torch.equal(model(x, modality), loaded(x, modality))
    assert meta["sha256"] == checksum == state_dict_sha256(original)
    assert meta["train_args"] == {"epochs": 3, "lr": 3.5e-4, "data": "/data/sysu", "ids": (1, 2)}
    assert meta["extra"] == {"epoch": 3, "rank1": 0.5}
    assert meta["ppvi_version"] == __version__ and meta["format_version"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["reid.pt"]  # no temp file left behind


def test_checksum_is_a_sha256_over_name_dtype_shape_and_bytes():
    state = {"b": torch.arange(3, dtype=torch.int64), "a": torch.tensor(1.5)}
    h = hashlib.sha256()
    h.update(b"a|torch.float32|()|" + torch.tensor(1.5).numpy().tobytes())
    h.update(b"b|torch.int64|(3,)|" + torch.arange(3).numpy().tobytes())
    assert state_dict_sha256(state) == h.hexdigest()
    assert state_dict_sha256({"a": torch.zeros(2, 3).t()}) == state_dict_sha256({"a": torch.zeros(3, 2)})
    assert state_dict_sha256({"a": torch.zeros(6)}) != state_dict_sha256({"a": torch.zeros(2, 3)})


def test_missing_file(tmp_path):
    with pytest.raises(PPVIError, match=r"absent\.pt: no such file"):
        load_checkpoint(tmp_path / "absent.pt")


def test_truncated_file(trained, tmp_path):
    data = trained[2].read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(PPVIError, match="cut.pt: cannot be read") as info:
        load_checkpoint(cut)
    assert "\n" not in str(info.value)


def test_corrupted_bytes(trained, tmp_path):
    data = bytearray(trained[2].read_bytes())
    for offset in range(0, len(data), 997):  # damage the zip directory and the tensor data alike
        data[offset] ^= 0xFF
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(PPVIError, match="bad.pt"):
        load_checkpoint(bad)


def test_flipped_weight_byte_fails_the_checksum(trained, tmp_path):
    """A change inside a tensor keeps the container readable; only the checksum notices it."""
    data = bytearray(trained[2].read_bytes())
    needle = trained[0].head.classifier.weight.detach().numpy().tobytes()[:64]
    at = bytes(data).find(needle)
    assert at > 0
    data[at + 3] ^= 0x01
    edited = tmp_path / "edited.pt"
    edited.write_bytes(bytes(data))
    with pytest.raises(PPVIError, match="edited.pt: weights do not match their SHA-256"):
        load_checkpoint(edited)


def test_edited_tensor_fails_the_checksum(trained, tmp_path):
    def edit(payload):
        payload["state_dict"]["head.bn.weight"][0] += 1e-3

    path = _rewrite(trained[2], tmp_path / "tensor.pt", edit)
    with pytest.raises(PPVIError, match="SHA-256"):
        load_checkpoint(path)


def test_config_that_does_not_fit_the_weights(trained, tmp_path):
    def more_classes(payload):
        payload["model_config"]["num_classes"] = 9

    with pytest.raises(PPVIError, match=r"do not fit .*shape head\.classifier\.weight \(5, 1280\) vs \(9, 1280\)"):
        load_checkpoint(_rewrite(trained[2], tmp_path / "classes.pt", more_classes))

    def single_stream(payload):
        payload["model_config"]["dual_stream"] = False

    with pytest.raises(PPVIError, match=r"unexpected stems\.1\."):
        load_checkpoint(_rewrite(trained[2], tmp_path / "single.pt", single_stream))

    def other_backbone(payload):
        payload["model_config"].update(backbone="resnet18")

    with pytest.raises(PPVIError, match="do not fit its resnet18 config: missing"):
        load_checkpoint(_rewrite(trained[2], tmp_path / "backbone.pt", other_backbone))

    def unknown_field(payload):
        payload["model_config"]["heads"] = 2

    with pytest.raises(PPVIError, match=r"unknown fields \['heads'\]"):
        load_checkpoint(_rewrite(trained[2], tmp_path / "field.pt", unknown_field))


def test_not_a_ppvi_checkpoint(tmp_path):
    raw = tmp_path / "raw_state_dict.pt"
    torch.save(build_model(ModelConfig(num_classes=2, backbone="mobilenetv2")).state_dict(), raw)
    with pytest.raises(PPVIError, match="not a ppvi ReID checkpoint"):
        load_checkpoint(raw)


def test_non_plain_training_arguments_are_refused(tmp_path):
    config = ModelConfig(num_classes=2, backbone="mobilenetv2")
    with pytest.raises(TypeError, match=r"train_args\.optimizer"):
        save_checkpoint(tmp_path / "x.pt", build_model(config), config, {"optimizer": object()})
    assert list(tmp_path.iterdir()) == []
