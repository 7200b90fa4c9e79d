"""ReID checkpoints: weights + architecture + training arguments + version + checksum, in one file.

The file is a `torch.save`d dict of tensors and plain Python values only, so it loads with
`torch.load(weights_only=True)` (no arbitrary code runs when reading a checkpoint someone sent).
The SHA-256 covers every tensor of the state dict (name, dtype, shape, bytes, in sorted key order),
so a flipped bit in the weights is caught even where the zip container still reads.
"""

from __future__ import annotations

import hashlib
from dataclasses import fields
from enum import Enum
from pathlib import Path, PurePath

import torch
from torch import nn

from ppvi_cli import __version__
from ppvi_cli.atomic import atomic_open
from ppvi_cli.errors import PPVIError
from ppvi_cli.models.config import ModelConfig
from ppvi_cli.models.reid import ReIDModel, build_model

FORMAT = "ppvi-reid-checkpoint"
FORMAT_VERSION = 1


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """Hex SHA-256 of a state dict's tensors, independent of device, storage layout and dict order."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        # Reinterpreting as bytes also covers dtypes numpy lacks (bfloat16).
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _plain(value, where: str):
    """`value` as types `weights_only` loading accepts; Paths become strings, enums their values."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Enum):
        return _plain(value.value, where)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    raise TypeError(f"checkpoint {where} is a {type(value).__name__}; store plain values (str, number, list, dict)")


def describe_load_error(err: Exception) -> str:
    """A short reason for a failed `torch.load`, without torch's advice to drop `weights_only`."""
    text = str(err).strip()
    marker = "WeightsUnpickler error:"
    if marker in text:  # a damaged pickle or one holding objects beyond plain types
        detail = text.split(marker, 1)[1].strip().splitlines()[0]
        return f"unpickling refused: {detail}"
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first}"[:200]


def read_torch_file(path: str | Path, label: str, hint: str = "", map_location="cpu"):
    """`torch.load(path, weights_only=True)`, or one PPVIError `"{label}: cannot be read ...{hint}"`.

    Every ppvi file (checkpoints, resume states, pretrained weights) holds tensors and plain values
    only, so a pickle needing more is as unreadable as a truncated zip: one message covers both.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # zip, pickle and storage errors all mean the bytes are not what was asked for
        raise PPVIError(f"{label}: cannot be read (truncated or corrupt file?): {describe_load_error(err)}{hint}") \
            from err


def read_ppvi_file(path: str | Path, label: str, fmt: str, version: int, not_ours: str, missing: str = "",
                   map_location="cpu") -> dict:
    """A ppvi checkpoint file's payload after the checks every kind shares: the file exists, loads
    with `weights_only`, names format `fmt` and is at `version`. One PPVIError naming the file
    otherwise: `missing` and `not_ours` say what to pass instead (`"{label} {path}: ..."`)."""
    path = Path(path)
    if not path.is_file():
        raise PPVIError(f"{label} {path}: no such file{missing}")
    payload = read_torch_file(path, f"{label} {path}", map_location=map_location)
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise PPVIError(f"{label} {path}: {not_ours}")
    if payload.get("format_version") != version:
        raise PPVIError(f"{label} {path}: format version {payload.get('format_version')!r} (written by ppvi "
                        f"{payload.get('ppvi_version')}) is not {version}, which ppvi {__version__} reads")
    return payload


def save_checkpoint(path: str | Path, model: nn.Module, config: ModelConfig, train_args: dict,
                    extra: dict | None = None) -> str:
    """Write `model`'s checkpoint to `path` atomically (temp file + rename); returns its SHA-256.

    `train_args` are the training arguments (dumped for reproducibility); `extra` holds anything
    else plain (epoch, metrics). A DDP-wrapped model is unwrapped.
    """
    model = getattr(model, "module", model)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    checksum = state_dict_sha256(state)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ppvi_version": __version__,
        "model_config": config.to_dict(),
        "train_args": _plain(dict(train_args), "train_args"),
        "extra": _plain(dict(extra or {}), "extra"),
        "state_dict": state,
        "sha256": checksum,
    }
    with atomic_open(path, "wb") as fh:
        torch.save(payload, fh)
    return checksum


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[ReIDModel, ModelConfig, dict]:
    """Rebuild the model a checkpoint describes and load its verified weights (in eval mode).

    Returns `(model, config, meta)`, meta holding `train_args`, `extra`, `ppvi_version`,
    `format_version`, `sha256` and `path`. Raises PPVIError, one line naming the file, when the file
    is missing, unreadable (truncated, corrupt), not a ppvi checkpoint, fails its checksum, or holds
    weights that do not fit its own architecture.
    """
    path = Path(path)
    payload = read_ppvi_file(path, "checkpoint", FORMAT, FORMAT_VERSION, "not a ppvi ReID checkpoint (a raw state "
                             "dict? pass it with --pretrained PATH instead)", map_location=map_location)
    state = payload.get("state_dict")
    if not isinstance(state, dict) or state_dict_sha256(state) != payload.get("sha256"):
        raise PPVIError(f"checkpoint {path}: weights do not match their SHA-256 (file corrupted or edited); "
                        "re-copy or re-train it")
    config = _config(path, payload.get("model_config"))
    model = build_model(config)
    _check_fit(path, model, state)
    model.load_state_dict(state)
    model.to(map_location).eval()
    meta = {k: payload.get(k) for k in ("train_args", "extra", "ppvi_version", "format_version", "sha256")}
    meta["path"] = str(path)
    return model, config, meta


def _config(path: Path, stored) -> ModelConfig:
    if not isinstance(stored, dict):
        raise PPVIError(f"checkpoint {path}: no model config stored")
    unknown = sorted(set(stored) - {f.name for f in fields(ModelConfig)})
    if unknown:
        raise PPVIError(f"checkpoint {path}: model config has unknown fields {unknown} (written by a newer ppvi?)")
    try:
        return ModelConfig(**stored)
    except (PPVIError, TypeError) as err:
        raise PPVIError(f"checkpoint {path}: invalid model config: {err}") from err


def _check_fit(path: Path, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    problems = [f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong)) if keys]
    if problems:
        raise PPVIError(f"checkpoint {path}: weights do not fit its {model.config.backbone} config: "
                        + "; ".join(problems))
