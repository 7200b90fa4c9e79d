"""`--pretrained imagenet|PATH|none`: backbone weights from torchvision or a local state dict.

A torchvision state dict (`resnet50().state_dict()`, `mobilenet_v2().features.state_dict()`, with or
without the `features.` / DDP `module.` prefixes) maps onto the model's stem(s) and trunk by name; a
dual-stream model gets the same ImageNet stem in both streams. The non-local blocks and the BNNeck
head keep their initialisation; the ImageNet classifier (`fc.*`, `classifier.*`) is left unused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision

from ppvi_cli.errors import PPVIError
from ppvi_cli.models.checkpoint import read_torch_file
from ppvi_cli.models.reid import ReIDModel

_STRIPPED_PREFIXES = ("module.", "features.")


@dataclass
class PretrainedReport:
    """What `load_pretrained` did: loaded model keys and the keys it could not place."""

    source: str
    loaded: int
    missing: list[str] = field(default_factory=list)  # backbone keys left at their initialisation
    unexpected: list[str] = field(default_factory=list)  # source keys with no place in the model

    def to_dict(self) -> dict:
        return {"source": self.source, "loaded": self.loaded, "missing": self.missing, "unexpected": self.unexpected}


def load_pretrained(model: ReIDModel, spec: str | Path | None) -> PretrainedReport | None:
    """Copy pretrained backbone weights into `model` in place; `spec` is 'imagenet', a path, or None/'none'.

    Raises PPVIError when the weights cannot be had (offline download, unreadable file) or when the
    file is for another architecture (a shape mismatch, or not one key matching the model).
    """
    if spec is None or str(spec) == "none":
        return None
    if str(spec) == "imagenet":
        state, source = _imagenet_state_dict(model), "imagenet"
    else:
        state, source = _file_state_dict(Path(spec)), str(spec)
    return _copy_backbone(model, state, source)


def _imagenet_state_dict(model: ReIDModel) -> dict[str, torch.Tensor]:
    weights = torchvision.models.get_weight(model.config.spec.imagenet_weights)
    try:
        return weights.get_state_dict(progress=False)
    except OSError as err:  # URLError, timeouts and refused connections are all OSErrors
        raise PPVIError(
            f"could not download the ImageNet weights for {model.config.backbone} ({weights.url}): {err} "
            f"(no network?); torchvision caches them under {Path(torch.hub.get_dir()) / 'checkpoints'}, "
            "so put the file there, or pass --pretrained PATH to a local torchvision state dict"
        ) from err


def _file_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise PPVIError(f"--pretrained {path}: no such file (use 'imagenet', 'none' or a state-dict path)")
    state = read_torch_file(path, f"--pretrained {path}")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a ppvi checkpoint or a training framework's wrapper
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PPVIError(f"--pretrained {path}: expected a dict of tensors (a torchvision state_dict), "
                        f"got {type(state).__name__}")
    return state


def _targets(key: str, own: dict[str, torch.Tensor], streams: int) -> list[str]:
    """The model keys a source key fills: itself, its trunk twin, or its twin in every stem."""
    if key in own:
        return [key]
    for prefix in _STRIPPED_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    if f"trunk.{key}" in own:
        return [f"trunk.{key}"]
    return [f"stems.{i}.{key}" for i in range(streams) if f"stems.{i}.{key}" in own]


def _copy_backbone(model: ReIDModel, state: dict[str, torch.Tensor], source: str) -> PretrainedReport:
    own = {k: v for k, v in model.state_dict().items() if k.startswith(("stems.", "trunk."))}
    plan, unexpected, mismatched = [], [], []
    for key, tensor in state.items():
        targets = _targets(key, own, model.config.num_streams)
        if not targets:
            unexpected.append(key)
        for target in targets:
            if own[target].shape != tensor.shape:
                mismatched.append(f"{key} {tuple(tensor.shape)} vs {target} {tuple(own[target].shape)}")
            else:
                plan.append((target, tensor))
    if mismatched:
        raise PPVIError(f"--pretrained {source}: {len(mismatched)} tensors do not fit the "
                        f"{model.config.backbone} backbone (e.g. {'; '.join(mismatched[:3])}); "
                        "is it a state dict for another architecture?")
    if not plan:
        raise PPVIError(f"--pretrained {source}: no key matches the {model.config.backbone} backbone "
                        f"(first keys: {', '.join(list(state)[:3])}); expected torchvision names such as "
                        "conv1.weight (ResNet) or 0.0.weight / features.0.0.weight (MobileNetV2)")
    with torch.no_grad():
        for target, tensor in plan:
            own[target].copy_(tensor)
    loaded = {target for target, _ in plan}
    return PretrainedReport(source, len(loaded), sorted(set(own) - loaded), unexpected)
