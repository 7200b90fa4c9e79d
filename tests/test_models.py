"""ReID models: AGW shapes, non-local blocks, dual-stream routing, pretrained loading (offline)."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from torch import nn

from ppvi_cli.errors import PPVIError
from ppvi_cli.models.agw import GeneralizedMeanPooling, NonLocal
from ppvi_cli.models.backbones import BACKBONES
from ppvi_cli.models.config import ModelConfig
from ppvi_cli.models.dual_stream import modality_tensor
from ppvi_cli.models.pretrained import load_pretrained
from ppvi_cli.models.reid import build_model

SHARED_WEIGHTS = Path(__file__).resolve().parents[1].parent / "shared" / "weights"
MOBILENET_FEATURES = SHARED_WEIGHTS / "mobilenetv2_imagenet_features_torchvision.pt"


def _images(batch: int = 4, height: int = 64, width: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def test_agw_resnet50_shapes_last_stride_and_non_local_blocks():
    torch.manual_seed(0)
    model = build_model(ModelConfig(num_classes=7)).eval()
    blocks = [m for m in model.modules() if isinstance(m, NonLocal)]
    assert len(model.trunk.nl2) == 2 and len(model.trunk.nl3) == 3 and len(blocks) == 5
    assert [b.out[0].out_channels for b in blocks] == [512, 512, 1024, 1024, 1024]
    assert isinstance(model.pool, GeneralizedMeanPooling) and model.pool.p == 3.0
    assert model.config.feat_dim == 2048
    x = _images(batch=2, height=128, width=64)
    with torch.no_grad():
        fmap = model.feature_map(x)
        feat = model(x)
    assert fmap.shape == (2, 2048, 8, 4)  # stride 16: last stride 1 (stride 2 would give 4x2)
    assert feat.shape == (2, 2048)
    assert not model.head.bn.bias.requires_grad and model.head.classifier.bias is None


def test_last_stride_two_halves_the_map_and_resnet18_non_local_fits_its_stages():
    model = build_model(ModelConfig(num_classes=3, backbone="resnet18", last_stride=2)).eval()
    assert (len(model.trunk.nl2), len(model.trunk.nl3)) == (2, 2)  # layer3 of ResNet-18 has 2 blocks
    with torch.no_grad():
        assert model.feature_map(_images()).shape == (4, 512, 2, 1)
    plain = build_model(ModelConfig(num_classes=3, backbone="resnet18", non_local=False))
    assert not any(isinstance(m, NonLocal) for m in plain.modules())


@pytest.mark.parametrize("backbone,dim", [("resnet18", 512), ("mobilenetv2", 1280)])
def test_train_and_eval_outputs(backbone, dim):
    torch.manual_seed(0)
    model = build_model(ModelConfig(num_classes=5, backbone=backbone, dual_stream=True))
    x, modality = _images(), torch.tensor([0, 1, 1, 0])
    model.train()
    global_feat, logits = model(x, modality)
    assert global_feat.shape == (4, dim) and logits.shape == (4, 5)
    (logits.sum() + global_feat.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        feat = model(x, modality)
        assert feat.shape == (4, dim)
        torch.testing.assert_close(model.extract(x, modality), feat)
        # eval feature = BN(pooled) with the running statistics
        pooled, _ = model.features(x, modality)
        bn = model.head.bn
        expected = (pooled - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        torch.testing.assert_close(feat, expected)


def test_non_local_block_starts_as_identity_and_mixes_positions_once_trained():
    block = NonLocal(8).eval()
    x = torch.randn(2, 8, 4, 3)
    torch.testing.assert_close(block(x), x)
    nn.init.ones_(block.out[1].weight)
    y = block(x)
    x2 = x.clone()
    x2[:, :, 0, 0] += 5.0  # a change at one position reaches every other position
    assert not torch.allclose(block(x2)[:, :, 3, 2], y[:, :, 3, 2])


def test_gem_pooling_matches_formula_and_limits():
    x = torch.rand(2, 3, 4, 5) + 0.1
    expected = x.pow(3).mean(dim=(2, 3)).pow(1 / 3)
    torch.testing.assert_close(GeneralizedMeanPooling(3.0)(x), expected)
    torch.testing.assert_close(GeneralizedMeanPooling(1.0)(x), x.mean(dim=(2, 3)))
    assert torch.allclose(GeneralizedMeanPooling(200.0)(x), x.amax(dim=(2, 3)), rtol=0.02)


def test_dual_stream_has_separate_shallow_and_shared_deep_layers():
    model = build_model(ModelConfig(num_classes=4, backbone="resnet18", dual_stream=True))
    assert len(model.stems) == 2
    vis, ir = model.stems[0], model.stems[1]
    assert vis.conv1 is not ir.conv1 and vis.layer1 is not ir.layer1
    assert not {id(p) for p in vis.parameters()} & {id(p) for p in ir.parameters()}
    assert not torch.equal(vis.conv1.weight, ir.conv1.weight)
    keys = model.state_dict().keys()
    assert "stems.0.layer1.0.conv1.weight" in keys and "stems.1.layer1.0.conv1.weight" in keys
    assert not any(k.startswith("stems.1.layer2") for k in keys) and "trunk.layer2.0.conv1.weight" in keys
    single = build_model(ModelConfig(num_classes=4, backbone="resnet18"))
    assert len(single.stems) == 1


def test_infrared_gradients_reach_only_the_infrared_stem_and_the_shared_trunk():
    model = build_model(ModelConfig(num_classes=4, backbone="mobilenetv2", dual_stream=True)).train()
    global_feat, logits = model(_images(), torch.ones(4, dtype=torch.long))
    (global_feat.sum() + logits.sum()).backward()
    assert all(p.grad is None or not p.grad.any() for p in model.stems[0].parameters())
    assert all(p.grad is not None and p.grad.any() for p in model.stems[1].parameters() if p.dim() > 1)
    assert model.trunk[0].conv[0][0].weight.grad.any()


def test_eval_features_are_per_sample_and_depend_on_modality():
    torch.manual_seed(1)
    model = build_model(ModelConfig(num_classes=4, backbone="resnet18", dual_stream=True)).eval()
    x = _images(batch=4, seed=2)
    modality = modality_tensor(["visible", "infrared", "visible", "infrared"])
    with torch.no_grad():
        batch = model(x, modality)
        alone = torch.cat([model(x[i:i + 1], modality[i:i + 1]) for i in range(4)])
        torch.testing.assert_close(batch, alone, rtol=1e-4, atol=1e-5)
        other_company = model(torch.cat([x[:1], _images(batch=3, seed=9)]), torch.tensor([0, 1, 1, 1]))
        torch.testing.assert_close(other_company[0], batch[0], rtol=1e-4, atol=1e-5)
        as_visible = model(x, torch.zeros(4, dtype=torch.long))
        torch.testing.assert_close(as_visible[0::2], batch[0::2], rtol=1e-4, atol=1e-5)
        assert (as_visible[1::2] - batch[1::2]).abs().max() > 1e-3
        torch.testing.assert_close(model(x), as_visible)  # None means all visible


def test_bad_modality_tensor_is_refused():
    model = build_model(ModelConfig(num_classes=2, backbone="mobilenetv2", dual_stream=True)).eval()
    with pytest.raises(ValueError, match="modality values"):
        model(_images(batch=2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="shape"):
        model(_images(batch=2), torch.tensor([0, 1, 1]))


def test_config_validation_names_the_choices():
    with pytest.raises(PPVIError, match="did you mean 'resnet50'"):
        ModelConfig(num_classes=2, backbone="resnet5")
    with pytest.raises(PPVIError, match="non-local"):
        ModelConfig(num_classes=2, backbone="mobilenetv2", non_local=True)
    with pytest.raises(PPVIError, match="pooling"):
        ModelConfig(num_classes=2, pooling="max")
    with pytest.raises(PPVIError, match="num_classes"):
        ModelConfig(num_classes=0)
    assert ModelConfig(num_classes=2, backbone="mobilenetv2").non_local is False
    assert ModelConfig(num_classes=2).non_local is True
    assert set(BACKBONES.names()) >= {"resnet50", "resnet18", "mobilenetv2"}
    cfg = ModelConfig(num_classes=2, input_size=[288, 144])
    assert ModelConfig(**cfg.to_dict()) == cfg and cfg.input_size == (288, 144)


def test_pretrained_mobilenet_file_loads_into_both_streams():
    if not MOBILENET_FEATURES.is_file():
        pytest.skip("../shared/weights/mobilenetv2_imagenet_features_torchvision.pt is absent")
    state = torch.load(MOBILENET_FEATURES, map_location="cpu", weights_only=True)
    model = build_model(ModelConfig(num_classes=3, backbone="mobilenetv2", dual_stream=True))
    report = load_pretrained(model, MOBILENET_FEATURES)
    own = model.state_dict()
    for key, tensor in state.items():
        index = int(key.split(".")[0])
        targets = [f"stems.0.{key}", f"stems.1.{key}"] if index < 4 else [f"trunk.{key}"]
        for target in targets:
            assert torch.equal(own[target], tensor), target
    assert report.unexpected == [] and report.missing == []
    assert report.loaded == len(own) - sum(k.startswith("head.") for k in own)


def test_pretrained_prefixed_resnet_state_dict_and_report(tmp_path):
    import torchvision

    source = torchvision.models.resnet18(weights=None)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    path = tmp_path / "r18.pt"
    torch.save(state, path)
    model = build_model(ModelConfig(num_classes=3, backbone="resnet18", dual_stream=True))
    report = load_pretrained(model, str(path))
    torch.testing.assert_close(model.stems[1].conv1.weight, source.conv1.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.trunk.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var, rtol=0, atol=0)
    assert sorted(report.unexpected) == ["module.fc.bias", "module.fc.weight"]
    assert report.missing and all(".nl" in k or k.startswith("trunk.nl") for k in report.missing)


def test_pretrained_errors(tmp_path):
    model = build_model(ModelConfig(num_classes=3, backbone="mobilenetv2"))
    with pytest.raises(PPVIError, match="no such file"):
        load_pretrained(model, tmp_path / "absent.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(PPVIError, match="cannot be read"):
        load_pretrained(model, garbage)
    unrelated = tmp_path / "unrelated.pt"
    torch.save({"encoder.weight": torch.zeros(2)}, unrelated)
    with pytest.raises(PPVIError, match="no key matches"):
        load_pretrained(model, unrelated)
    import torchvision

    wrong = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong)
    resnet50 = build_model(ModelConfig(num_classes=3, backbone="resnet50", non_local=False))
    with pytest.raises(PPVIError, match="do not fit the resnet50 backbone"):
        load_pretrained(resnet50, wrong)
    assert load_pretrained(model, "none") is None


def test_pretrained_imagenet_offline_error(monkeypatch):
    from torchvision.models._api import WeightsEnum

    def offline(self, *args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    model = build_model(ModelConfig(num_classes=3, backbone="mobilenetv2"))
    with pytest.raises(PPVIError) as info:
        load_pretrained(model, "imagenet")
    message = str(info.value)
    assert "could not download the ImageNet weights for mobilenetv2" in message
    assert "no network?" in message and str(torch.hub.get_dir()) in message and "--pretrained PATH" in message
    assert "\n" not in message


def test_pretrained_imagenet_uses_the_torchvision_weights(monkeypatch):
    import torchvision
    from torchvision.models._api import WeightsEnum

    source = torchvision.models.mobilenet_v2(weights=None)
    seen = []

    def cached(self, *args, **kwargs):
        seen.append(str(self))
        return source.state_dict()

    monkeypatch.setattr(WeightsEnum, "get_state_dict", cached)
    model = build_model(ModelConfig(num_classes=3, backbone="mobilenetv2"))
    report = load_pretrained(model, "imagenet")
    assert seen == ["MobileNet_V2_Weights.IMAGENET1K_V1"]
    assert torch.equal(model.trunk[-1][0].weight, source.features[18][0].weight)
    assert report.unexpected == ["classifier.1.weight", "classifier.1.bias"] and report.missing == []
